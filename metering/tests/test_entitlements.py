"""GET /api/v1/entitlements: plan, status and, on the free plan, what is left of the allowance."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from freezegun import freeze_time

from metering.entitlements import tenant_entitlements
from metering.estimates import month_bounds
from metering.tests.factories import HourlyAggregateFactory
from tenants.models import Tenant

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 21, 12, 30, tzinfo=UTC)
URL = "/api/v1/entitlements"


@pytest.fixture(autouse=True)
def _frozen():
    with freeze_time(NOW):
        yield


def _hour(month: int, day: int, h: int) -> datetime:
    return datetime(2026, month, day, h, tzinfo=UTC)


@pytest.fixture
def usage(tenant, other_tenant, api_calls, storage):
    rows = [
        (tenant, api_calls, _hour(10, 31, 23), "500"),  # last month: not counted
        (tenant, api_calls, _hour(11, 1, 0), "300"),
        (tenant, api_calls, _hour(11, 21, 11), "450.5"),
        (tenant, storage, _hour(11, 21, 10), "1200"),  # over the allowance
        (other_tenant, api_calls, _hour(11, 21, 10), "999"),  # another tenant's
    ]
    for who, meter, hour, value in rows:
        HourlyAggregateFactory(tenant=who, meter=meter, hour=hour, value=Decimal(value), event_count=1)


def _switch_to_free_plan(tenant, allowance="1000"):
    Tenant.objects.filter(pk=tenant.pk).update(
        plan=Tenant.Plan.FREE, monthly_free_allowance=Decimal(allowance)
    )


def test_a_free_tenant_sees_what_is_left_of_its_allowance(tenant, tenant_client, usage):
    _switch_to_free_plan(tenant)
    response = tenant_client.get(URL)
    assert response.status_code == 200
    assert response.json() == {
        "plan": "free",
        "status": "active",
        "limited": True,
        "period": {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"},
        "meters": [
            {
                "meter": "api_calls",
                "unit": "call",
                "used": "750.5",
                "allowance": "1000",
                "limit": None,
                "at_limit": None,
                "remaining": "249.5",
                "exhausted": False,
                "has_access": True,
            },
            {
                "meter": "storage_gb",
                "unit": "GB",
                "used": "1200",
                "allowance": "1000",
                "limit": None,
                "at_limit": None,
                "remaining": "0",
                "exhausted": True,
                "has_access": True,
            },
        ],
    }


def test_a_metered_tenant_is_not_limited(tenant, tenant_client, usage):
    body = tenant_client.get(URL).json()
    assert body["plan"] == "metered"
    assert body["limited"] is False
    assert body["meters"] == [
        {
            "meter": "api_calls",
            "unit": "call",
            "used": "750.5",
            "allowance": None,
            "limit": None,
            "at_limit": None,
            "remaining": None,
            "exhausted": False,
            "has_access": True,
        },
        {
            "meter": "storage_gb",
            "unit": "GB",
            "used": "1200",
            "allowance": None,
            "limit": None,
            "at_limit": None,
            "remaining": None,
            "exhausted": False,
            "has_access": True,
        },
    ]


def test_a_meter_without_usage_has_its_whole_allowance(tenant, api_calls):
    _switch_to_free_plan(tenant, "10")
    tenant.refresh_from_db()
    [item] = tenant_entitlements(tenant=tenant).meters
    assert (item.used, item.remaining) == (Decimal(0), Decimal(10))


def test_each_tenant_sees_only_its_own_usage(other_tenant, usage):
    from rest_framework.test import APIClient

    from tenants.tests.support import issue_key

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {issue_key(other_tenant)}")
    meters = {m["meter"]: m["used"] for m in client.get(URL).json()["meters"]}
    assert meters == {"api_calls": "999", "storage_gb": "0"}


def test_the_month_of_december_ends_in_january():
    assert month_bounds(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


def test_it_needs_an_api_key(api_client):
    assert api_client.get(URL).status_code == 401


def test_the_schema_describes_entitlements(client):
    schema = client.get("/api/schema/?format=json").json()
    assert "200" in schema["paths"]["/api/v1/entitlements"]["get"]["responses"]
