"""Stripe events become outgoing webhook events: payment.* (from invoices and payment intents) and
subscription.* (created, updated, canceled vs expired), one message each, never twice on a replay,
none when the processing rolls back; the SNS/e-mail billing notifications go on as before."""

import pytest
import stripe

from outbound.models import WebhookMessage
from stripe_sync.client import stripe_client
from stripe_sync.events import subscription_end_kind
from stripe_sync.models import BillingNotification, WebhookEvent
from stripe_sync.tests.test_webhooks_handlers import _charge, _last_event, _live_subscriptions
from stripe_sync.tests.webhook_support import deliver, onboarded_tenant
from stripe_sync.webhooks import webhook_event_process, webhook_event_receive, webhook_event_replay
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def deliver_event(client, django_capture_on_commit_callbacks):
    return lambda event: deliver(client, event, django_capture_on_commit_callbacks)


def _types() -> list[str]:
    return list(WebhookMessage.objects.order_by("id").values_list("type", flat=True))


def _message(type_: str) -> WebhookMessage:
    [message] = WebhookMessage.objects.filter(type=type_)
    return message


def _onboarded(tenant, **kwargs) -> str:
    customer_id = onboarded_tenant(tenant, **kwargs)
    WebhookMessage.objects.all().delete()  # onboarding's own tenant events are tested elsewhere
    return customer_id


def test_a_paid_invoice_is_one_payment_succeeded_with_its_amount_and_tenant(
    local_stripe, tenant, deliver_event
):
    customer_id = _onboarded(tenant, plan=Tenant.Plan.METERED)
    invoice_id = _charge(local_stripe, customer_id, card="visa")
    paid = deliver_event(_last_event(local_stripe, "invoice.paid"))
    deliver_event(_last_event(local_stripe, "invoice.payment_succeeded"))

    message = _message("payment.succeeded")
    assert message.key == f"payment.succeeded:invoice:{invoice_id}"
    data = message.payload["data"]
    assert data["tenant"]["slug"] == tenant.slug
    assert data["tenant"]["id"] == tenant.pk
    payment = data["payment"]
    assert (payment["source"], payment["invoice"], payment["amount"], payment["currency"]) == (
        "invoice",
        invoice_id,
        1500,
        "usd",
    )
    assert data["stripe_event"] == {"id": paid.stripe_id, "type": "invoice.paid"}
    assert _types() == ["payment.succeeded"]
    # The SNS/e-mail notification is unchanged: one per invoice.
    assert BillingNotification.objects.filter(kind="payment_succeeded").count() == 1


def test_a_replayed_event_publishes_nothing_twice(local_stripe, tenant, deliver_event):
    customer_id = _onboarded(tenant, plan=Tenant.Plan.METERED)
    _charge(local_stripe, customer_id, card="visa")
    stored = deliver_event(_last_event(local_stripe, "invoice.paid"))
    webhook_event_replay(event=stored)
    webhook_event_process(event_id=stored.pk)
    stored.refresh_from_db()
    assert stored.status == "processed"
    assert _types() == ["payment.succeeded"]


def test_a_failed_invoice_payment_is_payment_failed_then_plan_changed_and_the_end_is_expired(
    local_stripe, tenant, deliver_event
):
    customer_id = _onboarded(tenant, plan=Tenant.Plan.METERED)
    [sub_id] = _live_subscriptions(customer_id)
    invoice_id = _charge(local_stripe, customer_id, card="charge_fails")
    failed = deliver_event(_last_event(local_stripe, "invoice.payment_failed"))
    assert failed.status == "processed", failed.error

    assert _types() == ["payment.failed", "tenant.plan_changed"]
    payment = _message("payment.failed").payload["data"]["payment"]
    assert (payment["invoice"], payment["amount_due"], payment["status"]) == (invoice_id, 1500, "open")
    assert _message("payment.failed").key == f"payment.failed:{failed.stripe_id}"
    plan = _message("tenant.plan_changed").payload["data"]
    assert (plan["old_plan"], plan["new_plan"], plan["source"]) == ("metered", "free", failed.stripe_id)

    # The platform canceled the subscription for non-payment: Stripe's deletion is an expiry.
    deliver_event(_last_event(local_stripe, "customer.subscription.deleted"))
    ended = _message("subscription.expired").payload["data"]
    assert (ended["subscription"]["id"], ended["subscription"]["status"], ended["reason"]) == (
        sub_id,
        "canceled",
        "payment_failed",
    )
    assert not WebhookMessage.objects.filter(type="subscription.canceled").exists()


def test_a_processing_that_rolls_back_publishes_nothing(local_stripe, tenant):
    customer_id = _onboarded(tenant, plan=Tenant.Plan.METERED)
    [sub_id] = _live_subscriptions(customer_id)
    _charge(local_stripe, customer_id, card="charge_fails")
    stored = webhook_event_receive(
        payload=_last_event(local_stripe, "invoice.payment_failed"), enqueue=False
    ).event
    # Canceling the subscription fails after payment.failed and the plan change were published.
    local_stripe.fail_next(3, status=500, path=f"/v1/subscriptions/{sub_id}", method="DELETE")
    with pytest.raises(stripe.APIError):
        webhook_event_process(event_id=stored.pk)
    assert WebhookEvent.objects.get(pk=stored.pk).status == "failed"
    assert _types() == []

    webhook_event_process(event_id=stored.pk)  # the retry
    assert _types() == ["payment.failed", "tenant.plan_changed"]


def test_an_invoice_needing_the_customers_action_is_payment_action_required(
    local_stripe, tenant, deliver_event
):
    customer_id = _onboarded(tenant, plan=Tenant.Plan.METERED)
    invoice_id = _charge(local_stripe, customer_id, card="charge_fails")  # stays open
    event = deliver_event(local_stripe.build_event("invoice.payment_action_required", invoice_id))
    assert event.status == "processed", event.error
    message = _message("payment.action_required")
    assert message.key == f"payment.action_required:{event.stripe_id}"
    assert message.payload["data"]["payment"]["invoice"] == invoice_id
    assert _types() == ["payment.action_required"]


@pytest.mark.parametrize(
    ("status", "stripe_type", "kind"),
    [
        ("succeeded", "payment_intent.succeeded", "payment.succeeded"),
        ("requires_payment_method", "payment_intent.payment_failed", "payment.failed"),
        ("requires_action", "payment_intent.requires_action", "payment.action_required"),
    ],
)
def test_payment_intent_events_are_payment_events(
    local_stripe, tenant, deliver_event, status, stripe_type, kind
):
    customer_id = _onboarded(tenant)
    intent = local_stripe.create_payment_intent(customer_id, amount=2500, currency="eur", status=status)
    event = deliver_event(_last_event(local_stripe, stripe_type))
    assert event.status == "processed", event.error
    assert event.tenant == tenant

    message = _message(kind)
    payment = message.payload["data"]["payment"]
    assert (payment["source"], payment["payment_intent"], payment["amount"], payment["currency"]) == (
        "payment_intent",
        intent["id"],
        2500,
        "eur",
    )
    assert (payment["failure"] is not None) == (kind == "payment.failed")
    assert message.payload["data"]["tenant"]["slug"] == tenant.slug
    assert _types() == [kind]
    # Replayed: nothing more.
    webhook_event_replay(event=event)
    webhook_event_process(event_id=event.pk)
    assert _types() == [kind]


def test_payment_intent_events_go_to_sns_and_email_as_invoice_payments_do(
    local_stripe, tenant, deliver_event
):
    customer_id = _onboarded(tenant)
    intent = local_stripe.create_payment_intent(customer_id, amount=900, status="requires_payment_method")
    deliver_event(_last_event(local_stripe, "payment_intent.payment_failed"))
    [notification] = BillingNotification.objects.filter(kind="payment_failed")
    assert notification.payload["payment_intent"] == intent["id"]
    assert notification.payload["amount"] == 900


def test_a_payment_intent_that_moved_on_publishes_nothing_stale(local_stripe, tenant, deliver_event):
    customer_id = _onboarded(tenant)
    intent = local_stripe.create_payment_intent(customer_id, amount=900, status="succeeded")
    stale = local_stripe.build_event(
        "payment_intent.requires_action", {**intent, "status": "requires_action"}
    )
    event = deliver_event(stale)
    assert "succeeded at Stripe now" in event.result
    assert _types() == []


def test_an_event_for_a_customer_of_no_tenant_publishes_nothing(local_stripe, deliver_event):
    customer = stripe_client().v1.customers.create(params={"email": "stranger@example.com"})
    local_stripe.create_payment_intent(customer.id, amount=100)
    event = deliver_event(_last_event(local_stripe, "payment_intent.succeeded"))
    assert event.status == "ignored"
    assert _types() == []


def test_a_subscription_canceled_by_the_customer_is_canceled(local_stripe, tenant, deliver_event):
    customer_id = _onboarded(tenant, plan=Tenant.Plan.METERED)
    [sub_id] = _live_subscriptions(customer_id)
    created = deliver_event(_last_event(local_stripe, "customer.subscription.created"))
    stripe_client().v1.subscriptions.cancel(sub_id)
    deleted = _last_event(local_stripe, "customer.subscription.deleted")
    deliver_event(deleted)
    deliver_event(deleted | {"id": "evt_second_delivery_of_the_end"})  # one end per subscription

    assert _types() == ["subscription.created", "subscription.canceled", "tenant.plan_changed"]
    assert _message("subscription.created").key == f"subscription.created:{sub_id}"
    assert _message("subscription.created").payload["data"]["stripe_event"]["id"] == created.stripe_id
    data = _message("subscription.canceled").payload["data"]
    assert data["reason"] == "cancellation_requested"
    sub = data["subscription"]
    assert (sub["id"], sub["status"], sub["cancel_at_period_end"]) == (sub_id, "canceled", False)
    assert sub["canceled_at"].endswith("Z")
    assert sub["ended_at"] == sub["canceled_at"]


def test_a_subscription_update_is_subscription_updated_once_per_stripe_event(
    local_stripe, tenant, deliver_event
):
    customer_id = _onboarded(tenant, plan=Tenant.Plan.METERED)
    [sub_id] = _live_subscriptions(customer_id)
    stripe_client().v1.subscriptions.update(sub_id, params={"cancel_at_period_end": True})
    updated = _last_event(local_stripe, "customer.subscription.updated")
    deliver_event(updated)
    deliver_event(updated)  # Stripe's retry of the same event

    message = _message("subscription.updated")
    assert message.key == f"subscription.updated:{updated['id']}"
    assert message.payload["data"]["subscription"]["cancel_at_period_end"] is True
    assert message.payload["data"]["reason"] is None
    assert _types() == ["subscription.updated"]


PERIOD_END = 1_767_225_600  # 2026-01-01T00:00:00Z


def _sub(**fields) -> dict:
    base = {
        "id": "sub_test",
        "status": "canceled",
        "cancellation_details": {"reason": None},
        "cancel_at": None,
        "ended_at": PERIOD_END - 3600,
        "items": {"data": [{"current_period_end": PERIOD_END}]},
    }
    return base | fields


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"cancellation_details": {"reason": "cancellation_requested"}},
            ("canceled", "cancellation_requested"),
        ),
        (
            {"cancellation_details": {"reason": "cancellation_requested"}, "ended_at": PERIOD_END},
            ("canceled", "cancellation_requested"),
        ),
        ({"cancellation_details": {"reason": "payment_failed"}}, ("expired", "payment_failed")),
        ({"cancellation_details": {"reason": "payment_disputed"}}, ("expired", "payment_disputed")),
        ({"status": "incomplete_expired"}, ("expired", "incomplete_expired")),
        ({"status": "unpaid"}, ("expired", "unpaid")),
        ({"ended_at": PERIOD_END}, ("expired", "period_end")),
        ({"cancel_at": PERIOD_END - 7200, "ended_at": PERIOD_END - 7200}, ("expired", "period_end")),
        ({}, ("canceled", "canceled")),  # ended early without a reason: someone canceled it
    ],
)
def test_canceled_vs_expired(fields, expected):
    kind, reason = subscription_end_kind(_sub(**fields))
    assert (kind, reason) == (f"subscription.{expected[0]}", expected[1])
