"""POST /api/v1/billing/checkout: a Checkout Session for the tenant's metered subscription."""

import pytest
from rest_framework.test import APIClient

from stripe_sync.models import StripeMeter
from stripe_sync.subscriptions import tenant_subscription_ensure
from stripe_sync.tests.onboarding_support import meter_with_price
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

URL = "/api/v1/billing/checkout"
BODY = {"success_url": "https://app.example.com/billing?ok=1", "cancel_url": "http://localhost:3000/billing"}


@pytest.fixture(autouse=True)
def _allowed_hosts(settings):
    settings.CHECKOUT_ALLOWED_HOSTS = [".example.com", "localhost"]


@pytest.fixture
def priced(db):
    return meter_with_price()


def test_checkout_onboards_the_tenant_and_returns_the_session(local_stripe, tenant_client, tenant, priced):
    response = tenant_client.post(URL, BODY, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    session = local_stripe.get(body["id"])
    assert body["url"] == session["url"]
    assert body["url"].startswith("https://checkout.stripe.com/")
    tenant.refresh_from_db()
    assert session["customer"] == tenant.stripe_customer_id
    assert session["mode"] == "subscription"
    assert session["success_url"] == BODY["success_url"]
    assert session["cancel_url"] == BODY["cancel_url"]
    assert session["client_reference_id"] == str(tenant.pk)
    assert len(local_stripe.objects("customer")) == 1
    # Completing it starts the subscription, which the platform then adopts rather than duplicates.
    local_stripe.complete_checkout_session(body["id"])
    subscription = tenant_subscription_ensure(tenant=tenant)
    assert [s["id"] for s in local_stripe.objects("subscription")] == [subscription.id]
    prices = {item["price"]["id"] for item in local_stripe.get(subscription.id)["items"]["data"]}
    assert prices == {StripeMeter.objects.get().stripe_price_id}


def test_a_second_checkout_reuses_the_customer(local_stripe, tenant_client, priced):
    assert tenant_client.post(URL, BODY, format="json").status_code == 201
    assert tenant_client.post(URL, BODY, format="json").status_code == 201
    assert len(local_stripe.objects("customer")) == 1
    assert len(local_stripe.objects("checkout.session")) == 2


def test_a_subscribed_tenant_is_refused(local_stripe, tenant_client, tenant, priced):
    assert tenant_client.post(URL, BODY, format="json").status_code == 201
    tenant.refresh_from_db()
    subscription = tenant_subscription_ensure(tenant=tenant)
    response = tenant_client.post(URL, BODY, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_subscribed"
    assert subscription.id in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"cancel_url": BODY["cancel_url"]}, "success_url", "required"),
        ({**BODY, "cancel_url": "https://evil.test/x"}, "cancel_url", "'evil.test' is not allowed"),
        ({**BODY, "success_url": "ftp://app.example.com/x"}, "success_url", "http or https URL"),
        ({**BODY, "success_url": "javascript:alert(1)"}, "success_url", "http or https URL"),
        ({**BODY, "success_url": "https://example.com.evil.test/"}, "success_url", "not allowed"),
    ],
)
def test_invalid_urls_are_400_naming_the_field(local_stripe, tenant_client, priced, body, field, message):
    response = tenant_client.post(URL, body, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert list(error["fields"]) == [field]
    assert message in error["fields"][field][0]
    assert local_stripe.objects("customer") == []


def test_each_tenant_gets_its_own_customer(local_stripe, tenant_client, tenant, other_tenant, priced):
    from tenants.tests.support import issue_key

    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {issue_key(other_tenant)}")
    mine = local_stripe.get(tenant_client.post(URL, BODY, format="json").json()["id"])
    theirs = local_stripe.get(other.post(URL, BODY, format="json").json()["id"])
    tenant.refresh_from_db()
    other_tenant.refresh_from_db()
    assert mine["customer"] == tenant.stripe_customer_id
    assert theirs["customer"] == other_tenant.stripe_customer_id
    assert mine["customer"] != theirs["customer"]


def test_authentication_is_required(local_stripe, priced):
    response = APIClient().post(URL, BODY, format="json")
    assert response.status_code == 401


def test_a_suspended_tenant_is_refused(local_stripe, tenant_client, tenant, priced):
    Tenant.objects.filter(pk=tenant.pk).update(status=Tenant.Status.SUSPENDED)
    assert tenant_client.post(URL, BODY, format="json").status_code == 403


def test_stripe_errors_are_502(local_stripe, tenant_client, priced):
    local_stripe.fail_next(5, status=500, path="/v1/checkout/sessions")
    response = tenant_client.post(URL, BODY, format="json")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "stripe_error"
    assert response.json()["error"]["message"].startswith("Stripe: ")


def test_stripe_not_configured_is_503(settings, tenant_client, priced):
    settings.STRIPE_API_KEY = ""
    response = tenant_client.post(URL, BODY, format="json")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "stripe_not_configured"


def test_the_schema_describes_checkout(client):
    schema = client.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/billing/checkout"]["post"]
    assert {"201", "400", "409", "502", "503"} <= set(operation["responses"])


# --- the allow-list is read as a browser reads the URL (issue 10, "Trust") ----------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        # urlsplit sees localhost; a browser reads a backslash as "/" and goes to evil.com.
        ("http://evil.com\\@localhost/ok", "backslash"),
        ("http://evil.com\\.example.com/ok", "backslash"),
        ("https://localhost\\evil.com", "backslash"),
        ("http://evil.com@localhost/ok", "user information"),
        ("http://localhost:3000@evil.com/ok", "user information"),
        ("http://user:pw@app.example.com/ok", "user information"),
        ("http://evil.com%2f@localhost/ok", "user information"),
        ("http://evil.com%2flocalhost/ok", "percent-encoded"),
        ("http://localhost%40evil.com/", "percent-encoded"),
        ("http://evil.com%5c.example.com/", "percent-encoded"),
        ("http:evil.com/ok", "http or https URL"),
        ("http:/evil.com/ok", "http or https URL"),
        ("http:///evil.com/ok", "valid host"),
        ("//evil.com/ok", "http or https URL"),
        ("http://evil.com\t.example.com/", "control characters"),
        ("http://local\nhost/ok", "control characters"),
        ("http://local host/ok", "control characters"),
        ("http://app.example.com\u3002evil.com/", "ASCII"),
        ("http://localhost:99999/ok", "valid host name and port"),
        ("data:text/html,<script>alert(1)</script>", "http or https URL"),
        ("file:///etc/passwd", "http or https URL"),
    ],
)
def test_return_urls_a_browser_would_read_differently_are_refused_with_400(
    local_stripe, tenant_client, priced, url, message
):
    response = tenant_client.post(URL, {**BODY, "success_url": url}, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert list(error["fields"]) == ["success_url"]
    assert message in error["fields"]["success_url"][0]
    assert local_stripe.objects("customer") == []
    assert local_stripe.objects("checkout.session") == []


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/ok",
        "HTTPS://APP.EXAMPLE.COM/ok?next=/x%2Fy#frag",
        "http://localhost:3000/path/@not-a-host?q=a@b",
        "https://a.b.example.com",
    ],
)
def test_ordinary_return_urls_on_allowed_hosts_are_accepted(local_stripe, tenant_client, priced, url):
    response = tenant_client.post(URL, {**BODY, "success_url": url}, format="json")
    assert response.status_code == 201, response.content
    assert local_stripe.get(response.json()["id"])["success_url"] == url


def test_a_deeply_nested_checkout_body_is_a_400_not_a_server_error(local_stripe, tenant_client, priced):
    for depth in (33, 100_000):
        body = '{"success_url": ' + "[" * depth + "]" * depth + "}"
        response = tenant_client.post(URL, body, content_type="application/json")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "parse_error"
        assert "nested too deeply" in response.json()["error"]["message"]
    assert local_stripe.objects("customer") == []


@pytest.mark.parametrize(("enabled", "sent"), [(True, "true"), (False, None)])
def test_promotion_codes_are_allowed_when_the_setting_says_so(
    settings, local_stripe, tenant_client, priced, enabled, sent
):
    settings.CHECKOUT_PROMOTION_CODES = enabled
    response = tenant_client.post(URL, BODY, format="json")
    assert response.status_code == 201, response.content
    [created] = local_stripe.requests_to("/v1/checkout/sessions", "POST")
    assert created.params.get("allow_promotion_codes") == sent
    assert local_stripe.get(response.json()["id"]).get("allow_promotion_codes") is (True if enabled else None)
