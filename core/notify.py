"""The one notifier: SNS messages and operator e-mail, their text rendered from templates.

An e-mail is a template name and a context (as in healthchecks' hc/lib/emails.py):
`emails/<name>-subject.txt` and `emails/<name>-body-text.txt` (and, when it exists,
`emails/<name>-body-html.html`), found in any app's templates/. Text templates render without HTML
escaping; the subject is one line, the text body ends without a line break.

SNS: `sns_publish` sends one message through core.aws's client (its timeouts and retries); callers
that may wait longer wrap it in `core.aws.aws_call`. Subjects go through `sns_subject` (SNS's rules).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.core.mail import EmailMultiAlternatives
from django.template import Context, TemplateDoesNotExist
from django.template.loader import get_template, render_to_string

from core.aws import aws_client, topic_region

SNS_SUBJECT_MAX_CHARS = 100  # SNS's limit for e-mail subscriptions' subject


def sns_subject(text: str) -> str:
    """An SNS subject: ASCII, no line breaks, at most 100 characters."""
    clean = " ".join(text.encode("ascii", "replace").decode().split())
    return clean[:SNS_SUBJECT_MAX_CHARS]


def sns_publish(*, topic_arn: str, subject: str, message: str, attributes: dict[str, str] | None = None):
    """Publish one message to `topic_arn` (in the topic's region); returns SNS's message id."""
    extra = (
        {"MessageAttributes": {k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()}}
        if attributes
        else {}
    )
    client = aws_client("sns", region=topic_region(topic_arn))
    answer = client.publish(TopicArn=topic_arn, Subject=subject, Message=message, **extra)
    return answer["MessageId"]


@dataclass(frozen=True)
class Email:
    subject: str
    text: str
    html: str | None = None


def _render_text(template_name: str, context: dict) -> str:
    # The Django engine's own template, rendered with autoescape off: plain text, not HTML.
    return get_template(template_name).template.render(Context(context, autoescape=False))


def email_render(name: str, context: dict) -> Email:
    """The subject (one line), text body and optional HTML body of the e-mail `name`."""
    subject = " ".join(_render_text(f"emails/{name}-subject.txt", context).split())
    text = _render_text(f"emails/{name}-body-text.txt", context).rstrip("\n")
    try:
        html = render_to_string(f"emails/{name}-body-html.html", context)
    except TemplateDoesNotExist:
        html = None
    return Email(subject=subject, text=text, html=html)


def email_deliver(
    email: Email,
    to: Iterable[str],
    *,
    from_email: str | None = None,
    attachments: Iterable[tuple[str, str, str]] = (),
) -> Email:
    """Send `email` to `to` (from DEFAULT_FROM_EMAIL unless `from_email`), with `attachments` as
    (filename, content, mimetype). Returns it."""
    message = EmailMultiAlternatives(email.subject, email.text, from_email, list(to))
    if email.html is not None:
        message.attach_alternative(email.html, "text/html")
    for filename, content, mimetype in attachments:
        message.attach(filename, content, mimetype)
    message.send()
    return email


def email_send(name: str, context: dict, to: Iterable[str], **options) -> Email:
    """Render the e-mail `name` with `context` and send it to `to` (options: email_deliver's)."""
    return email_deliver(email_render(name, context), to, **options)
