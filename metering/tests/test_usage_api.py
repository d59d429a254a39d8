from datetime import UTC, datetime
from decimal import Decimal

import pytest
from freezegun import freeze_time
from rest_framework.test import APIClient

from metering.tests.factories import HourlyAggregateFactory
from tenants.tests.support import issue_key

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 21, 12, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _frozen():
    with freeze_time(NOW):
        yield


def hour(day: int, h: int) -> datetime:
    return datetime(2026, 11, day, h, tzinfo=UTC)


@pytest.fixture
def usage(tenant, other_tenant, api_calls, storage):
    rows = [
        (tenant, api_calls, hour(20, 23), "5", 5),
        (tenant, api_calls, hour(21, 10), "3", 3),
        (tenant, api_calls, hour(21, 11), "4", 4),
        (tenant, storage, hour(21, 10), "2.5", 2),
        (other_tenant, api_calls, hour(21, 10), "1000", 1000),
    ]
    for t, meter, h, value, count in rows:
        HourlyAggregateFactory(tenant=t, meter=meter, hour=h, value=Decimal(value), event_count=count)


def get(client, **params):
    return client.get("/api/v1/usage", params)


def test_hourly_usage_of_one_meter(tenant_client, usage):
    response = get(tenant_client, meter="api_calls", start="2026-11-21T00:00:00Z", end="2026-11-22T00:00:00Z")
    assert response.status_code == 200
    body = response.json()
    assert body["granularity"] == "hour"
    assert (body["start"], body["end"]) == ("2026-11-21T00:00:00Z", "2026-11-22T00:00:00Z")
    assert body["data"] == [
        {"meter": "api_calls", "start": "2026-11-21T10:00:00Z", "value": "3", "events": 3},
        {"meter": "api_calls", "start": "2026-11-21T11:00:00Z", "value": "4", "events": 4},
    ]


def test_daily_usage_sums_hours_per_utc_day_for_every_meter(tenant_client, usage):
    body = get(
        tenant_client, granularity="day", start="2026-11-20T00:00:00Z", end="2026-11-22T00:00:00Z"
    ).json()
    assert body["data"] == [
        {"meter": "api_calls", "start": "2026-11-20T00:00:00Z", "value": "5", "events": 5},
        {"meter": "api_calls", "start": "2026-11-21T00:00:00Z", "value": "7", "events": 7},
        {"meter": "storage_gb", "start": "2026-11-21T00:00:00Z", "value": "2.5", "events": 2},
    ]


def test_default_range_is_the_last_24_hours(tenant_client, usage):
    body = get(tenant_client).json()
    assert (body["start"], body["end"]) == ("2026-11-20T13:00:00Z", "2026-11-21T13:00:00Z")
    assert [point["value"] for point in body["data"] if point["meter"] == "api_calls"] == ["5", "3", "4"]


def test_a_tenant_never_sees_another_tenants_usage(other_tenant, usage):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {issue_key(other_tenant)}")
    body = get(client, meter="api_calls").json()
    assert [p["value"] for p in body["data"]] == ["1000"]


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"meter": "nope"}, "meter", "unknown meter"),
        ({"granularity": "week"}, "granularity", "is not a valid choice"),
        ({"start": "yesterday"}, "start", "must be an ISO-8601 string"),
        ({"start": "2026-11-21T10:00:00Z", "end": "2026-11-21T09:00:00Z"}, "end", "must be after start"),
        ({"start": "2026-09-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"}, "start", "at most 31 days"),
    ],
)
def test_bad_queries_name_the_field(tenant_client, usage, params, field, message):
    response = get(tenant_client, **params)
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert message in str(fields[field])


def test_usage_needs_a_key(db):
    assert APIClient().get("/api/v1/usage").status_code == 401


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"end": "9999-12-31T23:30:00Z"}, "end", "must be between 2000-01-01 and 2100-12-31"),
        ({"start": "0001-01-01T00:00:00Z"}, "start", "must be between 2000-01-01 and 2100-12-31"),
        ({"start": "9999-12-31T23:00:00-05:00"}, "start", "must be between"),
        ({"end": "9999-12-31T00:00:00Z", "granularity": "day"}, "end", "must be between"),
        ({"end": "2026-11-21T10:00:00"}, "end", "must include a time zone offset"),
        ({"start": "2026-11-21T10:00:00\x00Z"}, "start", "must be an ISO-8601 string"),
        ({"meter": "api\x00calls"}, "meter", "Null characters are not allowed"),
        ({"meter": "x" * 101}, "meter", "no more than 100 characters"),
    ],
)
def test_out_of_range_and_garbage_query_parameters_are_400_naming_the_field(
    tenant_client, usage, params, field, message
):
    response = get(tenant_client, **params)
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert list(fields) == [field]
    assert message in fields[field][0]


def test_the_last_hour_of_2100_can_still_be_read(tenant_client, usage):
    response = get(tenant_client, start="2100-12-31T00:00:00Z", end="2100-12-31T23:30:00Z")
    assert response.status_code == 200
    assert response.json()["end"] == "2101-01-01T00:00:00Z"


def test_unknown_or_empty_query_parameters_are_refused_not_ignored(tenant_client, usage):
    response = tenant_client.get("/api/v1/usage?metre=api_calls&=true")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"": ["unknown parameter"], "metre": ["unknown parameter"]}
    response = tenant_client.get("/api/v1/usage?start=")
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["start"]
