"""`tenant_change_listeners`: apps above tenants see every history row in its transaction."""

import pytest

from tenants.models import Tenant, TenantChange
from tenants.services import TenantError, tenant_change_listeners, tenant_change_plan, tenant_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def seen():
    rows: list[tuple[str, str, str]] = []
    tenant_change_listeners.register(
        "test", lambda change: rows.append((change.field, change.old_value, change.new_value))
    )
    yield rows
    tenant_change_listeners.unregister("test")


def test_a_listener_sees_every_recorded_change(seen):
    tenant = tenant_create(name="Acme", plan="free", apigateway_key_id="abc123")
    tenant_change_plan(tenant=tenant, plan="metered", source="test")
    assert seen == [("created", "", "free/active"), ("plan", "free", "metered")]


def test_a_listener_that_fails_rolls_the_change_back():
    def refuse(change):
        raise TenantError("no", field="plan")

    tenant_change_listeners.register("refuse", refuse)
    try:
        with pytest.raises(TenantError):
            tenant_create(name="Acme")
    finally:
        tenant_change_listeners.unregister("refuse")
    assert not Tenant.objects.exists()
    assert not TenantChange.objects.exists()
