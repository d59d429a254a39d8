import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from freezegun import freeze_time
from rest_framework.test import APIClient

from conftest import run_at_once
from metering.models import Meter, PendingHour, UsageEvent
from metering.tests.factories import MeterFactory
from tenants.tests.support import issue_key

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 21, 12, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _frozen():
    with freeze_time(NOW):
        yield


def post(client, body, **extra):
    return client.post("/api/v1/events", json.dumps(body), content_type="application/json", **extra)


def event(n=1, **fields):
    return {"id": f"evt-{n}", "meter": "api_calls", **fields}


def test_single_event_is_stored_with_defaults(tenant_client, tenant, api_calls):
    response = post(tenant_client, event(1))
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "duplicates": 0}
    stored = UsageEvent.objects.get()
    assert (stored.tenant, stored.meter, stored.event_id) == (tenant, api_calls, "evt-1")
    assert stored.quantity == Decimal(1)
    assert stored.timestamp == NOW
    assert stored.properties == {}
    assert PendingHour.objects.filter(tenant=tenant, meter=api_calls, hour=NOW.replace(minute=0)).exists()


def test_batch_is_stored_exactly_and_a_resend_is_all_duplicates(tenant_client, storage):
    batch = {
        "events": [
            {"id": "a", "meter": "storage_gb", "quantity": 0.1, "timestamp": "2026-11-21T10:15:00Z"},
            {
                "id": "b",
                "meter": "storage_gb",
                "quantity": "2.000000000001",
                "timestamp": "2026-11-21T11:15:00+01:00",
                "properties": {"region": "eu", "n": 3},
            },
            {"id": "c", "meter": "storage_gb", "quantity": 123456789012345},
        ]
    }
    first = post(tenant_client, batch)
    assert first.status_code == 202
    assert first.json() == {"accepted": 3, "duplicates": 0}
    rows = {e.event_id: e for e in UsageEvent.objects.all()}
    assert rows["a"].quantity == Decimal("0.1")  # exact, not a binary float
    assert rows["b"].timestamp == datetime(2026, 11, 21, 10, 15, tzinfo=UTC)
    assert rows["b"].properties == {"region": "eu", "n": 3}
    if connection.vendor == "postgresql":
        # SQLite (the demo) keeps decimals as 64-bit floats: about 15 significant digits.
        assert rows["b"].quantity == Decimal("2.000000000001")
        assert rows["c"].quantity == Decimal("123456789012345")

    again = post(tenant_client, batch)
    assert again.status_code == 202
    assert again.json() == {"accepted": 0, "duplicates": 3}
    assert UsageEvent.objects.count() == 3


def test_awkward_ids_and_properties_round_trip_exactly(tenant_client, api_calls):
    awkward = ['quo"te', "back\\slash", "com,ma", "{brace}", "NULL", " sp ace ", "ünï©ødé", "new\nline"]
    properties = {"q": 'say "hi"', "b": "C:\\path\\", "nested": {"list": [1, "two", None]}, "e": "{,}"}
    batch = {"events": [event(0, id=i, properties=properties) for i in awkward]}
    assert post(tenant_client, batch).json() == {"accepted": len(awkward), "duplicates": 0}
    stored = {e.event_id: e.properties for e in UsageEvent.objects.all()}
    assert set(stored) == set(awkward)
    assert all(p == properties for p in stored.values())
    assert post(tenant_client, batch).json() == {"accepted": 0, "duplicates": len(awkward)}


def test_an_identical_repeat_of_an_id_within_a_batch_counts_once(tenant_client, api_calls):
    repeat = event(1, quantity="1.0", properties={"a": 1, "b": 2})
    same = event(1, quantity=1, properties={"b": 2, "a": 1})
    response = post(tenant_client, {"events": [repeat, same, event(2)]})
    assert response.json() == {"accepted": 2, "duplicates": 1}
    assert UsageEvent.objects.get(event_id="evt-1").quantity == 1


@pytest.mark.parametrize(
    "differs",
    [
        {"quantity": 5},
        {"timestamp": "2026-11-21T12:00:00Z"},
        {"properties": {"a": 2}},
        {"meter": "storage_gb"},
    ],
)
def test_the_same_id_twice_in_a_batch_with_different_content_is_refused_naming_both_indexes(
    tenant_client, api_calls, storage, differs
):
    response = post(
        tenant_client, {"events": [event(1, properties={"a": 1}), event(2), {**event(1), **differs}]}
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "events": {
            "2": {"id": ["events 0 and 2 have the same id with different content; an id names one event"]}
        }
    }
    assert UsageEvent.objects.count() == 0


def test_same_event_id_in_two_tenants_is_two_events(tenant_client, other_tenant, api_calls):
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {issue_key(other_tenant)}")
    assert post(tenant_client, event(1)).json()["accepted"] == 1
    assert post(other, event(1)).json()["accepted"] == 1
    assert UsageEvent.objects.filter(event_id="evt-1").count() == 2


def test_an_invalid_event_rejects_the_whole_batch_listing_each_problem(tenant_client, api_calls):
    batch = {
        "events": [
            event(1),
            event(2, quantity=-1),
            {"id": "", "meter": "nope", "timestamp": "yesterday", "properties": [1], "qty": 1},
            event(4),
        ]
    }
    response = post(tenant_client, batch)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["message"] == "2 event(s) are invalid; nothing of the batch was stored."
    assert error["fields"] == {
        "events": {
            "1": {"quantity": ["must not be negative"]},
            "2": {
                "qty": ["unknown field"],
                "id": ["is required: a non-empty string, unique per event"],
                "meter": ["unknown meter 'nope'"],
                "timestamp": ["must be an ISO-8601 string such as 2026-11-21T10:00:00Z"],
                "properties": ["must be an object"],
            },
        }
    }
    assert UsageEvent.objects.count() == 0
    assert PendingHour.objects.count() == 0


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"meter": "unknown"}, "meter", "unknown meter 'unknown'"),
        ({"meter": None}, "meter", "is required: the code of a meter"),
        ({"quantity": "abc"}, "quantity", "must be a decimal number"),
        ({"quantity": "NaN"}, "quantity", "must be a finite number"),
        ({"quantity": "Infinity"}, "quantity", "must be a finite number"),
        ({"quantity": -0.5}, "quantity", "must not be negative"),
        ({"quantity": True}, "quantity", "must be a number (or a string holding one)"),
        ({"quantity": [1]}, "quantity", "must be a number (or a string holding one)"),
        ({"quantity": "0.0000000000001"}, "quantity", "has more than 12 decimal places"),
        ({"quantity": "1e21"}, "quantity", "has more than 15 significant digits"),
        ({"quantity": 1234567890123456}, "quantity", "has more than 15 significant digits"),
        ({"quantity": "1234567890.123456"}, "quantity", "has more than 15 significant digits"),
        ({"quantity": None}, "quantity", "must be a number; omit the field for 1"),
        ({"timestamp": "2026-10-17T12:29:00Z"}, "timestamp", "is more than 35 days in the past"),
        ({"timestamp": "2026-11-21T12:36:00Z"}, "timestamp", "is more than 5 minutes in the future"),
        ({"timestamp": "2026-11-21T12:00:00"}, "timestamp", "must include a time zone offset"),
        ({"timestamp": 1763726400}, "timestamp", "must be an ISO-8601 string"),
        ({"properties": "x"}, "properties", "must be an object"),
        ({"properties": {"blob": "x" * 8200}}, "properties", "must be at most 8192 bytes as JSON"),
        ({"id": ""}, "id", "is required"),
        ({"id": "   "}, "id", "is required"),
        ({"id": 7}, "id", "is required"),
        ({"id": "x" * 101}, "id", "must be at most 100 characters"),
    ],
)
def test_each_limit_has_its_own_message(tenant_client, api_calls, fields, field, message):
    response = post(tenant_client, {**event(1), **fields})
    assert response.status_code == 400
    problems = response.json()["error"]["fields"]
    assert list(problems) == [field]
    assert message in problems[field][0]
    assert UsageEvent.objects.count() == 0


def test_limits_at_the_edges_are_accepted(tenant_client, api_calls):
    batch = {
        "events": [
            event(1, timestamp="2026-10-17T12:31:00Z"),  # just inside 35 days
            event(2, timestamp="2026-11-21T12:34:59Z"),  # just inside 5 minutes ahead
            event(3, quantity="999.999999999999"),  # 15 digits, 12 of them decimals
            event(5, quantity=999999999999999),  # 15 digits
            event(6, quantity="1.500000000000000000"),  # trailing zeros do not count
            {"id": "x" * 100, "meter": "api_calls", "properties": {"blob": "x" * 8000}},
        ]
    }
    response = post(tenant_client, batch)
    assert response.status_code == 202, response.json()
    assert response.json()["accepted"] == 6


def test_more_than_1000_events_is_refused(tenant_client, api_calls):
    response = post(tenant_client, {"events": [event(n) for n in range(1001)]})
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"events": ["holds 1001 events; the limit is 1000"]}


def test_exactly_1000_events_are_accepted(tenant_client, api_calls):
    response = post(tenant_client, {"events": [event(n) for n in range(1000)]})
    assert response.json() == {"accepted": 1000, "duplicates": 0}


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"events": []}, {"events": ["must hold at least one event"]}),
        ({"events": "x"}, {"events": ["must be a list of events"]}),
        ({"events": [event(1)], "extra": 1}, {"extra": ["unknown field"]}),
        ([event(1)], {"non_field_errors": ['expected an event object or {"events": [...]}']}),
    ],
)
def test_malformed_envelopes_are_400(tenant_client, api_calls, body, fields):
    response = post(tenant_client, body)
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == fields


def test_body_over_1_mib_is_413(tenant_client, api_calls):
    body = json.dumps({"events": [event(n, properties={"pad": "x" * 7000}) for n in range(160)]})
    assert len(body) > 1024 * 1024
    response = tenant_client.post("/api/v1/events", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert UsageEvent.objects.count() == 0


@pytest.mark.parametrize("declared", ["\u00b2", "9" * 5000, "99999999999"])
def test_a_content_length_that_is_not_a_small_ascii_number_is_never_a_500(tenant_client, api_calls, declared):
    body = json.dumps(event(1))
    response = tenant_client.post(
        "/api/v1/events", body, content_type="application/json", CONTENT_LENGTH=declared
    )
    assert response.status_code in {400, 413}


def test_not_json_is_400_and_other_media_types_415(tenant_client, api_calls):
    response = tenant_client.post("/api/v1/events", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"
    response = tenant_client.post("/api/v1/events", '{"quantity": NaN}', content_type="application/json")
    assert response.status_code == 400
    response = tenant_client.post("/api/v1/events", "id=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


@pytest.fixture(params=["locmem", "redis"])
def rate_cache(request, settings):
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": url,
                "KEY_PREFIX": f"test-{uuid.uuid4().hex}",
            }
        }
    return request.param


def test_per_key_rate_limit_answers_429_with_retry_after(tenant_client, api_calls, settings, rate_cache):
    settings.INGEST_RATE_LIMIT = "3/m"
    statuses = [post(tenant_client, event(n)).status_code for n in range(3)]
    assert statuses == [202, 202, 202]
    limited = post(tenant_client, event(99))
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "throttled"
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert not UsageEvent.objects.filter(event_id="evt-99").exists()


def test_rate_limit_is_per_key(tenant, tenant_client, api_calls, settings):
    settings.INGEST_RATE_LIMIT = "1/m"
    second = APIClient()
    second.credentials(HTTP_AUTHORIZATION=f"Api-Key {issue_key(tenant, name='second')}")
    assert post(tenant_client, event(1)).status_code == 202
    assert post(second, event(2)).status_code == 202
    assert post(tenant_client, event(3)).status_code == 429


def test_ingestion_needs_a_key(db, api_calls):
    assert post(APIClient(), event(1)).status_code == 401


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_concurrent_identical_batches_store_each_event_once(tenant_key, api_calls):
    batch = {"events": [event(n, timestamp=f"2026-11-21T{n % 12:02d}:00:00Z") for n in range(500)]}
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {tenant_key}")
    results = run_at_once(lambda: post(client, batch), 4)
    assert [r.status_code for r in results] == [202] * 4
    assert sum(r.json()["accepted"] for r in results) == 500
    assert sum(r.json()["duplicates"] for r in results) == 1500
    assert UsageEvent.objects.count() == 500
    assert PendingHour.objects.count() == 12


def test_openapi_documents_the_ingestion_endpoint(client):
    spec = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert "post" in spec["paths"]["/api/v1/events"]
    assert "get" in spec["paths"]["/api/v1/usage"]


def test_events_older_than_the_window_are_not_a_server_error(tenant_client, api_calls):
    old = (NOW - timedelta(days=400)).isoformat()
    assert post(tenant_client, event(1, timestamp=old)).status_code == 400


# --- bad input is a 400 naming the field, never a 500 (issue 10, "Trust") ---------------------


def post_raw(client, text: str):
    return client.post("/api/v1/events", text, content_type="application/json")


def test_quantity_with_16_significant_digits_is_refused_with_400(tenant_client, api_calls):
    response = post(tenant_client, event(1, quantity="123456789.1234567"))
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"quantity": ["has more than 15 significant digits"]}
    assert UsageEvent.objects.count() == 0


@pytest.mark.parametrize("quantity", ["1e1000000", "1E-1000000", "9" * 5000, "-1e999999999"])
def test_quantity_with_a_huge_exponent_or_length_is_refused_with_400(tenant_client, api_calls, quantity):
    response = post(tenant_client, event(1, quantity=quantity))
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["quantity"]


def test_a_json_number_quantity_with_a_huge_exponent_is_refused_with_400(tenant_client, api_calls):
    response = post_raw(tenant_client, '{"id": "e", "meter": "api_calls", "quantity": 1e1000000}')
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["quantity"]


def test_explicit_null_quantity_is_refused_while_an_omitted_one_counts_1(tenant_client, api_calls):
    response = post(tenant_client, {"events": [event(1), event(2, quantity=None)]})
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "events": {"1": {"quantity": ["must be a number; omit the field for 1"]}}
    }
    assert post(tenant_client, event(1)).status_code == 202
    assert UsageEvent.objects.get().quantity == 1


@pytest.mark.parametrize(
    "timestamp",
    [
        "9999-12-31T23:00:00-05:00",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59.999999-23:59",
        "2101-01-01T00:00:00Z",
    ],
)
def test_timestamps_near_the_ends_of_the_calendar_are_refused_with_400(tenant_client, api_calls, timestamp):
    response = post(tenant_client, event(1, timestamp=timestamp))
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"timestamp": ["must be between 2000-01-01 and 2100-12-31"]}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ('{"id": "a\\ud800", "meter": "api_calls"}', "id", "unpaired surrogates"),
        ('{"id": "a", "meter": "api_calls\\udfff"}', "meter", "unpaired surrogates"),
        (
            '{"id": "a", "meter": "api_calls", "properties": {"k": "\\ud83d"}}',
            "properties",
            "unpaired surrogates",
        ),
        (
            '{"id": "a", "meter": "api_calls", "properties": {"\\ud83d": 1}}',
            "properties",
            "unpaired surrogates",
        ),
        (
            '{"id": "a", "meter": "api_calls", "properties": {"k": [{"x": ["\\udc00"]}]}}',
            "properties",
            "surrogates",
        ),
        ('{"id": "a\\u0000b", "meter": "api_calls"}', "id", "NUL"),
        ('{"id": "a", "meter": "\\u0000"}', "meter", "NUL"),
        ('{"id": "a", "meter": "api_calls", "properties": {"k": "\\u0000"}}', "properties", "NUL"),
        ('{"id": "a", "meter": "api_calls", "properties": {"a\\u0000": {"b": 1}}}', "properties", "NUL"),
        ('{"id": "a", "meter": "api_calls", "properties": {"k": {"l": ["x\\u0000"]}}}', "properties", "NUL"),
    ],
)
def test_lone_surrogates_and_nul_in_any_string_are_refused_with_400_naming_the_field(
    tenant_client, api_calls, body, field, message
):
    response = post_raw(tenant_client, body)
    assert response.status_code == 400
    problems = response.json()["error"]["fields"]
    assert list(problems) == [field]
    assert message in problems[field][0]
    assert UsageEvent.objects.count() == 0


def test_an_unknown_field_named_with_a_lone_surrogate_is_refused_with_400(tenant_client, api_calls):
    response = post_raw(tenant_client, '{"id": "a", "meter": "api_calls", "\\ud800": 1}')
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"'\\ud800'": ["unknown field"]}


def test_properties_nested_deeper_than_20_levels_are_refused_with_400(tenant_client, api_calls):
    def nested(levels):
        value = {}
        for _ in range(levels - 1):
            value = {"k": value}
        return value

    assert post(tenant_client, event(1, properties=nested(20))).status_code == 202
    response = post(tenant_client, event(2, properties=nested(21)))
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"properties": ["is nested more than 20 levels deep"]}


@pytest.mark.parametrize("where", ["properties", "quantity", "envelope"])
def test_a_body_nested_100k_levels_deep_is_a_400_not_a_recursion_error(tenant_client, api_calls, where):
    deep = "[" * 100_000 + "]" * 100_000
    body = {
        "properties": '{"id": "a", "meter": "api_calls", "properties": {"k": %s}}',
        "quantity": '{"id": "a", "meter": "api_calls", "quantity": %s}',
        "envelope": '{"events": %s}',
    }[where] % deep
    response = post_raw(tenant_client, body)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "parse_error",
        "message": "The body is nested too deeply (at most 32 levels of objects and arrays).",
    }
    assert UsageEvent.objects.count() == 0


def test_events_that_would_bring_an_hour_past_what_stripe_can_bill_are_refused_with_400(
    tenant_client, storage
):
    # 100 events of Stripe's largest value fill the hour (the outbox sends at most 100 parts)...
    top = "999999999999999"
    full = {"events": [{"id": f"big-{n}", "meter": "storage_gb", "quantity": top} for n in range(100)]}
    assert post(tenant_client, full).status_code == 202
    # ...one more unit in that hour, even in another batch, cannot be billed: refused, nothing stored.
    response = post(tenant_client, {"events": [event(1, meter="storage_gb"), event(2, meter="storage_gb")]})
    assert response.status_code == 202  # small batches are not checked (bounded by the rate limit)
    response = post(tenant_client, {"events": [{"id": "one-more", "meter": "storage_gb", "quantity": top}]})
    assert response.status_code == 400
    message = response.json()["error"]["fields"]["events"]["0"]["quantity"][0]
    assert "more than Stripe can bill" in message
    assert "2026-11-21T12:00Z" in message
    assert not UsageEvent.objects.filter(event_id="one-more").exists()
    # The next hour has room.
    next_hour = {"id": "next", "meter": "storage_gb", "quantity": top, "timestamp": "2026-11-21T11:10:00Z"}
    assert post(tenant_client, next_hour).status_code == 202


def test_large_quantities_of_a_max_meter_are_not_summed_against_the_hour(tenant_client, tenant, db):
    MeterFactory(code="peak_gb", name="Peak", aggregation=Meter.Aggregation.MAX)
    top = "999999999999999"
    batch = {"events": [{"id": f"p-{n}", "meter": "peak_gb", "quantity": top} for n in range(101)]}
    assert post(tenant_client, batch).status_code == 202
