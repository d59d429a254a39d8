"""Helpers for the webhook tests: signed deliveries through Django's test client, onboarded tenants."""

from __future__ import annotations

import json

from conftest import STRIPE_TEST_WEBHOOK_SECRET
from stripe_sync.models import WebhookEvent
from stripe_sync.onboarding import tenant_onboard
from stripe_sync.tests.onboarding_support import meter_with_price
from stripe_sync.webhooks import webhook_event_process
from tenants.models import Tenant
from tests.stripe_server import StripeServer

URL = "/api/v1/stripe/webhook"


def post_signed(client, event: dict | str, *, secret: str = STRIPE_TEST_WEBHOOK_SECRET, timestamp=None):
    """POST `event` (a dict, or the exact body text) signed as Stripe signs it."""
    body = event if isinstance(event, str) else json.dumps(event, indent=2)
    return client.post(
        URL,
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=StripeServer.sign(body, secret, timestamp),
    )


def deliver(client, event: dict, django_capture_on_commit_callbacks) -> WebhookEvent:
    """Deliver `event` to the endpoint and process it as the worker would; returns the stored row."""
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = post_signed(client, event)
    assert response.status_code == 200, response.content
    stored = WebhookEvent.objects.get(stripe_id=event["id"])
    if queued:  # the processing task the view queued after commit, run here in-process
        webhook_event_process(event_id=stored.pk)
    stored.refresh_from_db()
    return stored


def onboarded_tenant(tenant: Tenant, *, plan: str = Tenant.Plan.FREE) -> str:
    """`tenant` on `plan`, onboarded at the local Stripe server (customer, meter, metered price);
    returns its customer id."""
    meter_with_price("api_calls")
    tenant.plan = plan
    tenant.save()
    result = tenant_onboard(tenant=tenant)
    return result.customer.id
