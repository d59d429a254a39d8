"""POST /api/v1/billing/portal: a Stripe Customer Portal session for the tenant's own customer."""

import pytest
from rest_framework.test import APIClient

from stripe_sync.client import stripe_client
from stripe_sync.tests.support import link_customer

pytestmark = pytest.mark.django_db

URL = "/api/v1/billing/portal"
SESSIONS = "/v1/billing_portal/sessions"
BODY = {"return_url": "https://app.example.com/billing"}


@pytest.fixture(autouse=True)
def _allowed_hosts(settings):
    settings.CHECKOUT_ALLOWED_HOSTS = [".example.com", "localhost"]
    settings.STRIPE_PORTAL_CONFIGURATION = ""


def test_a_tenant_gets_a_portal_session_for_its_customer_made_on_the_way(local_stripe, tenant, tenant_client):
    response = tenant_client.post(URL, BODY, format="json")

    assert response.status_code == 201, response.content
    tenant.refresh_from_db()
    [customer] = local_stripe.objects("customer")
    assert tenant.stripe_customer_id == customer["id"]
    [sent] = local_stripe.requests_to(SESSIONS, "POST")
    assert sent.params == {"customer": customer["id"], "return_url": BODY["return_url"]}
    session = local_stripe.get(response.json()["id"])
    assert response.json() == {"id": session["id"], "url": session["url"]}
    assert session["customer"] == customer["id"]


def test_an_onboarded_tenant_keeps_its_customer(local_stripe, tenant, tenant_client):
    customer_id = link_customer(tenant)
    assert tenant_client.post(URL, BODY, format="json").status_code == 201
    assert [c["id"] for c in local_stripe.objects("customer")] == [customer_id]
    assert local_stripe.requests_to(SESSIONS, "POST")[0].params["customer"] == customer_id


def test_the_configured_portal_configuration_is_used(settings, local_stripe, tenant_client):
    configuration = stripe_client().v1.billing_portal.configurations.create(
        params={"features": {"invoice_history": {"enabled": True}}}
    )
    settings.STRIPE_PORTAL_CONFIGURATION = configuration.id

    response = tenant_client.post(URL, BODY, format="json")

    assert response.status_code == 201, response.content
    assert local_stripe.requests_to(SESSIONS, "POST")[0].params["configuration"] == configuration.id
    assert local_stripe.get(response.json()["id"])["configuration"] == configuration.id


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "required"),
        ({"return_url": "https://evil.test/x"}, "'evil.test' is not allowed"),
        ({"return_url": "http://evil.com\\@app.example.com/"}, "backslash"),
        ({"return_url": "javascript:alert(1)"}, "http or https URL"),
    ],
)
def test_a_return_url_off_the_allow_list_is_400_and_nothing_reaches_stripe(
    local_stripe, tenant_client, body, message
):
    response = tenant_client.post(URL, body, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert list(error["fields"]) == ["return_url"]
    assert message in error["fields"]["return_url"][0]
    assert local_stripe.requests == []


def test_stripe_failing_is_502(local_stripe, tenant, tenant_client):
    link_customer(tenant)
    local_stripe.fail_next(5, status=500, path=SESSIONS)
    response = tenant_client.post(URL, BODY, format="json")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "stripe_error"


def test_stripe_not_configured_is_503(settings, tenant_client):
    settings.STRIPE_API_KEY = ""
    response = tenant_client.post(URL, BODY, format="json")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "stripe_not_configured"


def test_a_platform_key_is_refused_and_a_key_is_required(local_stripe, platform_client):
    response = platform_client.post(URL, BODY, format="json")
    assert response.status_code == 403
    assert "tenant's own API key" in response.json()["error"]["message"]
    assert APIClient().post(URL, BODY, format="json").status_code == 401
    assert local_stripe.requests == []
