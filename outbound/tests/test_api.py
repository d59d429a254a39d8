"""/api/v1/webhook-endpoints: a platform key with `webhooks:write` manages endpoints; nobody else."""

import pytest
from standardwebhooks import Webhook

from outbound.models import WebhookDelivery, WebhookEndpoint
from outbound.tests.factories import WebhookDeliveryFactory, WebhookEndpointFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/webhook-endpoints"


@pytest.fixture(autouse=True)
def _https_only(settings):
    settings.WEBHOOKS_ALLOW_HTTP = False


def test_create_answers_the_secret_once_and_list_and_get_do_not(platform_client):
    response = platform_client.post(
        URL,
        {"url": "https://app.example.com/hooks", "event_types": ["payment.failed"], "description": "app"},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    endpoint = WebhookEndpoint.objects.get()
    assert body["secret"] == endpoint.secret
    Webhook(body["secret"])
    assert (body["id"], body["url"], body["event_types"], body["enabled"]) == (
        endpoint.pk,
        "https://app.example.com/hooks",
        ["payment.failed"],
        True,
    )

    listed = platform_client.get(URL).json()["endpoints"]
    assert [e["id"] for e in listed] == [endpoint.pk]
    one = platform_client.get(f"{URL}/{endpoint.pk}")
    assert one.status_code == 200
    assert "secret" not in listed[0]
    assert "secret" not in one.json()
    assert endpoint.secret not in one.content.decode()


def test_patch_changes_and_re_enables(platform_client):
    endpoint = WebhookEndpointFactory(enabled=False, disabled_reason="Disabled automatically: ...")
    response = platform_client.patch(
        f"{URL}/{endpoint.pk}", {"event_types": ["*"], "enabled": True, "description": "new"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["enabled"] is True
    endpoint.refresh_from_db()
    assert (endpoint.event_types, endpoint.enabled, endpoint.disabled_reason, endpoint.description) == (
        ["*"],
        True,
        "",
        "new",
    )


def test_delete_removes_the_endpoint_and_its_deliveries(platform_client):
    delivery = WebhookDeliveryFactory()
    assert platform_client.delete(f"{URL}/{delivery.endpoint.pk}").status_code == 204
    assert not WebhookEndpoint.objects.exists()
    assert not WebhookDelivery.objects.exists()
    assert platform_client.delete(f"{URL}/{delivery.endpoint.pk}").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://app.example.com/h", "event_types": ["*"]}, "url"),
        ({"url": "javascript:alert(1)", "event_types": ["*"]}, "url"),
        ({"url": "https://app.example.com/h", "event_types": ["tenant.exploded"]}, "event_types"),
        ({"url": "https://app.example.com/h", "event_types": []}, "event_types"),
        ({"url": "https://app.example.com/h", "event_types": "tenant.created"}, "event_types"),
        ({"event_types": ["*"]}, "url"),
        ({"url": "https://app.example.com/h", "event_types": ["*"], "events": ["*"]}, "events"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(platform_client, body, field):
    response = platform_client.post(URL, body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid"
    assert field in response.json()["error"]["fields"]
    assert not WebhookEndpoint.objects.exists()


def test_a_body_that_is_not_an_object_is_a_400(platform_client):
    assert platform_client.post(URL, ["x"], format="json").status_code == 400
    endpoint = WebhookEndpointFactory()
    assert platform_client.patch(f"{URL}/{endpoint.pk}", "x", format="json").status_code == 400


def test_an_unknown_or_huge_id_is_a_404(platform_client):
    for endpoint_id in (1, 2**63, 10**30):
        response = platform_client.get(f"{URL}/{endpoint_id}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


def test_a_tenant_key_gets_403(tenant_client):
    endpoint = WebhookEndpointFactory()
    assert tenant_client.get(URL).status_code == 403
    assert (
        tenant_client.post(
            URL, {"url": "https://a.example.com", "event_types": ["*"]}, format="json"
        ).status_code
        == 403
    )
    assert tenant_client.delete(f"{URL}/{endpoint.pk}").status_code == 403
    assert WebhookEndpoint.objects.count() == 1


def test_a_platform_key_without_the_scope_gets_403(client_with_scopes):
    client = client_with_scopes("events:write", "tenants:write")
    response = client.get(URL)
    assert response.status_code == 403
    assert "webhooks:write" in response.json()["error"]["message"]
    assert client_with_scopes("webhooks:write").get(URL).status_code == 200


def test_no_key_is_a_401(api_client):
    assert api_client.get(URL).status_code == 401


def test_the_schema_types_every_operation(client):
    spec = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert set(spec["paths"][URL]) >= {"get", "post"}
    assert set(spec["paths"][URL + "/{endpoint_id}"]) >= {"get", "patch", "delete"}
    created = spec["paths"][URL]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert created == {"$ref": "#/components/schemas/WebhookEndpointCreated"}
    assert "secret" in spec["components"]["schemas"]["WebhookEndpointCreated"]["properties"]
    assert spec["paths"][URL]["post"]["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
