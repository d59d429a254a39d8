"""POST /api/v1/events reads the usual bodies through msgspec (metering.ingest.events_body_decode,
_validate_typed) and everything else through the general checks: both must answer alike, byte for
byte where it shows (stored values, properties text, error bodies)."""

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from freezegun import freeze_time

from core.json_input import json_loads_exact, json_loads_exact_fast
from metering import ingest
from metering.models import UsageEvent
from metering.tests.factories import MeterFactory

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 21, 12, 30, tzinfo=UTC)
LIMIT = ingest.MAX_PROPERTIES_BYTES


@pytest.fixture(autouse=True)
def _frozen():
    with freeze_time(NOW):
        yield


def post_raw(client, text: str | bytes):
    return client.post("/api/v1/events", text, content_type="application/json")


def usual(n: int, **fields) -> dict:
    """An event as most clients send it: whole quantity, Z timestamp, flat properties."""
    return {
        "id": f"u-{n}",
        "meter": "api_calls",
        "quantity": 1,
        "timestamp": f"2026-11-21T12:{n % 30:02d}:00.250Z",
        "properties": {"path": "/x", "status": 200},
        **fields,
    }


@pytest.fixture
def general_path_refused(monkeypatch):
    """Fails the test if a body the fast path settles is read a second time by the general path."""

    def refuse(self):
        raise AssertionError("the general path read a body the fast path should have settled")

    monkeypatch.setattr(ingest.EventsBody, "payload", refuse)


BODIES = [
    b'{"a": 0.1, "b": [1, 2.50, -0.0, 1e400, 1E-7], "c": 123456789012345678901234567890}',
    b'{"a": 1, "a": 2}',
    b'{"a": "\\ud800"}',
    b'{"a": "\\u0000 \\u00e9 \\ud83d\\ude00"}',
    b'{"a": NaN}',
    b'{"a": Infinity}',
    b'\xef\xbb\xbf{"a": 1}',
    '{"a": 1}'.encode("utf-16"),
    b'{"a": "\xed\xa0\x80"}',
    b"\xff",
    b"",
    b"{oops",
    b'{"a": 1} x',
    b'{"a": 01}',
    b"[1,]",
    b'{"a": "\x01"}',
    b'{"a": ' + b"9" * 5000 + b"}",
    b"[" * 100_000,
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_the_fast_decoder_answers_what_json_loads_exact_answers(body):
    try:
        expected = ("value", json_loads_exact(body))
    except (ValueError, RecursionError) as exc:
        expected = (type(exc), str(exc))
    try:
        got = ("value", json_loads_exact_fast(body))
    except (ValueError, RecursionError) as exc:
        got = (type(exc), str(exc))
    assert repr(got) == repr(expected)


FLAT = [
    {},
    {"q": 'say "hi"', "b": "C:\\path\\", "nl": "a\nb\tc\x01\x1f\x7f", "u": "ünï©ødé \u2028 😀 </script>"},
    {"big": 10**30, "neg": -(10**20), "t": True, "f": False, "n": None, "z": 0},
    {"d": Decimal("0.1"), "e": Decimal("1E+5"), "m": Decimal("-0.0"), "s": Decimal("1.50")},
    {"backslash-u": "\\u0000 spelled out"},
]


@pytest.mark.parametrize("properties", FLAT, ids=range(len(FLAT)))
def test_flat_properties_are_written_as_the_json_encoder_writes_them(properties):
    # The text is stored and its UTF-8 length is the 8 KiB limit: both paths must agree on it.
    assert ingest._properties(properties) == (ingest._encode_properties(properties), None)


def test_the_usual_batch_is_stored_exactly_without_a_second_reading(
    tenant_client, tenant, api_calls, general_path_refused
):
    events = [usual(n) for n in range(50)]
    events[7] = usual(7, quantity=999_999_999_999_999, properties=None)
    events[8] = {"id": "u-8", "meter": "api_calls", "tenant": tenant.slug}  # quantity 1, now, {}
    events[9] = usual(9, properties={"a": "x" * 10, "b": None, "c": True, "d": -3})
    events.append(dict(events[3]))  # the same event twice: a duplicate, not an error

    response = post_raw(tenant_client, json.dumps({"events": events}))

    assert response.status_code == 202, response.json()
    assert response.json() == {"accepted": 50, "duplicates": 1}
    rows = {row.event_id: row for row in UsageEvent.objects.all()}
    assert rows["u-3"].timestamp == datetime(2026, 11, 21, 12, 3, 0, 250000, tzinfo=UTC)
    assert rows["u-3"].properties == {"path": "/x", "status": 200}
    assert rows["u-3"].quantity == 1
    assert (rows["u-8"].timestamp, rows["u-8"].properties, rows["u-8"].quantity) == (NOW, {}, 1)
    assert rows["u-9"].properties == {"a": "x" * 10, "b": None, "c": True, "d": -3}
    if connection.vendor == "postgresql":
        assert rows["u-7"].quantity == Decimal(999_999_999_999_999)


def test_a_single_usual_event_takes_the_fast_path_too(tenant_client, api_calls, general_path_refused):
    response = post_raw(tenant_client, json.dumps(usual(1)))
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "duplicates": 0}


@pytest.mark.parametrize(
    "odd",
    [
        {"quantity": "2.5"},
        {"quantity": 0.25},
        {"timestamp": "2026-11-21T13:15:00+01:00"},
        {"timestamp": "2026-11-21T12:15:00.123456Z"},
        {"properties": {"nested": {"list": [1, "two", None]}}},
        {"properties": {"ratio": 0.5}},
        {"tenant": None},
    ],
    ids=["text-quantity", "decimal-quantity", "offset", "micros", "nested", "decimal-prop", "null-tenant"],
)
def test_one_unusual_event_sends_the_batch_to_the_general_path_and_all_are_stored(
    tenant_client, api_calls, odd
):
    events = [usual(n) for n in range(5)]
    events[2] = {**events[2], **odd}
    response = post_raw(tenant_client, json.dumps({"events": events}))
    assert response.status_code == 202, response.json()
    assert response.json() == {"accepted": 5, "duplicates": 0}
    assert UsageEvent.objects.count() == 5


def test_a_value_property_meter_takes_its_quantity_from_the_properties(tenant_client, api_calls):
    MeterFactory(code="tokens", aggregation="sum", value_property="usage.tokens")
    events = [usual(0), {"id": "t", "meter": "tokens", "properties": {"usage": {"tokens": 42}}}]
    response = post_raw(tenant_client, json.dumps({"events": events}))
    assert response.status_code == 202
    assert UsageEvent.objects.get(event_id="t").quantity == 42


@pytest.mark.parametrize(
    ("odd", "field", "message"),
    [
        ({"id": ""}, "id", "is required: a non-empty string, unique per event"),
        ({"id": " \t"}, "id", "is required: a non-empty string, unique per event"),
        ({"id": "x" * 101}, "id", "must be at most 100 characters"),
        ({"id": "a\u0000b"}, "id", "must not contain NUL characters (\\u0000)"),
        ({"meter": "nope"}, "meter", "unknown meter 'nope'"),
        ({"quantity": 10**15}, "quantity", "has more than 15 significant digits"),
        ({"quantity": -1}, "quantity", "must not be negative"),
        ({"quantity": None}, "quantity", "must be a number; omit the field for 1"),
        ({"quantity": True}, "quantity", "must be a number (or a string holding one)"),
        (
            {"timestamp": "2026-10-01T00:00:00Z"},
            "timestamp",
            "is more than 35 days in the past; Stripe does not accept usage that old",
        ),
        ({"timestamp": "2026-11-21T12:36:00Z"}, "timestamp", "is more than 5 minutes in the future"),
        (
            {"timestamp": "2026-11-21T12:00:00"},
            "timestamp",
            "must include a time zone offset (e.g. Z or +00:00)",
        ),
        ({"timestamp": "1999-12-31T23:00:00Z"}, "timestamp", "must be between 2000-01-01 and 2100-12-31"),
        ({"properties": {"k": "a\u0000"}}, "properties", "must not contain NUL characters (\\u0000)"),
        ({"properties": {"k": "x" * LIMIT}}, "properties", f"must be at most {LIMIT} bytes as JSON"),
        ({"properties": []}, "properties", "must be an object"),
        ({"tenant": ""}, "tenant", "must be a non-empty string: the tenant's external id or slug"),
        ({"colour": "red"}, "colour", "unknown field"),
        (
            {"id": "u-0", "quantity": 2},
            "id",
            "events 0 and 2 have the same id with different content; an id names one event",
        ),
    ],
)
def test_an_invalid_event_among_usual_ones_is_answered_as_before(
    tenant_client, api_calls, odd, field, message
):
    events = [usual(n) for n in range(4)]
    events[2] = {**events[2], **odd}
    response = post_raw(tenant_client, json.dumps({"events": events}))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] == "1 event(s) are invalid; nothing of the batch was stored."
    assert error["fields"] == {"events": {"2": {field: [message]}}}
    assert not UsageEvent.objects.exists()


def test_an_unpaired_surrogate_among_usual_events_is_answered_per_field(tenant_client, api_calls):
    events = [usual(n) for n in range(3)]
    text = json.dumps({"events": events}).replace('"u-1"', '"u-1\\ud800"')
    response = post_raw(tenant_client, text)
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "events": {
            "1": {
                "id": [
                    "must not contain unpaired surrogates (\\ud800-\\udfff): it must be valid Unicode text"
                ]
            }
        }
    }


def test_another_tenants_event_among_usual_ones_is_forbidden(tenant_client, api_calls, other_tenant):
    events = [usual(n) for n in range(3)]
    events[1]["tenant"] = other_tenant.slug
    response = post_raw(tenant_client, json.dumps({"events": events}))
    assert response.status_code == 403
    assert response.json()["error"]["message"] == (
        "A tenant key acts only for its own tenant (events 1); nothing was stored."
    )


@pytest.mark.parametrize(
    "shape",
    [
        lambda text: {"k": text},  # flat: the fast path
        lambda text: {"k": text, "r": Decimal("0.5")},  # a decimal: the general path, flat encoding
        lambda text: {"k": [text]},  # nested: json_problem and the JSON encoder
    ],
    ids=["flat", "flat-decimal", "nested"],
)
def test_the_properties_limit_is_the_same_byte_count_on_every_path(tenant_client, api_calls, shape):
    def sized(size: int) -> dict:
        # As the server writes them (a decimal number becomes a JSON string).
        base = len(ingest._encode_properties(shape("")).encode())
        return shape("é" * ((size - base) // 2) + "x" * ((size - base) % 2))

    assert len(ingest._encode_properties(sized(LIMIT)).encode()) == LIMIT
    ok = post_raw(tenant_client, json.dumps(usual(1, properties=sized(LIMIT)), default=float))
    assert ok.status_code == 202, ok.json()
    over = post_raw(tenant_client, json.dumps(usual(2, properties=sized(LIMIT + 1)), default=float))
    assert over.status_code == 400
    assert over.json()["error"]["fields"] == {"properties": [f"must be at most {LIMIT} bytes as JSON"]}
