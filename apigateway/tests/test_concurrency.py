"""A placement holds its tenant's row while it talks to AWS; a plan change meanwhile does not wait."""

import threading

import pytest
from django.db import connection, transaction

from apigateway import services
from apigateway.models import UsagePlanPlacement
from apigateway.tests.factories import UsagePlanPlacementFactory
from tenants.models import Tenant
from tenants.services import tenant_change_plan
from tenants.tests.factories import TenantFactory


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_plan_change_does_not_wait_for_a_running_placement(settings, monkeypatch):
    settings.APIGATEWAY_USAGE_PLAN_FREE, settings.APIGATEWAY_USAGE_PLAN_METERED = "free01", "metered01"
    queued = []
    monkeypatch.setattr(
        services, "usage_plan_placement_enqueue", lambda *, tenant_id: queued.append(tenant_id)
    )
    tenant = TenantFactory(slug="acme", plan="free", apigateway_key_id="abc123")
    UsagePlanPlacementFactory(tenant=tenant, key_id="abc123", desired_plan_id="free01")
    locked, release = threading.Event(), threading.Event()
    timed_out = []

    def placement_running():
        try:
            with transaction.atomic():
                UsagePlanPlacement.objects.select_for_update().get(tenant=tenant)
                locked.set()
                # Released by the test once the change has returned; a change that waited for this
                # row would only return after this times out.
                timed_out.append(not release.wait(10))
        finally:
            connection.close()

    thread = threading.Thread(target=placement_running)
    thread.start()
    assert locked.wait(10)
    try:
        assert tenant_change_plan(tenant=tenant, plan="metered", source="test")
    finally:
        release.set()
        thread.join()

    assert timed_out == [False]
    assert Tenant.objects.get(pk=tenant.pk).plan == "metered"
    assert queued == [tenant.pk]  # the placement after commit re-checks
