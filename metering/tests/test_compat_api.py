"""The Lago- and OpenMeter-compatible endpoints through Django's test client: the mapping onto native
events and their edge cases (timestamps, value property, limits, tenants, errors in the peer's shape).
test_compat_sdks.py drives the same endpoints with the peers' real SDKs over HTTP."""

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from freezegun import freeze_time

from metering.ingest import MAX_BATCH
from metering.models import UsageEvent
from metering.tests.factories import MeterFactory
from tenants.models import Tenant
from tenants.tests.factories import TenantFactory
from tenants.tests.support import issue_key, issue_platform_key, key_client

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 21, 12, 30, tzinfo=UTC)
LAGO = "/compat/lago/api/v1/events"
OPENMETER = "/compat/openmeter/api/v1/events"


@pytest.fixture(autouse=True)
def _frozen():
    with freeze_time(NOW):
        yield


@pytest.fixture
def acme(db):
    return TenantFactory(slug="acme", external_id="sub_acme")


@pytest.fixture
def globex(db):
    return TenantFactory(slug="globex", external_id="sub_globex")


@pytest.fixture
def tokens(db):
    return MeterFactory(code="tokens", aggregation="sum", value_property="tokens")


def lago(client, body, path=LAGO):
    return client.post(path, json.dumps(body), content_type="application/json")


def openmeter(client, body, content_type="application/cloudevents+json"):
    return client.post(OPENMETER, json.dumps(body), content_type=content_type)


def lago_event(n=1, **fields):
    return {"transaction_id": f"tx-{n}", "external_subscription_id": "sub_acme", "code": "tokens", **fields}


def cloud_event(n=1, **fields):
    return {
        "id": f"ce-{n}",
        "source": "app",
        "specversion": "1.0",
        "type": "tokens",
        "subject": "sub_acme",
        **fields,
    }


def rows():
    return sorted(
        (e.tenant.slug, e.meter.code, e.event_id, e.quantity, e.timestamp)
        for e in UsageEvent.objects.select_related("tenant", "meter")
    )


# --- Lago -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (1795246200, datetime(2026, 11, 21, 7, 30, tzinfo=UTC)),
        ("1795246200", datetime(2026, 11, 21, 7, 30, tzinfo=UTC)),
        ("1795246200.25", datetime(2026, 11, 21, 7, 30, 0, 250000, tzinfo=UTC)),
        (1795246200.5, datetime(2026, 11, 21, 7, 30, 0, 500000, tzinfo=UTC)),
        (None, NOW),
    ],
)
def test_lago_timestamps_are_unix_seconds_as_number_or_string(
    platform_client, acme, tokens, timestamp, expected
):
    response = lago(platform_client, {"event": lago_event(timestamp=timestamp, properties={"tokens": 7})})
    assert response.status_code == 200, response.json()
    event = response.json()["event"]
    assert event["transaction_id"] == "tx-1"
    assert event["external_subscription_id"] == "sub_acme"
    assert event["code"] == "tokens"
    assert event["properties"] == {"tokens": 7}
    assert (
        event["timestamp"] == expected.strftime("%Y-%m-%dT%H:%M:%S.") + f"{expected.microsecond // 1000:03d}Z"
    )
    assert rows() == [("acme", "tokens", "tx-1", Decimal(7), expected)]


@pytest.mark.parametrize(
    ("timestamp", "message"),
    [
        ("yesterday", "invalid_format"),
        (True, "invalid_format"),
        ("NaN", "invalid_format"),
        ({"at": 1}, "invalid_format"),
        (1_000, "invalid_format"),  # 1970: outside 2000-2100
        (1790812800, "35 days"),  # 2026-10-01
        (1795264800, "5 minutes in the future"),  # 12:40
    ],
)
def test_lago_bad_timestamps_are_422_naming_timestamp(platform_client, acme, tokens, timestamp, message):
    response = lago(platform_client, {"event": lago_event(timestamp=timestamp, properties={"tokens": 1})})
    assert response.status_code == 422
    body = response.json()
    assert (body["status"], body["error"], body["code"]) == (422, "Unprocessable Entity", "validation_errors")
    assert message in body["error_details"]["timestamp"][0]
    assert UsageEvent.objects.count() == 0


def test_lago_missing_fields_missing_property_and_unknown_meter(platform_client, acme, tokens):
    response = lago(platform_client, {"event": {"code": "tokens", "properties": {}}})
    assert response.status_code == 422
    details = response.json()["error_details"]
    assert details["transaction_id"] == ["value_is_mandatory"]
    assert details["external_subscription_id"] == ["value_is_mandatory"]
    # The meter's value property (Lago's field_name) is missing too.
    assert "takes the quantity from it" in details["properties.tokens"][0]
    unknown = lago(platform_client, {"event": lago_event(code="nope")})
    assert unknown.json()["error_details"] == {"code": ["unknown meter 'nope'"]}
    no_event = lago(platform_client, {"transaction_id": "x"})
    assert no_event.status_code == 400
    assert no_event.json() == {
        "status": 400,
        "error": "BadRequest: param is missing or the value is empty: event",
    }


def test_lago_duplicate_transaction_id_is_value_already_exist_and_changes_nothing(
    platform_client, acme, tokens
):
    first = lago(platform_client, {"event": lago_event(properties={"tokens": 5})})
    assert first.status_code == 200
    again = lago(platform_client, {"event": lago_event(properties={"tokens": 6})})
    assert again.status_code == 422
    assert again.json()["error_details"] == {"transaction_id": ["value_already_exist"]}
    batch = lago(
        platform_client,
        {
            "events": [
                lago_event(2, properties={"tokens": 1}),
                lago_event(1, properties={"tokens": 1}),
                lago_event(2, properties={"tokens": 1}),
            ]
        },
        path=LAGO + "/batch",
    )
    assert batch.status_code == 422
    assert batch.json()["error_details"] == {
        "1": {"transaction_id": ["value_already_exist"]},
        "2": {"transaction_id": ["value_already_exist"]},
    }
    assert [r[2:4] for r in rows()] == [("tx-1", Decimal(5))]


def test_lago_batch_mixes_tenants_with_a_platform_key_and_answers_every_event(
    platform_client, acme, globex, tokens
):
    events = [
        lago_event(n, external_subscription_id=sub, properties={"tokens": n})
        for n, sub in [(1, "sub_acme"), (2, "globex"), (3, "acme")]
    ]
    response = lago(platform_client, {"events": events}, path=LAGO + "/batch")
    assert response.status_code == 200, response.json()
    answered = response.json()["events"]
    assert [(e["transaction_id"], e["external_subscription_id"]) for e in answered] == [
        ("tx-1", "sub_acme"),
        ("tx-2", "globex"),
        ("tx-3", "acme"),
    ]
    assert [(r[0], r[2], r[3]) for r in rows()] == [
        ("acme", "tx-1", Decimal(1)),
        ("acme", "tx-3", Decimal(3)),
        ("globex", "tx-2", Decimal(2)),
    ]


def test_lago_batch_limits_and_unknown_or_suspended_tenants(platform_client, acme, globex, tokens):
    globex.status = Tenant.Status.SUSPENDED
    globex.save()
    path = LAGO + "/batch"
    too_many = lago(platform_client, {"events": [lago_event(n) for n in range(MAX_BATCH + 1)]}, path=path)
    assert too_many.status_code == 422
    assert too_many.json()["error_details"]["events"][0].startswith("too_many_events")
    assert lago(platform_client, {"events": []}, path=path).json()["error_details"] == {
        "events": ["no_events"]
    }
    response = lago(
        platform_client,
        {
            "events": [
                lago_event(1, properties={"tokens": 1}),
                lago_event(2, external_subscription_id="nobody", properties={"tokens": 1}),
                lago_event(3, external_subscription_id="sub_globex", properties={"tokens": 1}),
            ]
        },
        path=path,
    )
    assert response.status_code == 422
    details = response.json()["error_details"]
    assert set(details) == {"1", "2"}
    assert details["1"] == {"external_subscription_id": ["no tenant with external id or slug 'nobody'"]}
    assert "suspended" in details["2"]["external_subscription_id"][0]
    assert UsageEvent.objects.count() == 0


def test_lago_with_a_tenant_key_acts_for_that_tenant_only(acme, globex, tokens):
    client = key_client(issue_key(acme))
    assert lago(client, {"event": lago_event(1, properties={"tokens": 1})}).status_code == 200
    assert (
        lago(
            client, {"event": lago_event(2, external_subscription_id="acme", properties={"tokens": 1})}
        ).status_code
        == 200
    )
    refused = lago(
        client, {"event": lago_event(3, external_subscription_id="sub_globex", properties={"tokens": 1})}
    )
    assert refused.status_code == 403
    assert refused.json()["code"] == "other_tenant"
    assert [r[:3] for r in rows()] == [("acme", "tokens", "tx-1"), ("acme", "tokens", "tx-2")]


def test_lago_authentication_errors_in_lago_shape(acme, tokens, api_client):
    missing = lago(api_client, {"event": lago_event()})
    assert missing.status_code == 401
    assert missing.json()["error"] == "Unauthorized"
    wrong = lago(key_client("plat_nope.secret"), {"event": lago_event()})
    assert (wrong.status_code, wrong.json()["status"]) == (401, 401)
    no_scope = lago(key_client(issue_platform_key("usage:read")), {"event": lago_event()})
    assert no_scope.status_code == 403
    assert "events:write" in no_scope.json()["message"]
    not_json = key_client(issue_platform_key()).post(LAGO, "{", content_type="application/json")
    assert not_json.status_code == 400
    assert not_json.json()["error"].startswith("BadRequest: The body is not valid JSON")
    too_big = key_client(issue_platform_key()).post(
        LAGO, b"{" + b" " * (1024 * 1024 + 1) + b"}", content_type="application/json"
    )
    assert too_big.status_code == 413
    assert too_big.json()["status"] == 413


# --- OpenMeter --------------------------------------------------------------------------------


def test_openmeter_single_batch_and_json_content_types(platform_client, acme, globex, tokens, api_calls):
    one = openmeter(platform_client, cloud_event(1, time="2026-11-21T10:00:00Z", data={"tokens": 3}))
    assert one.status_code == 204, one.content
    batch = openmeter(
        platform_client,
        [cloud_event(2, subject="globex", data={"tokens": "1.5"}), cloud_event(3, type="api_calls")],
        content_type="application/cloudevents-batch+json",
    )
    assert batch.status_code == 204, batch.content
    as_json = openmeter(platform_client, cloud_event(4, data={"tokens": 2}), content_type="application/json")
    assert as_json.status_code == 204
    as_json_list = openmeter(
        platform_client, [cloud_event(5, data={"tokens": 1})], content_type="application/json"
    )
    assert as_json_list.status_code == 204
    # A resend is ignored, as OpenMeter deduplicates.
    assert openmeter(platform_client, cloud_event(1, data={"tokens": 3})).status_code == 204
    assert [(r[0], r[1], r[2], r[3]) for r in rows()] == [
        ("acme", "api_calls", "ce-3", Decimal(1)),
        ("acme", "tokens", "ce-1", Decimal(3)),
        ("acme", "tokens", "ce-4", Decimal(2)),
        ("acme", "tokens", "ce-5", Decimal(1)),
        ("globex", "tokens", "ce-2", Decimal("1.5")),
    ]
    assert UsageEvent.objects.get(event_id="ce-1").timestamp == datetime(2026, 11, 21, 10, tzinfo=UTC)
    assert UsageEvent.objects.get(event_id="ce-4").timestamp == NOW


def test_openmeter_errors_are_problem_json_naming_cloudevent_attributes(platform_client, acme, tokens):
    response = openmeter(
        platform_client,
        [
            cloud_event(1, data={"tokens": 1}),
            cloud_event(2, time="21/11/2026", data={"other": 1}),
            {"id": "x", "type": "tokens", "subject": "nobody", "specversion": "0.3", "data": "text"},
        ],
        content_type="application/cloudevents-batch+json",
    )
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert (problem["type"], problem["title"], problem["status"]) == ("about:blank", "Bad Request", 400)
    assert problem["instance"] == OPENMETER
    assert "2 event(s) are invalid" in problem["detail"]
    errors = problem["extensions"]["errors"]
    assert set(errors) == {"1", "2"}
    assert "ISO-8601" in errors["1"]["time"][0]
    assert "takes the quantity from it" in errors["1"]["data.tokens"][0]
    assert set(errors["2"]) == {"source", "specversion", "data", "subject"}
    assert UsageEvent.objects.count() == 0


def test_openmeter_content_type_must_match_the_shape(platform_client, acme, tokens):
    batch_as_one = openmeter(platform_client, [cloud_event(1, data={"tokens": 1})])
    assert batch_as_one.status_code == 400
    one_as_batch = openmeter(
        platform_client, cloud_event(1, data={"tokens": 1}), content_type="application/cloudevents-batch+json"
    )
    assert one_as_batch.status_code == 400
    other = platform_client.post(OPENMETER, "id=1", content_type="text/plain")
    assert other.status_code == 415
    assert other["Content-Type"] == "application/problem+json"
    empty = openmeter(platform_client, [], content_type="application/cloudevents-batch+json")
    assert empty.status_code == 400
    assert UsageEvent.objects.count() == 0


def test_openmeter_with_a_tenant_key_and_without_a_key(acme, globex, tokens, api_client):
    client = key_client(issue_key(acme))
    assert openmeter(client, cloud_event(1, subject="acme", data={"tokens": 1})).status_code == 204
    refused = openmeter(client, cloud_event(2, subject="sub_globex", data={"tokens": 1}))
    assert refused.status_code == 403
    assert refused.json()["title"] == "Forbidden"
    unauthenticated = openmeter(api_client, cloud_event(3, data={"tokens": 1}))
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["status"] == 401
    assert [r[2] for r in rows()] == ["ce-1"]


def test_lago_transaction_ids_are_per_tenant(platform_client, acme, globex, tokens):
    path = LAGO + "/batch"
    both = [
        lago_event(1, properties={"tokens": 1}),
        lago_event(1, external_subscription_id="globex", properties={"tokens": 2}),
    ]
    assert lago(platform_client, {"events": both}, path=path).status_code == 200
    again = lago(platform_client, {"events": [lago_event(2, properties={"tokens": 1}), both[1]]}, path=path)
    assert again.status_code == 422
    assert again.json()["error_details"] == {"1": {"transaction_id": ["value_already_exist"]}}
    assert [(r[0], r[2], r[3]) for r in rows()] == [
        ("acme", "tx-1", Decimal(1)),
        ("globex", "tx-1", Decimal(2)),
    ]


def test_rate_limited_answers_say_when_to_retry_in_both_shapes(settings, acme, tokens):
    settings.INGEST_RATE_LIMIT = "1/m"
    client = key_client(issue_platform_key())
    assert lago(client, {"event": lago_event(1, properties={"tokens": 1})}).status_code == 200
    limited = lago(client, {"event": lago_event(2, properties={"tokens": 1})})
    assert limited.status_code == 429
    assert limited.json()["status"] == 429
    # Lago's SDKs wait for x-ratelimit-reset seconds; others read Retry-After.
    assert int(limited["x-ratelimit-reset"]) == int(limited["Retry-After"]) >= 1
    problem = openmeter(client, cloud_event(3, data={"tokens": 1}))
    assert problem.status_code == 429
    assert problem["Content-Type"] == "application/problem+json"
    assert int(problem["Retry-After"]) >= 1
    assert UsageEvent.objects.count() == 1
