"""Processing: each handler's effect on the tenant, at Stripe and in the audit trail; idempotency,
out-of-order deliveries, failures."""

import contextlib
from decimal import Decimal

import pytest
import stripe
from django.utils import timezone
from djstripe import models as djstripe_models

from metering.models import Meter
from stripe_sync.client import stripe_client
from stripe_sync.models import BillingNotification, TenantSubscription, UsageReport, WebhookEvent
from stripe_sync.tests.factories import UsageReportFactory
from stripe_sync.tests.webhook_support import deliver, onboarded_tenant
from stripe_sync.webhooks import webhook_event_process, webhook_event_receive
from tenants.models import Tenant, TenantChange

pytestmark = pytest.mark.django_db


@pytest.fixture
def deliver_event(client, django_capture_on_commit_callbacks):
    return lambda event: deliver(client, event, django_capture_on_commit_callbacks)


def _last_event(server, event_type: str) -> dict:
    return server.events(event_type)[-1]


def _plan_changes(tenant) -> list[tuple[str, str, str]]:
    return list(
        TenantChange.objects.filter(tenant=tenant, field="plan")
        .order_by("id")
        .values_list("old_value", "new_value", "source")
    )


def _live_subscriptions(customer_id: str) -> list[str]:
    subs = stripe_client().v1.subscriptions.list(params={"customer": customer_id, "status": "all"}).data
    return [sub.id for sub in subs if sub.status in ("active", "trialing")]


def _charge(server, customer_id: str, *, card: str) -> str:
    """An invoice of 15.00 USD charged to a new default card; returns the invoice id."""
    client = stripe_client()
    server.create_payment_method(customer_id, card=card, default=True)
    client.v1.invoice_items.create(params={"customer": customer_id, "amount": 1500, "currency": "usd"})
    invoice = client.v1.invoices.create(
        params={"customer": customer_id, "pending_invoice_items_behavior": "include"}
    )
    client.v1.invoices.finalize_invoice(invoice.id)
    with contextlib.suppress(stripe.CardError):  # "charge_fails": the invoice stays open
        client.v1.invoices.pay(invoice.id)
    return invoice.id


def _assert_moved_to_metered(tenant, customer_id: str, event: WebhookEvent):
    tenant.refresh_from_db()
    assert tenant.plan == Tenant.Plan.METERED
    assert _plan_changes(tenant) == [("free", "metered", event.stripe_id)]
    assert event.type in TenantChange.objects.get(tenant=tenant, field="plan").reason
    assert event.status == "processed"
    assert event.tenant == tenant
    [live] = _live_subscriptions(customer_id)
    assert TenantSubscription.objects.get(tenant=tenant).subscription_id == live


def test_payment_method_attached_moves_a_free_tenant_to_metered(local_stripe, tenant, deliver_event):
    customer_id = onboarded_tenant(tenant)
    assert _live_subscriptions(customer_id) == []
    local_stripe.create_payment_method(customer_id, default=True)
    event = deliver_event(_last_event(local_stripe, "payment_method.attached"))
    _assert_moved_to_metered(tenant, customer_id, event)
    assert djstripe_models.PaymentMethod.objects.filter(customer__id=customer_id).exists()
    assert "free -> metered" in event.result


def test_setup_intent_succeeded_moves_a_free_tenant_to_metered(local_stripe, tenant, deliver_event):
    customer_id = onboarded_tenant(tenant)
    pm = local_stripe.create_payment_method()
    stripe_client().v1.setup_intents.create(
        params={"customer": customer_id, "payment_method": pm["id"], "confirm": True}
    )
    event = deliver_event(_last_event(local_stripe, "setup_intent.succeeded"))
    _assert_moved_to_metered(tenant, customer_id, event)


def test_checkout_completed_moves_a_free_tenant_to_metered(local_stripe, tenant, deliver_event):
    customer_id = onboarded_tenant(tenant)
    session = stripe_client().v1.checkout.sessions.create(
        params={
            "mode": "setup",
            "customer": customer_id,
            "currency": "usd",
            "success_url": "http://localhost/done",
            "cancel_url": "http://localhost/cancel",
        }
    )
    local_stripe.complete_checkout_session(session.id)
    event = deliver_event(_last_event(local_stripe, "checkout.session.completed"))
    _assert_moved_to_metered(tenant, customer_id, event)
    assert djstripe_models.Session.objects.filter(id=session.id).exists()


def test_an_upgrade_event_for_a_metered_tenant_changes_no_plan_and_makes_no_second_subscription(
    local_stripe, tenant, deliver_event
):
    customer_id = onboarded_tenant(tenant, plan=Tenant.Plan.METERED)
    [existing] = _live_subscriptions(customer_id)
    local_stripe.create_payment_method(customer_id, default=True)
    event = deliver_event(_last_event(local_stripe, "payment_method.attached"))
    assert event.status == "processed"
    assert _plan_changes(tenant) == []
    assert _live_subscriptions(customer_id) == [existing]


def test_payment_failed_moves_the_tenant_to_free_and_cancels_its_subscription(
    local_stripe, tenant, deliver_event
):
    customer_id = onboarded_tenant(tenant, plan=Tenant.Plan.METERED)
    invoice_id = _charge(local_stripe, customer_id, card="charge_fails")
    event = deliver_event(_last_event(local_stripe, "invoice.payment_failed"))
    assert event.status == "processed", event.error
    tenant.refresh_from_db()
    assert tenant.plan == Tenant.Plan.FREE
    assert _plan_changes(tenant) == [("metered", "free", event.stripe_id)]
    assert _live_subscriptions(customer_id) == []
    assert djstripe_models.Invoice.objects.filter(id=invoice_id).exists()
    failed = BillingNotification.objects.get(kind="payment_failed")
    assert failed.payload["invoice"] == invoice_id
    assert failed.payload["amount_due"] == 1500


def test_payment_failed_for_an_invoice_paid_since_leaves_the_plan(local_stripe, tenant, deliver_event):
    customer_id = onboarded_tenant(tenant, plan=Tenant.Plan.METERED)
    invoice_id = _charge(local_stripe, customer_id, card="charge_fails")
    local_stripe.create_payment_method(customer_id, card="visa", default=True)
    stripe_client().v1.invoices.pay(invoice_id)
    event = deliver_event(_last_event(local_stripe, "invoice.payment_failed"))
    assert event.status == "processed"
    assert "is paid now" in event.result
    tenant.refresh_from_db()
    assert tenant.plan == Tenant.Plan.METERED
    assert len(_live_subscriptions(customer_id)) == 1


def test_invoice_paid_is_recorded_once_per_invoice(local_stripe, tenant, deliver_event):
    customer_id = onboarded_tenant(tenant, plan=Tenant.Plan.METERED)
    invoice_id = _charge(local_stripe, customer_id, card="visa")
    paid = deliver_event(_last_event(local_stripe, "invoice.paid"))
    succeeded = deliver_event(_last_event(local_stripe, "invoice.payment_succeeded"))
    assert (paid.status, succeeded.status) == ("processed", "processed")
    assert f"invoice {invoice_id} paid" in paid.result
    assert djstripe_models.Invoice.objects.get(id=invoice_id).stripe_data["status"] == "paid"
    [notification] = BillingNotification.objects.filter(kind="payment_succeeded")
    assert notification.payload["amount_paid"] == 1500
    assert notification.payload["tenant"]["slug"] == tenant.slug
    assert _plan_changes(tenant) == []


def test_subscription_events_follow_the_status_at_stripe_in_any_order(local_stripe, tenant, deliver_event):
    """deleted is delivered before created: both re-fetch the (canceled) subscription."""
    customer_id = onboarded_tenant(tenant, plan=Tenant.Plan.METERED)
    [sub_id] = _live_subscriptions(customer_id)
    stripe_client().v1.subscriptions.cancel(sub_id)
    created = _last_event(local_stripe, "customer.subscription.created")
    deleted = _last_event(local_stripe, "customer.subscription.deleted")

    first = deliver_event(deleted)
    second = deliver_event(created)

    assert (first.status, second.status) == ("processed", "processed")
    tenant.refresh_from_db()
    assert tenant.plan == Tenant.Plan.FREE
    assert _plan_changes(tenant) == [("metered", "free", deleted["id"])]
    assert "is canceled" in second.result
    assert djstripe_models.Subscription.objects.get(id=sub_id).stripe_data["status"] == "canceled"
    assert BillingNotification.objects.filter(kind="subscription_changed").count() == 2


def test_an_active_subscription_moves_a_free_tenant_to_metered(local_stripe, tenant, deliver_event):
    customer_id = onboarded_tenant(tenant, plan=Tenant.Plan.METERED)
    Tenant.objects.filter(pk=tenant.pk).update(plan=Tenant.Plan.FREE)  # out of step with Stripe
    event = deliver_event(_last_event(local_stripe, "customer.subscription.created"))
    tenant.refresh_from_db()
    assert tenant.plan == Tenant.Plan.METERED
    assert _plan_changes(tenant) == [("free", "metered", event.stripe_id)]
    mirrored = djstripe_models.Subscription.objects.get(customer__id=customer_id)
    # dj-stripe 2.11 reads the period at the top level; the pinned API version has it on items.
    assert mirrored.current_period_end is not None


def test_a_past_due_subscription_leaves_the_plan(local_stripe, tenant, deliver_event):
    customer_id = onboarded_tenant(tenant, plan=Tenant.Plan.METERED)
    local_stripe.create_payment_method(customer_id, card="charge_fails", default=True)
    [sub_id] = _live_subscriptions(customer_id)
    stripe_client().v1.billing.meter_events.create(
        params={"event_name": "api_calls", "payload": {"stripe_customer_id": customer_id, "value": "40"}}
    )
    local_stripe.advance_subscription(sub_id)  # the usage is invoiced, the card is declined
    assert stripe_client().v1.subscriptions.retrieve(sub_id).status == "past_due"
    event = deliver_event(_last_event(local_stripe, "customer.subscription.updated"))
    assert event.status == "processed"
    assert "while the subscription is past_due" in event.result
    tenant.refresh_from_db()
    assert tenant.plan == Tenant.Plan.METERED


def test_a_late_upgrade_event_does_not_undo_a_newer_payment_failure(local_stripe, tenant, deliver_event):
    customer_id = onboarded_tenant(tenant, plan=Tenant.Plan.METERED)
    _charge(local_stripe, customer_id, card="charge_fails")
    attached = _last_event(local_stripe, "payment_method.attached")
    failed = _last_event(local_stripe, "invoice.payment_failed")
    attached["created"] = failed["created"] - 10  # Stripe's clock: the card came first

    assert deliver_event(failed).status == "processed"
    late = deliver_event(attached)

    assert late.status == "processed"
    assert f"newer invoice.payment_failed {failed['id']}" in late.result
    tenant.refresh_from_db()
    assert tenant.plan == Tenant.Plan.FREE
    assert _live_subscriptions(customer_id) == []


def test_processing_twice_changes_nothing_more(local_stripe, tenant, deliver_event):
    customer_id = onboarded_tenant(tenant)
    local_stripe.create_payment_method(customer_id, default=True)
    event = deliver_event(_last_event(local_stripe, "payment_method.attached"))
    calls = len(local_stripe.requests)
    again = webhook_event_process(event_id=event.pk)
    assert (again.status, again.attempts) == ("processed", 1)
    assert len(local_stripe.requests) == calls  # skipped before any Stripe call
    assert len(_plan_changes(tenant)) == 1


def test_an_unknown_event_type_is_stored_and_ignored(local_stripe, tenant, deliver_event):
    customer = stripe_client().v1.customers.create(params={"name": "Someone"})
    calls = len(local_stripe.requests)
    event = deliver_event(local_stripe.build_event("customer.created", customer.id))
    assert event.status == "ignored"
    assert "no handler" in event.result
    assert len(local_stripe.requests) == calls


def test_an_event_for_a_customer_of_no_tenant_is_ignored(local_stripe, deliver_event):
    customer = stripe_client().v1.customers.create(params={"name": "Not a tenant"})
    local_stripe.create_payment_method(customer.id)
    event = deliver_event(_last_event(local_stripe, "payment_method.attached"))
    assert event.status == "ignored"
    assert f"no tenant for customer {customer.id}" in event.result


@pytest.mark.parametrize("tenant_id", ["\u00b2", "12a", "9" * 400, "-1", "99999999999999999999"])
def test_a_customer_whose_tenant_id_metadata_is_not_a_tenant_id_is_ignored(
    local_stripe, deliver_event, tenant_id
):
    customer = stripe_client().v1.customers.create(params={"metadata": {"tenant_id": tenant_id}})
    local_stripe.create_payment_method(customer.id)
    event = deliver_event(_last_event(local_stripe, "payment_method.attached"))
    assert event.status == "ignored"
    assert f"no tenant for customer {customer.id}" in event.result


def test_a_tenant_is_found_by_customer_metadata_and_linked(local_stripe, tenant, deliver_event):
    meter_customer_id = onboarded_tenant(tenant)  # meters and prices at Stripe
    Tenant.objects.filter(pk=tenant.pk).update(stripe_customer=None)
    stripe_client().v1.customers.delete(meter_customer_id)
    customer = stripe_client().v1.customers.create(params={"metadata": {"tenant_id": str(tenant.pk)}})
    local_stripe.create_payment_method(customer.id, default=True)
    event = deliver_event(_last_event(local_stripe, "payment_method.attached"))
    assert event.status == "processed", event.error
    tenant.refresh_from_db()
    assert tenant.stripe_customer.id == customer.id
    assert tenant.plan == Tenant.Plan.METERED


def test_a_stripe_failure_marks_the_event_failed_and_a_retry_processes_it(local_stripe, tenant, client):
    customer_id = onboarded_tenant(tenant)
    local_stripe.create_payment_method(customer_id, default=True)
    payload = _last_event(local_stripe, "payment_method.attached")
    stored = webhook_event_receive(payload=payload, enqueue=False).event
    local_stripe.fail_next(3, status=500, path=f"/v1/payment_methods/{payload['data']['object']['id']}")
    with pytest.raises(stripe.APIError):
        webhook_event_process(event_id=stored.pk)
    stored.refresh_from_db()
    assert (stored.status, stored.attempts) == ("failed", 1)
    assert "APIError" in stored.error
    tenant.refresh_from_db()
    assert tenant.plan == Tenant.Plan.FREE

    webhook_event_process(event_id=stored.pk)  # the task's retry
    stored.refresh_from_db()
    assert (stored.status, stored.attempts, stored.error) == ("processed", 2, "")
    tenant.refresh_from_db()
    assert tenant.plan == Tenant.Plan.METERED


def test_a_meter_error_report_marks_the_usage_reports_it_names(local_stripe, tenant):
    customer_id = onboarded_tenant(tenant, plan=Tenant.Plan.METERED)
    meter = Meter.objects.get(code="api_calls")
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    report = UsageReportFactory(
        tenant=tenant,
        meter=meter,
        hour=now,
        revision=1,
        identifier="t1-m1-r1",
        quantity=Decimal(1),
        value=1,
        customer_id="cus_gone",
        event_name="api_calls",
        timestamp=now,
        status=UsageReport.Status.SENT,
    )
    local_stripe.configure(v1_meter_event_validation="async")
    stripe_client().v1.billing.meter_events.create(  # accepted now, refused later, as Stripe does
        params={
            "event_name": "api_calls",
            "identifier": "t1-m1-r1",
            "payload": {"stripe_customer_id": "cus_gone", "value": "1"},
        }
    )
    [error_report] = local_stripe.v2_events("v1.billing.meter.error_report_triggered")
    thin = {key: value for key, value in error_report.items() if key != "data"}  # as Stripe delivers it
    stored = webhook_event_receive(payload=thin, enqueue=False).event
    assert stored.thin
    assert customer_id

    event = webhook_event_process(event_id=stored.pk)

    assert event.status == "processed", event.error
    assert "1 usage report(s) marked failed" in event.result
    report.refresh_from_db()
    assert report.status == UsageReport.Status.FAILED
    assert report.error_code == "meter_event_customer_not_found"
    assert error_report["id"] in report.error_message
