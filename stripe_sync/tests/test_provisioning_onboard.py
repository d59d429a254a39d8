"""POST /api/v1/tenants/{ref}/onboard: the provisioning API's onboarding (a platform key with
tenants:write), the same service as the admin's "Onboard to Stripe" action, at the local Stripe server."""

import pytest

from core.api_scopes import EVENTS_WRITE, TENANTS_WRITE
from stripe_sync.client import stripe_client
from stripe_sync.models import TenantSubscription
from stripe_sync.tests.onboarding_support import meter_with_price
from tenants.models import Tenant
from tenants.tests.factories import TenantFactory
from tenants.tests.support import issue_key, issue_platform_key, key_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def backend():
    return key_client(issue_platform_key(TENANTS_WRITE))


@pytest.fixture
def metered():
    return TenantFactory(slug="acme", name="Acme", external_id="cus_acme", plan=Tenant.Plan.METERED)


def test_onboarding_by_external_id_makes_the_customer_and_subscription_once(local_stripe, backend, metered):
    meter_with_price()
    first = backend.post("/api/v1/tenants/cus_acme/onboard")
    assert first.status_code == 200, first.content
    body = first.json()
    customers = local_stripe.objects("customer")
    assert [c["id"] for c in customers] == [body["customer"]]
    assert customers[0]["metadata"]["tenant_id"] == str(metered.pk)
    assert (body["tenant"], body["customer_created"]) == ("acme", True)
    subscription = TenantSubscription.objects.get(tenant=metered).subscription
    assert body["subscription"] == {"id": subscription.id, "status": subscription.status}
    assert len(body["meters"]) == 1
    assert body["meters"][0].startswith("api_calls: meter ")

    again = backend.post("/api/v1/tenants/acme/onboard")
    assert again.status_code == 200
    assert (again.json()["customer"], again.json()["customer_created"]) == (body["customer"], False)
    assert len(local_stripe.objects("customer")) == 1
    assert len(local_stripe.objects("subscription")) == 1
    metered.refresh_from_db()
    assert metered.stripe_customer_id == body["customer"]


def test_stripe_errors_are_502_and_nothing_is_linked(local_stripe, backend, metered):
    local_stripe.fail_next(5, status=500, path="/v1/customers/search")
    response = backend.post("/api/v1/tenants/cus_acme/onboard")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "stripe_error"
    metered.refresh_from_db()
    assert metered.stripe_customer_id is None


def test_a_conflict_at_stripe_is_409_with_the_reason(local_stripe, backend, metered):
    meter_with_price("api_calls")
    stripe_client().v1.billing.meters.create(
        params={
            "display_name": "by hand",
            "event_name": "api_calls",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"type": "by_id", "event_payload_key": "customer"},
        }
    )
    response = backend.post("/api/v1/tenants/cus_acme/onboard")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "onboarding_refused"
    assert "stripe_customer_id" in response.json()["error"]["message"]


def test_stripe_not_configured_is_503(settings, backend, metered):
    settings.STRIPE_API_KEY = ""
    response = backend.post("/api/v1/tenants/cus_acme/onboard")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "stripe_not_configured"


def test_a_tenant_key_or_a_key_without_the_scope_cannot_onboard(local_stripe, metered):
    for client in (key_client(issue_key(metered)), key_client(issue_platform_key(EVENTS_WRITE))):
        assert client.post("/api/v1/tenants/cus_acme/onboard").status_code == 403
    assert local_stripe.objects("customer") == []


def test_the_schema_describes_onboarding(client):
    operation = client.get("/api/schema/?format=json").json()["paths"]["/api/v1/tenants/{ref}/onboard"][
        "post"
    ]
    assert {"200", "401", "403", "404", "409", "502", "503"} <= set(operation["responses"])
