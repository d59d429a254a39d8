"""Seed 003: a card attached or a payment failed (Stripe's webhooks) moves the tenant's API Gateway key
between the usage plans (moto over HTTP), after the handler's change commits."""

import contextlib

import pytest
import stripe

from apigateway.tests.support import eager_celery, usage_plans_start
from stripe_sync.client import stripe_client
from stripe_sync.tests.webhook_support import deliver, onboarded_tenant
from tenants.models import Tenant, TenantChange

pytestmark = pytest.mark.django_db


@pytest.fixture
def usage_plans(aws, aws_proxy, monkeypatch, settings):
    with eager_celery():
        yield usage_plans_start(aws_proxy=aws_proxy, monkeypatch=monkeypatch, settings=settings)


@pytest.fixture
def deliver_and_place(client, django_capture_on_commit_callbacks):
    """Deliver the event and process it as the worker would, then run what that queued after commit."""

    def run(event):
        with django_capture_on_commit_callbacks(execute=True):
            return deliver(client, event, django_capture_on_commit_callbacks)

    return run


def _keyed(tenant, usage_plans, plan) -> str:
    key = usage_plans.key()
    Tenant.objects.filter(pk=tenant.pk).update(apigateway_key_id=key)
    usage_plans.put(key, usage_plans.free if plan == Tenant.Plan.FREE else usage_plans.metered)
    tenant.refresh_from_db()
    return key


def test_a_card_attached_moves_the_key_to_the_metered_usage_plan(
    local_stripe, usage_plans, tenant, deliver_and_place
):
    customer_id = onboarded_tenant(tenant)
    key = _keyed(tenant, usage_plans, Tenant.Plan.FREE)
    local_stripe.create_payment_method(customer_id, default=True)

    event = deliver_and_place(local_stripe.events("payment_method.attached")[-1])

    assert event.status == "processed", event.error
    assert usage_plans.plans_of(key) == {usage_plans.metered}
    moves = TenantChange.objects.filter(tenant=tenant, field="usage_plan").order_by("id")
    assert [(m.old_value, m.new_value, m.source) for m in moves] == [
        (f"usage plan {usage_plans.free} (free)", "", "apigateway"),
        ("", f"usage plan {usage_plans.metered} (metered)", "apigateway"),
    ]


def test_a_failed_payment_moves_the_key_back_to_the_free_usage_plan(
    local_stripe, usage_plans, tenant, deliver_and_place
):
    customer_id = onboarded_tenant(tenant, plan=Tenant.Plan.METERED)
    key = _keyed(tenant, usage_plans, Tenant.Plan.METERED)
    client = stripe_client()
    local_stripe.create_payment_method(customer_id, card="charge_fails", default=True)
    client.v1.invoice_items.create(params={"customer": customer_id, "amount": 1500, "currency": "usd"})
    invoice = client.v1.invoices.create(
        params={"customer": customer_id, "pending_invoice_items_behavior": "include"}
    )
    client.v1.invoices.finalize_invoice(invoice.id)
    with contextlib.suppress(stripe.CardError):
        client.v1.invoices.pay(invoice.id)

    event = deliver_and_place(local_stripe.events("invoice.payment_failed")[-1])

    assert event.status == "processed", event.error
    tenant.refresh_from_db()
    assert tenant.plan == Tenant.Plan.FREE
    assert usage_plans.plans_of(key) == {usage_plans.free}
