"""Billing events for the outside world: an SNS topic (BILLING_EVENTS_SNS_TOPIC_ARN) and operators'
e-mail (OPERATOR_EMAILS).

A notification is a row written in the transaction that decided it (so a rolled-back webhook
sends nothing) and sent after that transaction commits. Sending never raises: a failure is kept
on the row (status failed, the error) for an operator to see and send again from admin.
"""

from __future__ import annotations

import json
import logging
from functools import partial

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from core.notify import email_send, sns_publish, sns_subject
from stripe_sync.models import BillingNotification, WebhookEvent
from tenants.models import Tenant

logger = logging.getLogger(__name__)

MESSAGE_SCHEMA_VERSION = 1


def billing_notification_record(
    *,
    kind: str,
    key: str,
    tenant: Tenant | None,
    webhook_event: WebhookEvent | None,
    subject: str,
    details: dict,
) -> BillingNotification | None:
    """Record a billing event once per `key` and send it after the current transaction commits.

    Returns None when a notification with this key exists already (a replay, or `invoice.paid`
    and `invoice.payment_succeeded` for one payment).
    """
    payload = {
        "version": MESSAGE_SCHEMA_VERSION,
        "kind": kind,
        "occurred_at": timezone.now(),
        "tenant": {"id": tenant.pk, "slug": tenant.slug, "name": tenant.name, "plan": tenant.plan}
        if tenant
        else None,
        "stripe_event": {"id": webhook_event.stripe_id, "type": webhook_event.type}
        if webhook_event
        else None,
        **details,
    }
    try:
        with transaction.atomic():
            notification = BillingNotification.objects.create(
                key=key[:255],
                kind=kind,
                tenant=tenant,
                webhook_event=webhook_event,
                subject=sns_subject(subject),
                payload=json.loads(json.dumps(payload, cls=DjangoJSONEncoder)),
            )
    except IntegrityError:
        return None
    transaction.on_commit(partial(billing_notification_send, notification_id=notification.pk), robust=True)
    return notification


def billing_notification_send(*, notification_id: int) -> BillingNotification | None:
    """Publish and e-mail one pending or failed notification; never raises.

    A channel that already succeeded (an SNS message id, `email_sent`) is not repeated when a
    failed notification is sent again.
    """
    claimed = BillingNotification.objects.filter(
        pk=notification_id, status__in=[BillingNotification.Status.PENDING, BillingNotification.Status.FAILED]
    ).update(attempts=F("attempts") + 1)
    notification = BillingNotification.objects.filter(pk=notification_id).first()
    if not claimed or notification is None:
        return notification
    topic = settings.BILLING_EVENTS_SNS_TOPIC_ARN
    recipients = list(settings.OPERATOR_EMAILS)
    errors = []
    message = json.dumps(notification.payload, sort_keys=True)
    if topic and not notification.sns_message_id:
        notification.sns_topic_arn = topic
        try:
            notification.sns_message_id = sns_publish(
                topic_arn=topic,
                subject=notification.subject,
                message=message,
                attributes={"kind": notification.kind},
            )
        except Exception as exc:  # noqa: BLE001 - any failure is recorded; webhooks must go on
            errors.append(f"SNS: {type(exc).__name__}: {exc}")
    if recipients and not notification.email_sent:
        notification.email_recipients = recipients
        try:
            email_send(
                "billing-event",
                {
                    "subject": notification.subject,
                    "payload_json": json.dumps(notification.payload, indent=2, sort_keys=True),
                },
                recipients,
            )
            notification.email_sent = True
        except Exception as exc:  # noqa: BLE001 - SMTP, DNS, timeouts: recorded, never raised
            errors.append(f"e-mail: {type(exc).__name__}: {exc}")
    if errors:
        notification.status = BillingNotification.Status.FAILED
        notification.error = "\n".join(errors)
        logger.warning("billing notification %s not sent: %s", notification.pk, notification.error)
    elif not topic and not recipients:
        notification.status = BillingNotification.Status.NOT_CONFIGURED
        notification.error = ""
    else:
        notification.status = BillingNotification.Status.SENT
        notification.error = ""
        notification.sent_at = timezone.now()
    notification.save(
        update_fields=[
            "status",
            "error",
            "sent_at",
            "sns_topic_arn",
            "sns_message_id",
            "email_recipients",
            "email_sent",
        ]
    )
    return notification
