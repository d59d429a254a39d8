"""The one notifier: e-mail rendered from templates, SNS through the one boto3 client factory."""

import pytest
from django.core import mail

from conftest import AWS_TEST_REGION
from core.aws import aws_client
from core.notify import Email, email_deliver, email_render, email_send, sns_publish, sns_subject
from core.tests.support import sns_topic


@pytest.fixture
def email_templates(tmp_path, settings):
    """A `greeting` e-mail (subject, text and HTML bodies) and a `plain` one (no HTML body)."""
    emails = tmp_path / "emails"
    emails.mkdir()
    (emails / "greeting-subject.txt").write_text("Hello {{ name }},\n  {{ count }} new\n")
    (emails / "greeting-body-text.txt").write_text(
        "Dear {{ name }},\n{% for item in items %}  - {{ item }}\n{% endfor %}Bye.\n"
    )
    (emails / "greeting-body-html.html").write_text("<p>Dear {{ name }}</p>\n")
    (emails / "plain-subject.txt").write_text("Plain {{ name }}\n")
    (emails / "plain-body-text.txt").write_text("Only text for {{ name }}.\n")
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path, *settings.TEMPLATES[0]["DIRS"]]}]
    return emails


def test_an_email_is_rendered_from_its_templates_text_unescaped_and_html_escaped(email_templates):
    email = email_render("greeting", {"name": "Ops & <Co>", "count": 2, "items": ["a < b", "c"]})

    assert email.subject == "Hello Ops & <Co>, 2 new"
    assert email.text == "Dear Ops & <Co>,\n  - a < b\n  - c\nBye."
    assert email.html == "<p>Dear Ops &amp; &lt;Co&gt;</p>\n"


def test_sending_delivers_subject_text_html_and_attachments_to_the_recipients(email_templates):
    email_send(
        "greeting",
        {"name": "Ops", "count": 1, "items": []},
        ["ops@example.com"],
        attachments=[("report.csv", "a,b\n", "text/csv")],
    )

    (sent,) = mail.outbox
    assert (sent.subject, sent.body, sent.to) == ("Hello Ops, 1 new", "Dear Ops,\nBye.", ["ops@example.com"])
    assert sent.alternatives[0][0] == "<p>Dear Ops</p>\n"
    assert sent.attachments[0][:2] == ("report.csv", "a,b\n")


def test_an_email_without_an_html_template_is_text_only(email_templates):
    email_send("plain", {"name": "Ops"}, ["ops@example.com"])

    (sent,) = mail.outbox
    assert (sent.subject, sent.body, sent.alternatives) == ("Plain Ops", "Only text for Ops.", [])


def test_a_rendered_email_can_be_delivered_again_as_it_is(email_templates):
    email_deliver(
        Email(subject="Stored subject", text="Stored text"), ["a@example.com"], from_email="x@example.com"
    )

    (sent,) = mail.outbox
    assert (sent.subject, sent.body, sent.from_email) == ("Stored subject", "Stored text", "x@example.com")


def test_an_sns_subject_is_one_ascii_line_of_at_most_100_characters():
    assert sns_subject("Café budget\nover  limit") == "Caf? budget over limit"
    assert len(sns_subject("x" * 300)) == 100


def test_aws_clients_share_one_timeout_and_retry_configuration_and_the_environment_endpoint(aws):
    for service in ("s3", "sns", "ce"):
        client = aws_client(service)
        assert client.meta.config.connect_timeout == 5
        assert client.meta.config.read_timeout == 20
        assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 3}
        assert client.meta.endpoint_url == aws


def test_a_message_published_to_sns_reaches_the_topic_with_its_subject_and_attributes(aws):
    topic = sns_topic("notify-test", region=AWS_TEST_REGION)

    message_id = sns_publish(topic_arn=topic.arn, subject="Over", message="body", attributes={"kind": "k"})

    (envelope,) = topic.messages()
    assert (envelope["MessageId"], envelope["Subject"]) == (message_id, "Over")
    assert envelope["Message"] == "body"
    assert envelope["MessageAttributes"]["kind"]["Value"] == "k"
