"""`GET /api/v1/usage?group_by=`: usage per value of event properties, from raw events."""

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from freezegun import freeze_time

from metering.aggregation import usage_aggregate, usage_events_prune
from metering.tests.factories import MeterFactory
from tenants.tests.support import issue_key, key_client

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 21, 12, 30, tzinfo=UTC)
DAY = {"start": "2026-11-21T00:00:00Z", "end": "2026-11-22T00:00:00Z"}
H10, H11 = "2026-11-21T10:00:00Z", "2026-11-21T11:00:00Z"


@pytest.fixture(autouse=True)
def _frozen():
    with freeze_time(NOW):
        yield


def send(client, *events):
    body = {"events": [{"id": f"e{index}", **event} for index, event in enumerate(events)]}
    response = client.post("/api/v1/events", json.dumps(body), content_type="application/json")
    assert response.status_code == 202, response.json()


def at(time: str, day: int = 21) -> str:
    return f"2026-11-{day:02d}T{time}:00Z"


def get(client, **params):
    return client.get("/api/v1/usage", params)


def points(response) -> dict:
    """{(meter, start, (group values...)): (value, events)} of a 200 answer."""
    assert response.status_code == 200, response.json()
    return {
        (p["meter"], p["start"], tuple(p["group"].values())): (p["value"], p["events"])
        for p in response.json()["data"]
    }


# H10: eu 2 (user a) and 5 (b), us 3 (a), one without a region 4 (c); H11: eu 7 then 1 (both a).
REGION_EVENTS = [
    ("10:05", "2", {"region": "eu", "user": "a"}),
    ("10:20", "5", {"region": "eu", "user": "b"}),
    ("10:10", "3", {"region": "us", "user": "a"}),
    ("10:30", "4", {"user": "c"}),
    ("11:10", "7", {"region": "eu", "user": "a"}),
    ("11:50", "1", {"region": "eu", "user": "a"}),
]


@pytest.fixture
def region_meters(tenant_client):
    """One meter of each aggregation kind, each given REGION_EVENTS."""
    for kind in ("count", "sum", "max", "unique_count", "latest"):
        MeterFactory(code=kind, aggregation=kind, unique_property="user" if kind == "unique_count" else "")
    send(
        tenant_client,
        *(
            {"meter": kind, "timestamp": at(time), "quantity": quantity, "properties": properties}
            for kind in ("count", "sum", "max", "unique_count", "latest")
            for time, quantity, properties in REGION_EVENTS
        ),
    )


@pytest.mark.parametrize(
    ("kind", "hourly", "daily"),
    [
        ("count", {(H10, "eu"): "2", (H10, "us"): "1", (H10, None): "1", (H11, "eu"): "2"}, ("4", "1", "1")),
        ("sum", {(H10, "eu"): "7", (H10, "us"): "3", (H10, None): "4", (H11, "eu"): "8"}, ("15", "3", "4")),
        ("max", {(H10, "eu"): "5", (H10, "us"): "3", (H10, None): "4", (H11, "eu"): "7"}, ("12", "3", "4")),
        (
            "unique_count",
            {(H10, "eu"): "2", (H10, "us"): "1", (H10, None): "1", (H11, "eu"): "1"},
            ("3", "1", "1"),
        ),
        ("latest", {(H10, "eu"): "5", (H10, "us"): "3", (H10, None): "4", (H11, "eu"): "1"}, ("6", "3", "4")),
    ],
)
def test_each_aggregation_is_computed_per_hour_and_group_and_days_sum_their_hours(
    tenant_client, region_meters, kind, hourly, daily
):
    hours = points(get(tenant_client, meter=kind, group_by="region", **DAY))
    events = {(H10, "eu"): 2, (H10, "us"): 1, (H10, None): 1, (H11, "eu"): 2}
    assert hours == {
        (kind, start, (region,)): (value, events[start, region]) for (start, region), value in hourly.items()
    }
    days = points(get(tenant_client, meter=kind, group_by="region", granularity="day", **DAY))
    start = "2026-11-21T00:00:00Z"
    assert days == {
        (kind, start, ("eu",)): (daily[0], 4),
        (kind, start, ("us",)): (daily[1], 1),
        (kind, start, (None,)): (daily[2], 1),
    }


def test_points_come_in_meter_time_and_group_order_with_no_group_first(tenant_client, region_meters):
    data = get(tenant_client, meter="sum", group_by="region", **DAY).json()["data"]
    assert [(p["start"], p["group"]) for p in data] == [
        (H10, {"region": None}),
        (H10, {"region": "eu"}),
        (H10, {"region": "us"}),
        (H11, {"region": "eu"}),
    ]


def test_the_groups_add_up_to_the_ungrouped_aggregates_of_every_additive_meter(tenant_client, region_meters):
    usage_aggregate(trigger="test")
    for granularity in ("hour", "day"):
        ungrouped = points_ungrouped(get(tenant_client, granularity=granularity, **DAY))
        # Every meter at once: no `meter` parameter.
        grouped = points(get(tenant_client, granularity=granularity, group_by="region,user", **DAY))
        totals = defaultdict(lambda: [Decimal(0), 0])
        for (meter, start, _), (value, events) in grouped.items():
            totals[meter, start][0] += Decimal(value)
            totals[meter, start][1] += events
        for meter in ("count", "sum"):
            mine = {key: (str(value), events) for key, (value, events) in totals.items() if key[0] == meter}
            theirs = {key: value for key, value in ungrouped.items() if key[0] == meter}
            assert mine == theirs
            assert len(theirs) == (2 if granularity == "hour" else 1)


def points_ungrouped(response) -> dict:
    assert response.status_code == 200
    return {(p["meter"], p["start"]): (p["value"], p["events"]) for p in response.json()["data"]}


def test_meter_filters_apply_and_the_answer_includes_hours_not_yet_aggregated(tenant_client, tenant):
    MeterFactory(code="ok_calls", aggregation="count", filters={"status": ["200", "201"]})
    send(
        tenant_client,
        {"meter": "ok_calls", "timestamp": at("10:00"), "properties": {"status": 200, "region": "eu"}},
        {"meter": "ok_calls", "timestamp": at("10:01"), "properties": {"status": "201", "region": "eu"}},
        {"meter": "ok_calls", "timestamp": at("10:02"), "properties": {"status": 500, "region": "eu"}},
        {"meter": "ok_calls", "timestamp": at("12:10"), "properties": {"status": 200, "region": "us"}},
    )
    usage_aggregate(trigger="test")
    send(
        tenant_client,
        {"id": "late", "meter": "ok_calls", "timestamp": at("12:20"), "properties": {"status": 200}},
    )
    assert points(get(tenant_client, meter="ok_calls", group_by="region", **DAY)) == {
        ("ok_calls", H10, ("eu",)): ("2", 2),
        ("ok_calls", "2026-11-21T12:00:00Z", (None,)): ("1", 1),
        ("ok_calls", "2026-11-21T12:00:00Z", ("us",)): ("1", 1),
    }


def test_several_properties_nested_paths_and_values_compared_as_text(tenant_client, api_calls):
    send(
        tenant_client,
        {"meter": "api_calls", "timestamp": at("10:00"), "properties": {"usage": {"zone": "a"}, "code": 200}},
        {
            "meter": "api_calls",
            "timestamp": at("10:01"),
            "properties": {"usage": {"zone": "a"}, "code": "200"},
        },
        {
            "meter": "api_calls",
            "timestamp": at("10:02"),
            "properties": {"usage": {"zone": None}, "code": True},
        },
        {"meter": "api_calls", "timestamp": at("10:03"), "properties": {"usage": "flat", "code": 200}},
    )
    expected = {
        ("api_calls", H10, (None, "200")): ("1", 1),  # `usage` is not an object: no zone
        ("api_calls", H10, (None, "true")): ("1", 1),  # a JSON null is no value either
        ("api_calls", H10, ("a", "200")): ("2", 2),
    }
    repeated = get(tenant_client, group_by=["usage.zone", "code"], **DAY)
    assert points(repeated) == expected
    assert repeated.json()["data"][0]["group"] == {"usage.zone": None, "code": "200"}
    assert points(get(tenant_client, group_by="usage.zone,code", **DAY)) == expected
    assert points(get(tenant_client, group_by="$.usage.zone,code", **DAY)) == expected


def test_a_grouped_range_before_the_latest_prune_is_refused_naming_start_and_the_first_hour(
    tenant_client, api_calls
):
    later = NOW + timedelta(days=40)
    with freeze_time(later):
        # Cutoff 2026-11-25 00:00: a midnight, so SQLite (rows) and PostgreSQL (days) prune alike.
        usage_events_prune(older_than=timedelta(days=36, hours=12, minutes=30))
        response = get(
            tenant_client, group_by="region", start="2026-11-24T23:00:00Z", end="2026-12-01T00:00:00Z"
        )
        assert response.status_code == 400
        assert response.json()["error"]["fields"] == {
            "start": [
                "group_by reads raw events, kept from 2026-11-25T00:00:00Z on: start there or later, "
                "or read without group_by"
            ]
        }
        allowed = get(
            tenant_client, group_by="region", start="2026-11-25T00:00:00Z", end="2026-12-01T00:00:00Z"
        )
        assert allowed.status_code == 200
        by_day = get(tenant_client, group_by="region", granularity="day", start="2026-11-24T00:00:00Z")
        assert "kept from 2026-11-25T00:00:00Z on" in by_day.json()["error"]["fields"]["start"][0]
        # Without group_by the aggregates of those hours stay readable.
        assert get(tenant_client, start="2026-11-24T23:00:00Z", end="2026-12-01T00:00:00Z").status_code == 200


def test_without_a_prune_grouping_reaches_back_45_days(tenant_client, api_calls):
    old = get(tenant_client, group_by="region", start="2026-10-07T11:00:00Z", end="2026-10-20T00:00:00Z")
    assert old.status_code == 400
    assert "kept from 2026-10-07T13:00:00Z on" in old.json()["error"]["fields"]["start"][0]
    assert (
        get(
            tenant_client, group_by="region", start="2026-10-07T13:00:00Z", end="2026-10-20T00:00:00Z"
        ).status_code
        == 200
    )


@pytest.mark.parametrize(
    ("group_by", "message"),
    [
        ("", "not a property name"),
        ("re gion", "not a property name: re gion"),
        ("region,", "not a property name"),
        ("usage..zone", "not a property name"),
        ("region\n", "not a property name"),
        ("x" * 101, "not a property name"),
        ("a,b,c,d", "at most 3 properties"),
        (["a,b", "c", "d"], "at most 3 properties"),
        (["region", "region"], "names a property more than once"),
    ],
)
def test_bad_group_by_is_400_naming_it(tenant_client, api_calls, group_by, message):
    response = get(tenant_client, group_by=group_by)
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert list(fields) == ["group_by"]
    assert message in fields["group_by"][0]


def test_an_unknown_parameter_beside_group_by_is_still_refused(tenant_client, api_calls):
    response = get(tenant_client, group_by="region", groupBy="region")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"groupBy": ["unknown parameter"]}


def test_too_many_grouped_points_is_400_naming_group_by(tenant_client, region_meters, monkeypatch):
    monkeypatch.setattr("metering.grouping.MAX_GROUPED_ROWS", 3)
    response = get(tenant_client, meter="count", group_by="region", **DAY)
    assert response.status_code == 400
    assert "more than 3 grouped points" in response.json()["error"]["fields"]["group_by"][0]


def test_a_tenant_groups_only_its_own_events_and_a_platform_key_names_the_tenant(
    tenant_client, other_tenant, api_calls, platform_client
):
    send(tenant_client, {"meter": "api_calls", "timestamp": at("10:00"), "properties": {"region": "eu"}})
    send(
        key_client(issue_key(other_tenant)),
        *({"meter": "api_calls", "timestamp": at("10:00"), "properties": {"region": "eu"}} for _ in range(5)),
    )
    mine = {("api_calls", H10, ("eu",)): ("1", 1)}
    assert points(get(tenant_client, group_by="region", **DAY)) == mine
    assert points(get(platform_client, tenant="tenant-a", group_by="region", **DAY)) == mine
    theirs = points(get(platform_client, tenant="tenant-b", group_by="region", **DAY))
    assert theirs == {("api_calls", H10, ("eu",)): ("5", 5)}
    assert get(tenant_client, tenant="tenant-b", group_by="region", **DAY).status_code == 403
    assert list(get(platform_client, group_by="region", **DAY).json()["error"]["fields"]) == ["tenant"]


def test_the_schema_describes_group_by_and_the_group_of_a_point(client):
    spec = client.get("/api/schema/?format=json").json()
    operation = spec["paths"]["/api/v1/usage"]["get"]
    (parameter,) = [p for p in operation["parameters"] if p["name"] == "group_by"]
    assert (parameter["schema"]["type"], parameter["schema"]["maxItems"], parameter["explode"]) == (
        "array",
        3,
        True,
    )
    assert "kept 45 days" in operation["description"]
    point = spec["components"]["schemas"]["UsagePoint"]["properties"]["group"]
    assert point["additionalProperties"] == {"type": "string", "nullable": True}
