"""webhook_event_publish: the contract the domain apps publish through."""

from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.db import transaction

from outbound.events import EVENT_TYPES
from outbound.models import WebhookDelivery, WebhookMessage
from outbound.services import webhook_event_publish
from outbound.tests.factories import WebhookEndpointFactory

pytestmark = pytest.mark.django_db

TENANT = SimpleNamespace(pk=7, slug="acme", external_id="cus-42")


def test_event_types_are_the_issue_list():
    assert set(EVENT_TYPES) == {
        "tenant.created", "tenant.updated", "tenant.suspended", "tenant.reactivated", "tenant.plan_changed",
        "usage.threshold_crossed", "payment.succeeded", "payment.failed", "payment.action_required",
        "subscription.created", "subscription.updated", "subscription.canceled", "subscription.expired",
        "budget.alert",
    }  # fmt: skip


def test_it_writes_one_pending_delivery_per_subscribed_enabled_endpoint(django_capture_on_commit_callbacks):
    subscribed = WebhookEndpointFactory(event_types=["payment.failed"])
    every = WebhookEndpointFactory(event_types=["*"])
    WebhookEndpointFactory(event_types=["tenant.created"])
    WebhookEndpointFactory(event_types=["*"], enabled=False)

    with django_capture_on_commit_callbacks() as callbacks:
        message = webhook_event_publish(
            type="payment.failed", data={"amount": Decimal("12.50")}, key="in_1:failed", tenant=TENANT
        )

    assert len(callbacks) == 1
    assert message.public_id.startswith("msg_")
    stored = WebhookMessage.objects.get()
    assert (stored.tenant_slug, stored.tenant_external_id, stored.tenant_id) == ("acme", "cus-42", 7)
    assert stored.payload["type"] == "payment.failed"
    assert stored.payload["data"] == {"amount": "12.50"}
    assert stored.payload["timestamp"].endswith("Z")
    assert set(WebhookDelivery.objects.values_list("endpoint", "status")) == {
        (subscribed.pk, "pending"),
        (every.pk, "pending"),
    }


def test_a_second_publish_with_the_same_key_sends_nothing():
    WebhookEndpointFactory()
    assert webhook_event_publish(type="tenant.created", data={}, key="k1") is not None
    assert webhook_event_publish(type="tenant.created", data={"other": 1}, key="k1") is None
    assert WebhookMessage.objects.count() == 1
    assert WebhookDelivery.objects.count() == 1


def publish_then_fail():
    with transaction.atomic():
        webhook_event_publish(type="tenant.created", data={}, key="k-rolled-back")
        raise RuntimeError("the caller failed")


def test_a_rolled_back_publish_leaves_nothing(django_capture_on_commit_callbacks):
    WebhookEndpointFactory()
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(RuntimeError):
        publish_then_fail()
    assert callbacks == []
    assert not WebhookMessage.objects.exists()
    assert not WebhookDelivery.objects.exists()


def test_an_unknown_type_or_data_that_is_not_json_is_refused():
    with pytest.raises(ValueError, match="Unknown webhook event type"):
        webhook_event_publish(type="tenant.exploded", data={}, key="k")
    with pytest.raises(ValueError, match="not JSON"):
        webhook_event_publish(type="tenant.created", data={"x": object()}, key="k")
    assert not WebhookMessage.objects.exists()
