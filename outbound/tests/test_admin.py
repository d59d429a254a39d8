"""The endpoints' admin and the delivery log: pages render for a superuser, actions work, and a
view-only user can neither act nor see the secret."""

import re

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.urls import reverse

from outbound.models import WebhookDelivery, WebhookEndpoint
from outbound.tests.factories import WebhookDeliveryFactory, WebhookEndpointFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer_client(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="outbound", codename__startswith="view_")
    )
    client.force_login(user)
    return client


def action(client, model: str, name: str, *objects):
    return client.post(
        reverse(f"admin:outbound_{model}_changelist"),
        {"action": name, ACTION_CHECKBOX_NAME: [o.pk for o in objects]},
        follow=True,
    )


def texts(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_the_pages_render_for_a_superuser(admin_client):
    delivery = WebhookDeliveryFactory(status="failed", attempts=2, last_status_code=500, last_latency_ms=12)
    for url in (
        reverse("admin:outbound_webhookendpoint_changelist"),
        reverse("admin:outbound_webhookendpoint_add"),
        reverse("admin:outbound_webhookendpoint_change", args=[delivery.endpoint.pk]),
        reverse("admin:outbound_webhookdelivery_changelist") + "?status=failed",
        reverse("admin:outbound_webhookdelivery_change", args=[delivery.pk]),
        reverse("admin:outbound_webhookmessage_changelist"),
        reverse("admin:outbound_webhookmessage_change", args=[delivery.message.pk]),
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
    page = admin_client.get(reverse("admin:outbound_webhookdelivery_changelist")).content.decode()
    assert delivery.message.type in page
    assert "500" in page


def test_an_endpoint_is_created_in_admin_and_its_secret_shown_once(admin_client, settings):
    settings.WEBHOOKS_ALLOW_HTTP = False
    response = admin_client.post(
        reverse("admin:outbound_webhookendpoint_add"),
        {"url": "https://app.example.com/hooks", "description": "app", "event_types": ["payment.failed"]},
        follow=True,
    )
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.event_types == ["payment.failed"]
    assert any(endpoint.secret in text for text in texts(response))
    page = admin_client.get(reverse("admin:outbound_webhookendpoint_change", args=[endpoint.pk]))
    assert endpoint.secret not in page.content.decode()


def test_an_endpoint_is_changed_in_admin(admin_client):
    endpoint = WebhookEndpointFactory(event_types=["payment.failed"], description="old")
    url = reverse("admin:outbound_webhookendpoint_change", args=[endpoint.pk])
    page = admin_client.get(url).content.decode()
    checked = re.findall(r'<input type="checkbox" name="event_types" value="([^"]+)"[^>]* checked>', page)
    assert checked == ["payment.failed"]

    response = admin_client.post(
        url, {"url": endpoint.url, "description": "new", "event_types": ["tenant.created", "budget.alert"]}
    )
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert (endpoint.event_types, endpoint.description) == (["tenant.created", "budget.alert"], "new")


def test_the_form_refuses_plain_http_and_no_event_type(admin_client, settings):
    settings.WEBHOOKS_ALLOW_HTTP = False
    response = admin_client.post(
        reverse("admin:outbound_webhookendpoint_add"),
        {"url": "http://app.example.com/hooks", "event_types": []},
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "https" in errors["url"][0]
    assert "event_types" in errors
    assert not WebhookEndpoint.objects.exists()


def test_re_enable_rotate_and_send_test(admin_client, django_capture_on_commit_callbacks):
    endpoint = WebhookEndpointFactory(enabled=False, disabled_reason="Disabled automatically: ...")
    old_secret = endpoint.secret

    action(admin_client, "webhookendpoint", "re_enable", endpoint)
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason) == (True, "")

    action(admin_client, "webhookendpoint", "disable", endpoint)
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason) == (False, "Disabled by hand.")
    action(admin_client, "webhookendpoint", "re_enable", endpoint)

    response = action(admin_client, "webhookendpoint", "rotate_secret", endpoint)
    endpoint.refresh_from_db()
    assert endpoint.secret != old_secret
    assert any(endpoint.secret in text for text in texts(response))

    with django_capture_on_commit_callbacks() as callbacks:
        action(admin_client, "webhookendpoint", "send_test", endpoint)
    delivery = WebhookDelivery.objects.get()
    assert (delivery.endpoint, delivery.trigger, delivery.status) == (endpoint, "test", "pending")
    assert delivery.message.payload["data"]["test"] is True
    assert len(callbacks) == 1


def test_replay_from_the_delivery_log(admin_client):
    delivery = WebhookDeliveryFactory(status="gave_up", attempts=8)
    action(admin_client, "webhookdelivery", "replay", delivery)
    replay = WebhookDelivery.objects.exclude(pk=delivery.pk).get()
    assert (replay.message, replay.endpoint, replay.trigger, replay.status) == (
        delivery.message,
        delivery.endpoint,
        "replay",
        "pending",
    )


def test_a_view_only_user_sees_the_log_but_gets_no_action_and_no_secret(viewer_client):
    delivery = WebhookDeliveryFactory()
    endpoint = delivery.endpoint
    secret = endpoint.secret
    page = viewer_client.get(reverse("admin:outbound_webhookdelivery_changelist"))
    assert page.status_code == 200
    assert page.context["action_form"] is None or not page.context["cl"].model_admin.get_actions(
        page.wsgi_request
    )
    change = viewer_client.get(reverse("admin:outbound_webhookendpoint_change", args=[endpoint.pk]))
    assert change.status_code == 200
    assert endpoint.secret not in change.content.decode()

    for model, name, obj in (
        ("webhookdelivery", "replay", delivery),
        ("webhookendpoint", "rotate_secret", endpoint),
        ("webhookendpoint", "send_test", endpoint),
        ("webhookendpoint", "disable", endpoint),
    ):
        action(viewer_client, model, name, obj)
    assert WebhookDelivery.objects.count() == 1
    assert WebhookEndpoint.objects.get().secret == secret
    assert WebhookEndpoint.objects.get().enabled
    assert (
        viewer_client.post(
            reverse("admin:outbound_webhookendpoint_add"),
            {"url": "https://x.example.com", "event_types": ["*"]},
        ).status_code
        == 403
    )
