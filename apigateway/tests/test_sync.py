"""`sync_usage_plans` and its daily task: drift repaired, a second run changes nothing, one clear line
on errors; the admin's list of keys out of place and its "Sync now"."""

import pytest
from django.core.management import CommandError
from django.urls import reverse

from apigateway.models import UsagePlanPlacement
from apigateway.tasks import sync_usage_plans
from conftest import beat_task, free_port
from tenants.services import tenant_create
from tenants.tests.factories import TenantFactory
from tenants.tests.support import run_command

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme(usage_plans, placed):
    key = usage_plans.key()
    return placed(lambda: tenant_create(name="Acme", slug="acme", plan="metered", apigateway_key_id=key))


def test_sync_repairs_a_key_put_in_the_wrong_usage_plan_and_a_second_run_changes_nothing(usage_plans, acme):
    key = acme.apigateway_key_id
    usage_plans.put(key, usage_plans.free)  # by hand, at AWS
    assert usage_plans.plans_of(key) == {usage_plans.free, usage_plans.metered}

    lines = run_command("sync_usage_plans")

    assert lines == [
        f"acme: key {key} out of usage plan {usage_plans.free} (free) (plan metered)",
        "checked 1 tenant key(s): moved 1, failed 0, 0 already in place",
    ]
    assert usage_plans.plans_of(key) == {usage_plans.metered}
    writes = len(usage_plans.requests("DeleteUsagePlanKey")) + len(usage_plans.requests("CreateUsagePlanKey"))
    assert run_command("sync_usage_plans") == ["checked 1 tenant key(s): all in place, nothing changed"]
    again = len(usage_plans.requests("DeleteUsagePlanKey")) + len(usage_plans.requests("CreateUsagePlanKey"))
    assert again == writes


def test_sync_puts_back_a_key_removed_by_hand_and_a_dry_run_moves_nothing(usage_plans, acme):
    key = acme.apigateway_key_id
    usage_plans.client.delete_usage_plan_key(usagePlanId=usage_plans.metered, keyId=key)
    lines = run_command("sync_usage_plans", "--tenant", "acme", "--dry-run")
    assert (
        lines[0]
        == f"acme: would move key {key} into usage plan {usage_plans.metered} (metered) (plan metered)"
    )
    assert usage_plans.plans_of(key) == set()
    run_command("sync_usage_plans", "--tenant", "acme")
    assert usage_plans.plans_of(key) == {usage_plans.metered}
    assert UsagePlanPlacement.objects.get(tenant=acme).status == "in_place"


def test_the_daily_task_is_scheduled_and_repairs_drift(usage_plans, acme):
    assert beat_task("apigateway.sync_usage_plans").crontab.hour == "5"
    usage_plans.put(acme.apigateway_key_id, usage_plans.free)
    assert sync_usage_plans.run() == "checked 1 tenant key(s): moved 1, failed 0, 0 already in place"
    assert usage_plans.plans_of(acme.apigateway_key_id) == {usage_plans.metered}


def test_sync_without_usage_plans_says_so_in_one_line(db, settings):
    settings.APIGATEWAY_USAGE_PLAN_FREE = settings.APIGATEWAY_USAGE_PLAN_METERED = ""
    with pytest.raises(
        CommandError, match=r"^no API Gateway usage plans configured: set APIGATEWAY_USAGE_PLAN_FREE"
    ):
        run_command("sync_usage_plans")
    assert sync_usage_plans.run() == "not configured"


def test_sync_with_aws_unreachable_says_so_in_one_line(usage_plans, acme, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(
        CommandError, match=r"^API Gateway GetUsagePlanKeys \(\w+\): AWS not reachable"
    ) as error:
        run_command("sync_usage_plans")
    assert "\n" not in str(error.value)


def test_sync_of_a_tenant_without_a_key_id_is_refused(usage_plans):
    TenantFactory(slug="keyless")
    with pytest.raises(CommandError, match="tenant keyless has no API Gateway key id"):
        run_command("sync_usage_plans", "--tenant", "keyless")


def test_the_admin_lists_keys_out_of_place_and_syncs_them(usage_plans, acme, admin_client):
    key = acme.apigateway_key_id
    usage_plans.put(key, usage_plans.free)
    UsagePlanPlacement.objects.filter(tenant=acme).update(status="failed", last_error="boom")
    changelist = reverse("admin:apigateway_usageplanplacement_changelist")
    assert "acme" in admin_client.get(changelist, {"placement": "out"}).content.decode()
    placement = UsagePlanPlacement.objects.get(tenant=acme)
    response = admin_client.post(
        changelist, {"action": "sync_now", "_selected_action": [placement.pk]}, follow=True
    )
    assert response.status_code == 200
    assert f"key {key} out of usage plan {usage_plans.free} (free)" in response.content.decode()
    assert usage_plans.plans_of(key) == {usage_plans.metered}
    assert "acme" not in admin_client.get(changelist, {"placement": "out"}).content.decode()


def test_the_admin_says_when_placement_and_the_import_are_off(admin_client, settings):
    """Unconfigured, the lists are empty: the page says why instead of looking like "all in place"."""
    settings.APIGATEWAY_USAGE_PLAN_FREE = settings.APIGATEWAY_USAGE_PLAN_METERED = ""
    settings.APIGATEWAY_USAGE_METER = ""
    placements = admin_client.get(reverse("admin:apigateway_usageplanplacement_changelist"))
    assert "Placement is off: neither APIGATEWAY_USAGE_PLAN_FREE" in placements.content.decode()
    days = admin_client.get(reverse("admin:apigateway_apigatewayusageday_changelist"))
    assert "The import is off: it needs APIGATEWAY_USAGE_METER" in days.content.decode()


def test_the_admin_says_nothing_of_the_kind_when_configured(usage_plans, admin_client, settings):
    settings.APIGATEWAY_USAGE_METER = "api_requests"
    placements = admin_client.get(reverse("admin:apigateway_usageplanplacement_changelist"))
    assert "Placement is off" not in placements.content.decode()
    days = admin_client.get(reverse("admin:apigateway_apigatewayusageday_changelist"))
    assert "The import is off" not in days.content.decode()
