"""GET /api/v1/entitlements/{meter} (and the all-meters list), minutes fresh: the month's aggregates
plus the events of hours not aggregated yet, never both for one hour; the plan's per-meter allowance
and limit; has_access; who may read what. Percent thresholds and estimates on the same allowance."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from freezegun import freeze_time

from metering.aggregation import usage_aggregate
from metering.allowances import plan_allowance_set
from metering.estimates import tenant_month_estimate
from metering.models import HourlyAggregate, PendingHour
from metering.tests.factories import HourlyAggregateFactory, MeterFactory, PriceFactory
from metering.thresholds import usage_threshold_create
from outbound.models import WebhookMessage
from tenants.models import Tenant
from tenants.tests.factories import TenantFactory
from tenants.tests.support import issue_key, issue_platform_key, key_client

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 21, 12, 30, tzinfo=UTC)
URL = "/api/v1/entitlements/api_calls"


@pytest.fixture(autouse=True)
def _frozen():
    with freeze_time(NOW):
        yield


@pytest.fixture
def free(db):
    return TenantFactory(slug="free-co", external_id="sub_free", plan=Tenant.Plan.FREE)


@pytest.fixture
def free_client(free):
    return key_client(issue_key(free))


def send(client, *events):
    response = client.post("/api/v1/events", {"events": list(events)}, format="json")
    assert response.status_code == 202, response.content
    return response


def calls(*ids, at: datetime = NOW, **fields):
    return [{"id": i, "meter": "api_calls", "timestamp": at.isoformat(), **fields} for i in ids]


def test_events_of_the_current_unaggregated_hour_count_at_once(free, free_client, api_calls):
    plan_allowance_set(plan="free", meter=api_calls, included=Decimal(100))
    HourlyAggregateFactory(tenant=free, meter=api_calls, hour=NOW.replace(day=3, hour=0, minute=0), value=40)
    send(free_client, *calls("a", "b", "c"))
    assert PendingHour.objects.filter(tenant=free).exists()  # not aggregated

    response = free_client.get(URL)

    assert response.status_code == 200
    assert response.json() == {
        "meter": "api_calls",
        "has_access": True,
        "usage": "43",
        "allowance": "100",
        "limit": None,
        "remaining": "57",
        "period_start": "2026-11-01T00:00:00Z",
        "period_end": "2026-12-01T00:00:00Z",
        "at_limit": None,
    }


def test_an_hour_pending_again_after_aggregation_counts_its_events_once(free, free_client, api_calls):
    send(free_client, *calls("a", "b", "c"))
    usage_aggregate(trigger="test")
    assert HourlyAggregate.objects.get(tenant=free).value == 3
    assert free_client.get(URL).json()["usage"] == "3"

    # Late events: the hour is pending again while its aggregate of 3 stands.
    send(free_client, *calls("d", "e", at=NOW - timedelta(minutes=20)))
    assert PendingHour.objects.filter(tenant=free).count() == 1
    assert free_client.get(URL).json()["usage"] == "5"

    usage_aggregate(trigger="test")
    assert free_client.get(URL).json()["usage"] == "5"


def test_pending_hours_use_the_meters_own_aggregation_and_filters(free, free_client):
    MeterFactory(code="tokens", aggregation="sum", filters={"model": ["big"]})
    peak = MeterFactory(code="peak", aggregation="max")
    send(
        free_client,
        {"id": "t1", "meter": "tokens", "quantity": "2.5", "properties": {"model": "big"}},
        {"id": "t2", "meter": "tokens", "quantity": "100", "properties": {"model": "small"}},
        {"id": "p1", "meter": "peak", "quantity": "7"},
        {"id": "p2", "meter": "peak", "quantity": "3", "timestamp": (NOW - timedelta(hours=2)).isoformat()},
    )
    HourlyAggregateFactory(tenant=free, meter=peak, hour=NOW.replace(day=2, hour=5, minute=0), value=4)

    assert free_client.get("/api/v1/entitlements/tokens").json()["usage"] == "2.5"
    # A max meter's hourly maxima add up over the month, as they are billed: 4 + 7 + 3.
    assert free_client.get("/api/v1/entitlements/peak").json()["usage"] == "14"


def test_has_access_flips_at_a_refusing_limit_and_remaining_follows_the_limit(free, free_client, api_calls):
    plan_allowance_set(
        plan="free", meter=api_calls, included=Decimal(2), hard_limit=Decimal(4), at_limit="refuse"
    )
    send(free_client, *calls("a", "b", "c"))
    body = free_client.get(URL).json()
    assert (body["has_access"], body["allowance"], body["limit"], body["remaining"], body["at_limit"]) == (
        True,
        "2",
        "4",
        "1",
        "refuse",
    )

    send(free_client, *calls("d"))
    body = free_client.get(URL).json()
    assert (body["has_access"], body["usage"], body["remaining"]) == (False, "4", "0")

    # Report only: past the limit, still access; remaining never negative.
    plan_allowance_set(
        plan="free", meter=api_calls, included=Decimal(2), hard_limit=Decimal(4), at_limit="report"
    )
    send(free_client, *calls("e"))
    body = free_client.get(URL).json()
    assert (body["has_access"], body["usage"], body["remaining"], body["at_limit"]) == (
        True,
        "5",
        "0",
        "report",
    )


def test_a_metered_tenant_without_a_plan_row_has_no_allowance_and_no_remaining(tenant_client, api_calls):
    body = tenant_client.get(URL).json()
    assert (body["allowance"], body["limit"], body["remaining"], body["has_access"]) == (
        None,
        None,
        None,
        True,
    )


def test_another_tenants_events_never_count(free, free_client, api_calls, tenant, tenant_client):
    send(tenant_client, *calls("x", "y"))
    HourlyAggregateFactory(tenant=tenant, meter=api_calls, hour=NOW.replace(day=2, minute=0), value=50)
    send(free_client, *calls("a"))
    assert free_client.get(URL).json()["usage"] == "1"
    assert tenant_client.get(URL).json()["usage"] == "52"
    # A tenant key may name only its own tenant.
    assert free_client.get(URL, {"tenant": tenant.slug}).status_code == 403
    assert free_client.get(URL, {"tenant": "sub_free"}).status_code == 200


def test_a_platform_key_names_the_tenant_and_sees_a_suspended_one_without_access(free, api_calls):
    reader = key_client(issue_platform_key("usage:read"))
    assert reader.get(URL, {"tenant": "sub_free"}).json()["has_access"] is True
    Tenant.objects.filter(pk=free.pk).update(status=Tenant.Status.SUSPENDED)
    assert reader.get(URL, {"tenant": "free-co"}).json()["has_access"] is False
    listed = reader.get("/api/v1/entitlements", {"tenant": "free-co"}).json()
    assert listed["status"] == "suspended"
    assert [m["has_access"] for m in listed["meters"]] == [False]

    missing = reader.get(URL)
    assert missing.status_code == 400
    assert "tenant" in missing.json()["error"]["fields"]
    assert reader.get(URL, {"tenant": "nobody"}).status_code == 404
    writer = key_client(issue_platform_key("events:write"))
    assert writer.get(URL, {"tenant": "sub_free"}).status_code == 403


def test_an_unknown_meter_is_a_404_naming_it_and_unknown_parameters_a_400(free_client, api_calls):
    response = free_client.get("/api/v1/entitlements/nope")
    assert response.status_code == 404
    assert "nope" in response.json()["error"]["message"]
    bad = free_client.get(URL, {"metre": "x"})
    assert bad.status_code == 400
    assert bad.json()["error"]["fields"] == {"metre": ["unknown parameter"]}


def test_the_list_counts_fresh_usage_with_each_meters_allowance_and_limit(
    free, free_client, api_calls, storage
):
    Tenant.objects.filter(pk=free.pk).update(monthly_free_allowance=Decimal(10))
    plan_allowance_set(
        plan="free", meter=api_calls, included=Decimal(2), hard_limit=Decimal(3), at_limit="refuse"
    )
    send(free_client, *calls("a", "b", "c"), {"id": "s", "meter": "storage_gb", "quantity": "4"})

    body = free_client.get("/api/v1/entitlements").json()

    assert body["limited"] is True
    assert body["meters"] == [
        {
            "meter": "api_calls",
            "unit": "call",
            "used": "3",
            "allowance": "2",
            "limit": "3",
            "at_limit": "refuse",
            "remaining": "0",
            "exhausted": True,
            "has_access": False,
        },
        {
            "meter": "storage_gb",
            "unit": "GB",
            "used": "4",
            "allowance": "10",  # no row for storage: the free plan's monthly free allowance
            "limit": None,
            "at_limit": None,
            "remaining": "6",
            "exhausted": False,
            "has_access": True,
        },
    ]


def test_the_schema_types_the_meter_entitlement(client):
    schema = client.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/entitlements/{meter}"]["get"]
    assert {"200", "404"} <= set(operation["responses"])
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    component = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(component["properties"]) == {
        "meter",
        "has_access",
        "usage",
        "allowance",
        "limit",
        "remaining",
        "period_start",
        "period_end",
        "at_limit",
    }


# --- the same allowance for thresholds and estimates -----------------------------------------------


def test_a_percent_threshold_is_of_the_plans_per_meter_allowance_and_counts_fresh_usage(api_calls, tenant):
    plan_allowance_set(plan="metered", meter=api_calls, included=Decimal(200))
    usage_threshold_create(tenant=tenant, meter=api_calls, kind="percent_of_allowance", value=Decimal(50))
    client = key_client(issue_key(tenant))
    send(client, *calls(*[f"e{n}" for n in range(99)], at=NOW - timedelta(hours=1)))
    usage_aggregate(trigger="test")
    assert not WebhookMessage.objects.filter(type="usage.threshold_crossed").exists()

    send(client, *calls("e99", at=NOW - timedelta(hours=1)))
    usage_aggregate(trigger="test")

    [message] = WebhookMessage.objects.filter(type="usage.threshold_crossed")
    assert message.payload["data"]["threshold"]["units"] == "100"
    assert message.payload["data"]["usage"] == "100"


def test_the_estimate_applies_each_meters_own_allowance(free, api_calls, storage):
    Tenant.objects.filter(pk=free.pk).update(monthly_free_allowance=Decimal(5))
    free.refresh_from_db()
    plan_allowance_set(plan="free", meter=api_calls, included=Decimal(30))
    for meter in (api_calls, storage):
        PriceFactory(meter=meter, plan="free", unit_amount=Decimal(1))
        HourlyAggregateFactory(tenant=free, meter=meter, hour=NOW.replace(day=2, minute=0), value=40)

    estimates = {e.meter.code: e for e in tenant_month_estimate(tenant=free)}

    assert (estimates["api_calls"].free_allowance_applied, estimates["api_calls"].billable) == (30, 10)
    assert (estimates["storage_gb"].free_allowance_applied, estimates["storage_gb"].billable) == (5, 35)
