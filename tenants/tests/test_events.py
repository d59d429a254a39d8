"""Tenant changes are outgoing webhook events: one message per history row, with the tenant block,
in the change's transaction, whoever made it (command, admin, API, Stripe)."""

from decimal import Decimal

import pytest
from django.db import transaction
from standardwebhooks import Webhook

from outbound.models import WebhookMessage
from outbound.services import webhook_deliveries_send_due
from outbound.tests.conftest import receiver  # noqa: F401 - the local endpoint fixture
from outbound.tests.factories import WebhookEndpointFactory
from tenants.events import tenant_event_block
from tenants.models import PlatformAPIKey, Tenant, TenantChange
from tenants.services import (
    api_key_issue,
    tenant_change_plan,
    tenant_create,
    tenant_reactivate,
    tenant_suspend,
    tenant_update,
)
from tenants.tests.factories import TenantFactory
from tenants.tests.support import issue_platform_key, run_command

pytestmark = pytest.mark.django_db


def _message(type_):
    [message] = WebhookMessage.objects.filter(type=type_)
    return message


def test_tenant_block_is_the_same_shape_everywhere():
    tenant = TenantFactory(name="Acme", slug="acme", external_id="cus-42")
    assert tenant_event_block(tenant) == {
        "id": tenant.pk,
        "slug": "acme",
        "external_id": "cus-42",
        "name": "Acme",
        "plan": "metered",
        "status": "active",
    }


def test_create_tenant_publishes_tenant_created_once():
    tenant = tenant_create(name="Umbrella Corp", external_id="umb-1")
    change = tenant.changes.get()

    message = _message("tenant.created")
    assert message.key == f"tenant-change:{change.pk}"
    assert (message.tenant_id, message.tenant_slug, message.tenant_external_id) == (
        tenant.pk,
        "umbrella-corp",
        "umb-1",
    )
    data = message.payload["data"]
    assert data["tenant"] == {
        "id": tenant.pk,
        "slug": "umbrella-corp",
        "external_id": "umb-1",
        "name": "Umbrella Corp",
        "plan": "free",
        "status": "active",
    }
    assert (data["source"], data["actor"]) == ("command", None)
    assert WebhookMessage.objects.count() == 1


def test_suspend_and_reactivate_publish_one_event_each_and_repeats_publish_nothing():
    tenant = TenantFactory(slug="acme")
    assert tenant_suspend(tenant=tenant, source="admin", reason="unpaid")
    assert not tenant_suspend(tenant=tenant, source="admin")  # already suspended: no change, no event
    assert tenant_reactivate(tenant=tenant, source="admin")

    suspended, reactivated = _message("tenant.suspended"), _message("tenant.reactivated")
    assert suspended.payload["data"]["tenant"]["status"] == "suspended"
    assert (suspended.payload["data"]["old_status"], suspended.payload["data"]["new_status"]) == (
        "active",
        "suspended",
    )
    assert suspended.payload["data"]["reason"] == "unpaid"
    assert reactivated.payload["data"]["tenant"]["status"] == "active"
    assert WebhookMessage.objects.count() == 2


def test_plan_change_publishes_old_and_new_plan_with_its_source():
    tenant = TenantFactory(slug="acme", plan=Tenant.Plan.FREE)
    tenant_change_plan(tenant=tenant, plan=Tenant.Plan.METERED, source="evt_123", reason="Stripe: card")

    data = _message("tenant.plan_changed").payload["data"]
    assert (data["old_plan"], data["new_plan"], data["source"], data["reason"]) == (
        "free",
        "metered",
        "evt_123",
        "Stripe: card",
    )
    assert data["tenant"]["plan"] == "metered"


def test_a_platform_key_is_named_as_the_actor():
    issue_platform_key("tenants:write", name="backend")
    key = PlatformAPIKey.objects.get()
    tenant_create(name="Keyed", actor=key, source="api")
    assert _message("tenant.created").payload["data"]["actor"] == {
        "kind": "platform_key",
        "prefix": key.prefix,
        "name": "backend",
    }


def test_each_changed_detail_is_one_tenant_updated_and_api_keys_are_not_published():
    tenant = TenantFactory(slug="acme", name="Acme")
    changed = tenant_update(
        tenant=tenant, name="Acme Ltd", monthly_free_allowance=Decimal("500"), source="api"
    )
    assert sorted(changed) == ["monthly_free_allowance", "name"]
    api_key_issue(tenant=tenant, name="k", source="admin")  # a history row (field api_key): not published

    messages = list(WebhookMessage.objects.filter(type="tenant.updated").order_by("id"))
    fields = {m.payload["data"]["field"]: m.payload["data"] for m in messages}
    assert set(fields) == {"name", "free_allowance"}
    assert (fields["name"]["old_value"], fields["name"]["new_value"]) == ("Acme", "Acme Ltd")
    assert fields["free_allowance"]["tenant"]["name"] == "Acme Ltd"
    changes = TenantChange.objects.filter(tenant=tenant, field__in=["name", "free_allowance"])
    assert {m.key for m in messages} == {f"tenant-change:{c.pk}" for c in changes}
    assert TenantChange.objects.filter(tenant=tenant, field="api_key").exists()
    assert WebhookMessage.objects.count() == 2


def test_a_rolled_back_change_publishes_nothing():
    tenant = TenantFactory(slug="acme")

    @transaction.atomic
    def suspend_then_fail():
        tenant_suspend(tenant=tenant, source="admin")
        raise RuntimeError("the caller fails after the change")

    with pytest.raises(RuntimeError):
        suspend_then_fail()
    assert not TenantChange.objects.exists()
    assert not WebhookMessage.objects.exists()


def test_an_endpoint_subscribed_to_tenant_created_receives_a_signed_post(receiver):  # noqa: F811
    endpoint = WebhookEndpointFactory(url=receiver.url, event_types=["tenant.created"])
    other = WebhookEndpointFactory(url=receiver.url + "/other", event_types=["tenant.suspended"])

    run_command("create_tenant", "Signed Co")
    assert webhook_deliveries_send_due().succeeded == 1

    [request] = receiver.requests
    assert request.path == "/hooks"
    payload = Webhook(endpoint.secret).verify(request.body, request.headers)
    assert payload["type"] == "tenant.created"
    assert payload["data"]["tenant"]["slug"] == "signed-co"
    assert payload["data"]["source"] == "command"
    assert not other.deliveries.exists()
