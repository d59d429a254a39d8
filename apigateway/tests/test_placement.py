"""A plan move (provisioning API, admin, suspension, a new key id) moves the tenant's API Gateway key into
exactly its plan's usage plan, as API Gateway (moto, over HTTP) reports it; failures are recorded."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from apigateway.models import UsagePlanPlacement
from apigateway.services import usage_plan_place
from outbound.models import WebhookMessage
from tenants.models import Tenant, TenantChange
from tenants.services import (
    tenant_change_plan,
    tenant_create,
    tenant_reactivate,
    tenant_suspend,
    tenant_update,
)
from tenants.tests.factories import TenantFactory
from tenants.tests.support import run_command

pytestmark = pytest.mark.django_db


def _placements(tenant) -> list[tuple[str, str, str]]:
    return list(
        TenantChange.objects.filter(tenant=tenant, field=TenantChange.Field.USAGE_PLAN)
        .order_by("id")
        .values_list("old_value", "new_value", "reason")
    )


def _placement(tenant) -> UsagePlanPlacement:
    return UsagePlanPlacement.objects.get(tenant=tenant)


def test_a_tenant_made_by_the_api_with_a_key_id_has_its_key_placed(usage_plans, placed, platform_client):
    key = usage_plans.key()
    response = placed(
        lambda: platform_client.post(
            "/api/v1/tenants",
            {"name": "Acme", "external_id": "cus_1", "plan": "metered", "apigateway_key_id": key},
            format="json",
        )
    )
    assert response.status_code == 201, response.content
    assert response.json()["apigateway_key_id"] == key
    assert usage_plans.plans_of(key) == {usage_plans.metered}
    tenant = Tenant.objects.get(external_id="cus_1")
    placement = _placement(tenant)
    assert (placement.status, placement.desired_plan_id, placement.actual_plan_ids, placement.attempts) == (
        "in_place",
        usage_plans.metered,
        [usage_plans.metered],
        0,
    )
    [(old, new, reason)] = _placements(tenant)
    assert (old, new) == ("", f"usage plan {usage_plans.metered} (metered)")
    assert reason == f"key {key} added: plan metered"
    assert TenantChange.objects.get(tenant=tenant, field="usage_plan").source == "apigateway"


def test_a_plan_change_through_the_api_moves_the_key_out_of_the_old_usage_plan_into_the_new(
    usage_plans, placed, platform_client
):
    key = usage_plans.key()
    tenant = placed(
        lambda: tenant_create(name="Acme", external_id="cus_1", plan="metered", apigateway_key_id=key)
    )
    assert usage_plans.plans_of(key) == {usage_plans.metered}

    response = placed(lambda: platform_client.patch("/api/v1/tenants/cus_1", {"plan": "free"}, format="json"))

    assert response.status_code == 200, response.content
    assert usage_plans.plans_of(key) == {usage_plans.free}
    assert [(old, new) for old, new, _ in _placements(tenant)][1:] == [
        (f"usage plan {usage_plans.metered} (metered)", ""),
        ("", f"usage plan {usage_plans.free} (free)"),
    ]
    assert _placement(tenant).actual_plan_ids == [usage_plans.free]
    # Out first, then in: API Gateway refuses a key in two usage plans of one stage.
    moves = [op for op, _ in usage_plans.proxy.requests if op in ("DeleteUsagePlanKey", "CreateUsagePlanKey")]
    assert moves[-2:] == ["DeleteUsagePlanKey", "CreateUsagePlanKey"]


def test_placements_are_history_but_not_outgoing_webhooks_and_a_new_key_id_is(usage_plans, placed):
    key = usage_plans.key()
    tenant = placed(lambda: tenant_create(name="Acme", plan="free"))
    placed(lambda: tenant_update(tenant=tenant, apigateway_key_id=key, source="api"))
    assert usage_plans.plans_of(key) == {usage_plans.free}
    change = TenantChange.objects.get(tenant=tenant, field="apigateway_key")
    assert (change.old_value, change.new_value) == ("", key)
    published = [
        message.payload["data"].get("field")
        for message in WebhookMessage.objects.filter(type="tenant.updated")
    ]
    assert published == ["apigateway_key"]


def test_an_operator_plan_change_in_admin_moves_the_key(usage_plans, placed):
    key = usage_plans.key()
    tenant = placed(lambda: TenantFactory(slug="acme", plan="metered", apigateway_key_id=key))
    placed(lambda: usage_plan_place(tenant_id=tenant.pk))
    assert usage_plans.plans_of(key) == {usage_plans.metered}
    operator = get_user_model().objects.create_superuser("operator", "op@example.com", "pw-for-tests-only")
    client = Client()
    client.force_login(operator)
    data = {
        "name": tenant.name,
        "slug": tenant.slug,
        "plan": "free",
        "apigateway_key_id": key,
        "monthly_free_allowance": "0",
        "stripe_customer": "",
    }
    response = placed(lambda: client.post(f"/admin/tenants/tenant/{tenant.pk}/change/", data))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert usage_plans.plans_of(key) == {usage_plans.free}
    page = client.get(f"/admin/tenants/tenant/{tenant.pk}/change/").content.decode()
    assert f"in place: key {key} in usage plan {usage_plans.free} (free)" in page


def test_a_suspended_tenant_is_in_no_usage_plan_and_comes_back_when_reactivated(usage_plans, placed):
    key = usage_plans.key()
    tenant = placed(lambda: tenant_create(name="Acme", plan="metered", apigateway_key_id=key))
    placed(lambda: tenant_suspend(tenant=tenant, source="test"))
    assert usage_plans.plans_of(key) == set()
    assert _placement(tenant).desired_plan_id == ""
    assert _placements(tenant)[-1][2] == f"key {key} removed: tenant suspended"
    placed(lambda: tenant_reactivate(tenant=tenant, source="test"))
    assert usage_plans.plans_of(key) == {usage_plans.metered}


def test_a_replaced_key_id_takes_the_old_key_out_of_the_usage_plans(usage_plans, placed):
    old, new = usage_plans.key("old"), usage_plans.key("new")
    tenant = placed(lambda: tenant_create(name="Acme", plan="free", apigateway_key_id=old))
    placed(lambda: tenant_update(tenant=tenant, apigateway_key_id=new, source="api"))
    assert usage_plans.plans_of(old) == set()
    assert usage_plans.plans_of(new) == {usage_plans.free}
    assert _placement(tenant).key_id == new
    placed(lambda: tenant_update(tenant=tenant, apigateway_key_id=None, source="api"))
    assert usage_plans.plans_of(new) == set()
    assert not UsagePlanPlacement.objects.filter(tenant=tenant).exists()


def test_a_throttled_move_is_recorded_and_retried_with_backoff(usage_plans, placed):
    key = usage_plans.key()
    tenant = placed(lambda: tenant_create(name="Acme", plan="free", apigateway_key_id=key))
    # Two requests: one aws_call with its retries spent (support.usage_plans_start), then the task retries.
    usage_plans.proxy.fail_next(
        "CreateUsagePlanKey", 2, status=429, code="TooManyRequestsException", message="Too Many Requests"
    )
    placed(lambda: tenant_change_plan(tenant=tenant, plan="metered", source="evt_1"))
    assert usage_plans.plans_of(key) == {usage_plans.metered}
    assert len(usage_plans.requests("CreateUsagePlanKey")) == 4  # created, 2 throttled, created
    history = _placements(tenant)
    failure = next(reason for _, _, reason in history if reason.startswith("failed:"))
    assert "TooManyRequestsException" in failure
    assert history[-1][1:] == (
        f"usage plan {usage_plans.metered} (metered)",
        f"key {key} added: plan metered",
    )
    assert _placement(tenant).status == "in_place"


def test_a_key_that_does_not_exist_is_recorded_as_failed_and_not_retried(usage_plans, placed):
    tenant = placed(lambda: tenant_create(name="Acme", plan="free", apigateway_key_id="nokey12345"))
    placement = _placement(tenant)
    assert (placement.status, placement.attempts) == ("failed", 1)
    assert "NotFoundException" in placement.last_error
    assert len(usage_plans.requests("CreateUsagePlanKey")) == 1
    assert _placements(tenant)[-1][2].startswith("failed: CreateUsagePlanKey: NotFoundException")
    # The same failure again (the daily sync) is counted, not written to the history again.
    usage_plan_place(tenant_id=tenant.pk)
    assert _placement(tenant).attempts == 2
    assert len(_placements(tenant)) == 1


def test_a_tenant_without_a_key_id_or_without_configured_plans_is_left_alone(usage_plans, placed, settings):
    tenant = placed(lambda: tenant_create(name="Acme", plan="metered"))
    assert not UsagePlanPlacement.objects.exists()
    settings.APIGATEWAY_USAGE_PLAN_FREE = settings.APIGATEWAY_USAGE_PLAN_METERED = ""
    key = usage_plans.key()
    placed(lambda: tenant_update(tenant=tenant, apigateway_key_id=key, source="api"))
    assert not UsagePlanPlacement.objects.exists()
    assert usage_plans.requests("CreateUsagePlanKey") == []


@pytest.mark.parametrize("value", ["has space", "a" * 33, "key-1", 12, "abc\n"])
def test_a_bad_key_id_is_a_400_naming_the_field(usage_plans, platform_client, value):
    response = platform_client.post(
        "/api/v1/tenants", {"name": "Acme", "apigateway_key_id": value}, format="json"
    )
    assert response.status_code == 400, response.content
    assert "apigateway_key_id" in response.json()["error"]["fields"]
    assert not Tenant.objects.exists()


def test_a_key_id_of_another_tenant_is_refused(usage_plans, placed, platform_client):
    placed(lambda: tenant_create(name="Acme", apigateway_key_id="abc123"))
    other = placed(lambda: tenant_create(name="Other", external_id="cus_2"))
    response = platform_client.patch("/api/v1/tenants/cus_2", {"apigateway_key_id": "abc123"}, format="json")
    assert response.status_code == 400
    assert "another tenant" in response.json()["error"]["fields"]["apigateway_key_id"][0]
    other.refresh_from_db()
    assert other.apigateway_key_id is None


def test_create_tenant_takes_a_key_id(usage_plans, django_capture_on_commit_callbacks):
    key = usage_plans.key()
    with django_capture_on_commit_callbacks(execute=True):
        lines = run_command("create_tenant", "Acme", "--plan", "metered", "--apigateway-key-id", key)
    assert f"API Gateway key {key}" in lines[0]
    assert usage_plans.plans_of(key) == {usage_plans.metered}
