"""Billing events: published to SNS (moto) and e-mailed after commit, recorded, never breaking processing."""

import json

import pytest

from conftest import AWS_TEST_REGION
from core.tests.support import sns_topic
from stripe_sync.models import BillingNotification
from stripe_sync.notifications import billing_notification_send
from stripe_sync.tests.webhook_support import onboarded_tenant
from stripe_sync.webhooks import webhook_event_process, webhook_event_receive
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def topic_queue(aws, settings):
    """The billing-events SNS topic with an SQS queue subscribed; returns its reader (SNS's envelopes)."""
    topic = sns_topic("billing-events", region=AWS_TEST_REGION)
    settings.BILLING_EVENTS_SNS_TOPIC_ARN = topic.arn
    return topic.messages


@pytest.fixture
def failed_payment(local_stripe, tenant):
    """A metered tenant whose invoice payment failed at Stripe; the stored (unprocessed) event."""
    from stripe_sync.tests.test_webhooks_handlers import _charge

    customer_id = onboarded_tenant(tenant, plan=Tenant.Plan.METERED)
    _charge(local_stripe, customer_id, card="charge_fails")
    payload = local_stripe.events("invoice.payment_failed")[-1]
    return webhook_event_receive(payload=payload, enqueue=False).event


def _process(event, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        return webhook_event_process(event_id=event.pk)


def test_billing_events_reach_an_sqs_queue_subscribed_to_the_topic(
    failed_payment, topic_queue, tenant, django_capture_on_commit_callbacks
):
    event = _process(failed_payment, django_capture_on_commit_callbacks)
    assert event.status == "processed"

    sent = {n.kind: n for n in BillingNotification.objects.all()}
    assert set(sent) == {"payment_failed", "plan_changed"}
    assert all(n.status == "sent" and n.sns_message_id for n in sent.values())
    envelopes = {e["MessageId"]: e for e in topic_queue()}
    assert set(envelopes) == {n.sns_message_id for n in sent.values()}

    plan = envelopes[sent["plan_changed"].sns_message_id]
    assert plan["Subject"] == f"Plan changed: {tenant.name} metered -> free"
    message = json.loads(plan["Message"])
    assert message["kind"] == "plan_changed"
    assert (message["old_plan"], message["new_plan"]) == ("metered", "free")
    assert message["tenant"]["slug"] == tenant.slug
    assert message["stripe_event"] == {"id": event.stripe_id, "type": "invoice.payment_failed"}
    assert plan["MessageAttributes"]["kind"]["Value"] == "plan_changed"


def test_billing_events_are_emailed_to_operators(
    failed_payment, settings, mailoutbox, django_capture_on_commit_callbacks
):
    settings.OPERATOR_EMAILS = ["ops@example.com", "billing@example.com"]
    _process(failed_payment, django_capture_on_commit_callbacks)
    subjects = sorted(m.subject for m in mailoutbox)
    assert subjects[0].startswith("[billing] Payment failed: ")
    assert subjects[1].startswith("[billing] Plan changed: ")
    assert mailoutbox[0].to == ["ops@example.com", "billing@example.com"]
    assert json.loads(mailoutbox[0].body)["kind"] in ("payment_failed", "plan_changed")
    for notification in BillingNotification.objects.all():
        assert (notification.status, notification.email_sent) == ("sent", True)
        assert notification.email_recipients == settings.OPERATOR_EMAILS


def test_nothing_is_sent_before_the_transaction_commits(failed_payment, settings, mailoutbox):
    settings.OPERATOR_EMAILS = ["ops@example.com"]
    webhook_event_process(event_id=failed_payment.pk)  # the test's transaction never commits
    assert mailoutbox == []
    assert set(BillingNotification.objects.values_list("status", flat=True)) == {"pending"}


def test_without_a_topic_or_operators_a_notification_is_marked_not_configured(
    failed_payment, django_capture_on_commit_callbacks
):
    _process(failed_payment, django_capture_on_commit_callbacks)
    assert set(BillingNotification.objects.values_list("status", flat=True)) == {"not_configured"}


def test_a_failed_publish_is_recorded_and_processing_goes_on(
    failed_payment, aws, settings, mailoutbox, django_capture_on_commit_callbacks
):
    settings.BILLING_EVENTS_SNS_TOPIC_ARN = f"arn:aws:sns:{AWS_TEST_REGION}:123456789012:no-such-topic"
    settings.OPERATOR_EMAILS = ["ops@example.com"]
    event = _process(failed_payment, django_capture_on_commit_callbacks)

    assert event.status == "processed"
    for notification in BillingNotification.objects.all():
        assert notification.status == "failed"
        assert notification.error.startswith("SNS: ")
        assert notification.email_sent  # the other channel still went out
    assert len(mailoutbox) == 2


def test_sending_a_failed_notification_again_repeats_only_the_failed_channel(
    failed_payment, topic_queue, settings, mailoutbox, django_capture_on_commit_callbacks
):
    good_topic = settings.BILLING_EVENTS_SNS_TOPIC_ARN
    settings.BILLING_EVENTS_SNS_TOPIC_ARN = good_topic + "-missing"
    settings.OPERATOR_EMAILS = ["ops@example.com"]
    _process(failed_payment, django_capture_on_commit_callbacks)
    notification = BillingNotification.objects.get(kind="plan_changed")
    assert notification.status == "failed"

    settings.BILLING_EVENTS_SNS_TOPIC_ARN = good_topic
    again = billing_notification_send(notification_id=notification.pk)

    assert (again.status, again.error, again.attempts) == ("sent", "", 2)
    assert [e["MessageId"] for e in topic_queue()] == [again.sns_message_id]
    assert len(mailoutbox) == 2  # one e-mail per notification, not repeated
    assert billing_notification_send(notification_id=notification.pk).attempts == 2  # sent: left alone
