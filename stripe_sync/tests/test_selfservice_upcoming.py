"""GET /api/v1/billing/upcoming: Stripe's invoice preview for the tenant's live metered subscription,
the platform's own estimate (marked as such) when there is none or Stripe cannot be reached."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from metering.estimates import month_bounds
from metering.models import Meter
from metering.tests.factories import HourlyAggregateFactory
from stripe_sync.client import stripe_client
from stripe_sync.credits import credit_grant_create
from stripe_sync.models import StripeMeter, TenantSubscription
from stripe_sync.selfservice import NOTE_NO_SUBSCRIPTION
from stripe_sync.tests.factories import CircuitBreakerFactory
from stripe_sync.tests.onboarding_support import meter_with_price
from stripe_sync.tests.webhook_support import onboarded_tenant
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

URL = "/api/v1/billing/upcoming"
PREVIEW = "/v1/invoices/create_preview"


@pytest.fixture
def subscribed(local_stripe, tenant):
    """`tenant` on the metered plan with its subscription at the local Stripe server (api_calls at
    0.5 cent a call) and 2,400 calls reported there; returns its customer id."""
    customer_id = onboarded_tenant(tenant, plan=Tenant.Plan.METERED)
    stripe_client().v1.billing.meter_events.create(
        params={"event_name": "api_calls", "payload": {"stripe_customer_id": customer_id, "value": "2400"}}
    )
    return customer_id


def _local_usage(tenant, value: str) -> None:
    """`value` calls of api_calls aggregated in the first hour of the current UTC month."""
    start, _ = month_bounds(timezone.now())
    HourlyAggregateFactory(
        tenant=tenant, meter=Meter.objects.get(code="api_calls"), hour=start, value=Decimal(value)
    )


def test_the_preview_comes_from_stripe_for_the_live_subscription(
    local_stripe, tenant, tenant_client, subscribed
):
    response = tenant_client.get(URL)

    assert response.status_code == 200, response.content
    body = response.json()
    subscription_id = TenantSubscription.objects.get(tenant=tenant).subscription_id
    [sent] = local_stripe.requests_to(PREVIEW, "POST")
    assert sent.params == {"customer": subscribed, "subscription": subscription_id}
    assert (body["source"], body["note"], body["currency"]) == ("stripe", None, "usd")
    assert (body["subtotal"], body["total"], body["amount_due"], body["credit_applied"]) == (
        1200,
        1200,
        1200,
        0,
    )
    [line] = body["lines"]
    assert line["meter"] == "api_calls"
    assert line["price"] == StripeMeter.objects.get(meter__code="api_calls").stripe_price_id
    assert (line["quantity"], line["amount"]) == ("2400", 1200)
    assert body["period_start"].endswith("Z")
    assert body["period_end"] > body["period_start"]


def test_credit_granted_shows_as_applied(local_stripe, tenant, tenant_client, subscribed):
    grant = credit_grant_create(
        tenant=tenant, amount_minor=500, currency="usd", category="promotional", reason="welcome credit"
    )
    assert grant.status == "active", grant.last_error

    body = tenant_client.get(URL).json()

    assert (body["source"], body["subtotal"], body["credit_applied"], body["amount_due"]) == (
        "stripe",
        1200,
        500,
        700,
    )


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (lambda server: server.fail_next(5, status=500, path=PREVIEW), "Stripe answered HTTP 500"),
        (lambda server: server.fail_next(5, status=429, path=PREVIEW), "Stripe answered HTTP 429"),
        (lambda server: server.drop_next(5, path=PREVIEW), "Stripe did not answer"),
    ],
)
def test_stripe_unreachable_falls_back_to_the_estimate(
    local_stripe, tenant, tenant_client, subscribed, fault, reason
):
    _local_usage(tenant, "10")
    fault(local_stripe)

    response = tenant_client.get(URL)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["source"] == "estimate"
    assert reason in body["note"]
    assert (body["currency"], body["subtotal"], body["total"], body["amount_due"]) == ("usd", 5, 5, 5)
    assert body["credit_applied"] is None
    [line] = body["lines"]
    assert (line["meter"], line["quantity"], line["amount"]) == ("api_calls", "10", 5)
    assert line["price"] == StripeMeter.objects.get(meter__code="api_calls").stripe_price_id
    start, end = month_bounds(timezone.now())
    assert (body["period_start"], body["period_end"]) == (
        start.isoformat().replace("+00:00", "Z"),
        end.isoformat().replace("+00:00", "Z"),
    )


def test_an_open_circuit_breaker_answers_the_estimate_without_calling_stripe(
    local_stripe, tenant, tenant_client, subscribed
):
    CircuitBreakerFactory(open_until=timezone.now() + timedelta(minutes=5), failures=5, last_error="HTTP 500")
    local_stripe.clear_requests()

    body = tenant_client.get(URL).json()

    assert body["source"] == "estimate"
    assert "circuit breaker" in body["note"]
    assert local_stripe.requests_to(PREVIEW) == []


def test_stripe_not_configured_answers_the_estimate(
    settings, local_stripe, tenant, tenant_client, subscribed
):
    settings.STRIPE_API_KEY = ""
    body = tenant_client.get(URL).json()
    assert body["source"] == "estimate"
    assert "STRIPE_API_KEY" in body["note"]


def test_a_tenant_without_a_subscription_gets_the_estimate_and_stripe_is_not_asked(
    local_stripe, tenant, tenant_client
):
    meter_with_price("api_calls")
    _local_usage(tenant, "4")

    response = tenant_client.get(URL)

    assert response.status_code == 200
    body = response.json()
    assert (body["source"], body["note"]) == ("estimate", NOTE_NO_SUBSCRIPTION)
    assert [(line["meter"], line["quantity"], line["amount"]) for line in body["lines"]] == [
        ("api_calls", "4", 2)
    ]
    assert local_stripe.requests == []


def test_a_canceled_subscription_is_not_previewed(local_stripe, tenant, tenant_client, subscribed):
    TenantSubscription.objects.filter(tenant=tenant).update(canceled_at=timezone.now())
    local_stripe.clear_requests()
    assert tenant_client.get(URL).json()["source"] == "estimate"
    assert local_stripe.requests_to(PREVIEW) == []


def test_stripe_refusing_the_request_is_502(local_stripe, tenant, tenant_client, subscribed):
    local_stripe.fail_next(1, status=400, path=PREVIEW)
    response = tenant_client.get(URL)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "stripe_error"


def test_a_platform_key_is_refused_and_a_key_is_required(platform_client):
    response = platform_client.get(URL)
    assert response.status_code == 403
    assert "tenant's own API key" in response.json()["error"]["message"]
    assert APIClient().get(URL).status_code == 401
