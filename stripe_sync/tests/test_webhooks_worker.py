"""End to end: the local Stripe server delivers a signed webhook to a live server; a real Celery
worker (Redis) processes it."""

import time

import pytest

from conftest import STRIPE_TEST_WEBHOOK_SECRET
from stripe_sync.models import WebhookEvent
from stripe_sync.tests.webhook_support import URL, onboarded_tenant
from tenants.models import Tenant, TenantChange


def _wait_for(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up after {timeout}s")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_stripe_delivers_and_the_worker_processes(celery_worker_process, live_server, local_stripe, tenant):
    customer_id = onboarded_tenant(tenant)
    local_stripe.add_webhook_endpoint(
        f"{live_server.url}{URL}",
        secret=STRIPE_TEST_WEBHOOK_SECRET,
        enabled_events=["payment_method.attached", "customer.subscription.created"],
    )

    local_stripe.create_payment_method(customer_id, default=True)  # the customer adds a card

    assert local_stripe.wait_for_webhooks(timeout=30)
    [delivery] = local_stripe.webhook_deliveries
    assert delivery.status == 200, delivery.body
    attached = _wait_for(
        lambda: WebhookEvent.objects.filter(stripe_id=delivery.event_id, status="processed").first()
    )
    tenant.refresh_from_db()
    assert tenant.plan == Tenant.Plan.METERED
    assert TenantChange.objects.get(tenant=tenant, field="plan").source == attached.stripe_id

    # Making the metered subscription made Stripe send customer.subscription.created: delivered,
    # processed by the worker, and the plan (already metered) left alone.
    assert local_stripe.wait_for_webhooks(timeout=30)
    created = _wait_for(
        lambda: WebhookEvent.objects.filter(type="customer.subscription.created", status="processed").first()
    )
    assert "already metered" in created.result
    assert TenantChange.objects.filter(tenant=tenant, field="plan").count() == 1

    # Stripe redelivers: stored once, processed once.
    local_stripe.resend_event(
        f"{live_server.url}{URL}", attached.stripe_id, secret=STRIPE_TEST_WEBHOOK_SECRET
    )
    assert WebhookEvent.objects.filter(stripe_id=attached.stripe_id).count() == 1
    attached.refresh_from_db()
    assert attached.attempts == 1
