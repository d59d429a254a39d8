"""POST /api/v1/events and GET /api/v1/usage with a platform key (events name their tenant), and the
meters' value property (an event without a quantity takes it from its properties)."""

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from freezegun import freeze_time

from core.api_scopes import EVENTS_WRITE, USAGE_READ
from metering.aggregation import usage_aggregate_batch
from metering.models import Meter, PendingHour, UsageEvent
from metering.tests.factories import MeterFactory
from tenants.models import PlatformAPIKey, Tenant, TenantAPIKey
from tenants.tests.factories import TenantFactory
from tenants.tests.support import issue_key, issue_platform_key, key_client

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 21, 12, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _frozen():
    with freeze_time(NOW):
        yield


@pytest.fixture
def acme(db):
    return TenantFactory(slug="acme", external_id="cus_acme")


@pytest.fixture
def globex(db):
    return TenantFactory(slug="globex", external_id="cus_globex")


@pytest.fixture
def tokens(db):
    return MeterFactory(code="tokens", aggregation="sum", value_property="usage.tokens")


def post(client, body):
    return client.post("/api/v1/events", json.dumps(body), content_type="application/json")


def stored():
    return sorted(
        (e.tenant.slug, e.meter.code, e.event_id, e.quantity)
        for e in UsageEvent.objects.select_related("tenant", "meter")
    )


def test_a_platform_key_sends_a_mixed_tenant_batch_named_by_external_id_or_slug(
    platform_client, acme, globex, api_calls, storage
):
    batch = {
        "events": [
            {"id": "e1", "meter": "api_calls", "tenant": "cus_acme"},
            {"id": "e1", "meter": "storage_gb", "tenant": "globex", "quantity": "2.5"},
            {"id": "e2", "meter": "api_calls", "tenant": "acme"},
        ]
    }
    response = post(platform_client, batch)
    assert response.status_code == 202, response.json()
    assert response.json() == {"accepted": 3, "duplicates": 0}
    assert stored() == [
        ("acme", "api_calls", "e1", Decimal(1)),
        ("acme", "api_calls", "e2", Decimal(1)),
        ("globex", "storage_gb", "e1", Decimal("2.5")),
    ]
    assert set(PendingHour.objects.values_list("tenant__slug", "meter__code")) == {
        ("acme", "api_calls"),
        ("globex", "storage_gb"),
    }
    # Idempotency is per tenant: the same batch again is all duplicates.
    assert post(platform_client, batch).json() == {"accepted": 0, "duplicates": 3}


def test_a_platform_batch_is_all_or_nothing_naming_the_bad_tenants(platform_client, acme, globex, api_calls):
    globex.status = Tenant.Status.SUSPENDED
    globex.save()
    response = post(
        platform_client,
        {
            "events": [
                {"id": "e1", "meter": "api_calls", "tenant": "cus_acme"},
                {"id": "e2", "meter": "api_calls", "tenant": "nobody"},
                {"id": "e3", "meter": "api_calls", "tenant": "cus_globex"},
                {"id": "e4", "meter": "api_calls"},
                {"id": "e5", "meter": "api_calls", "tenant": 7},
            ]
        },
    )
    assert response.status_code == 400
    events = response.json()["error"]["fields"]["events"]
    assert set(events) == {"1", "2", "3", "4"}
    assert events["1"] == {"tenant": ["no tenant with external id or slug 'nobody'"]}
    assert "suspended" in events["2"]["tenant"][0]
    assert "required with a platform key" in events["3"]["tenant"][0]
    assert "string" in events["4"]["tenant"][0]
    assert UsageEvent.objects.count() == 0


def test_a_single_event_names_its_tenant_and_one_query_resolves_a_batch(
    platform_client, acme, globex, api_calls, django_assert_max_num_queries
):
    assert (
        post(platform_client, {"id": "one", "meter": "api_calls", "tenant": "cus_globex"}).status_code == 202
    )
    batch = {
        "events": [
            {"id": f"e{n}", "meter": "api_calls", "tenant": ("acme", "globex")[n % 2]} for n in range(50)
        ]
    }
    # Authentication (key look-up, last-used), the tenants, the insert: not one query per event.
    with django_assert_max_num_queries(6):
        assert post(platform_client, batch).status_code == 202
    assert UsageEvent.objects.filter(tenant=globex).count() == 26


def test_a_tenant_key_may_name_itself_but_not_another_tenant(acme, globex, api_calls):
    client = key_client(issue_key(acme), scheme="Api-Key")
    assert post(client, {"id": "a", "meter": "api_calls", "tenant": "cus_acme"}).status_code == 202
    assert post(client, {"id": "b", "meter": "api_calls", "tenant": "acme"}).status_code == 202
    refused = post(
        client,
        {
            "events": [
                {"id": "c", "meter": "api_calls"},
                {"id": "d", "meter": "api_calls", "tenant": "globex"},
            ]
        },
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["message"].startswith(
        "A tenant key acts only for its own tenant (events 1)"
    )
    # Refused before validation: another tenant's name with a bad event is still a 403.
    assert post(client, {"id": "", "meter": "api_calls", "tenant": "nobody"}).status_code == 403
    assert stored() == [("acme", "api_calls", "a", Decimal(1)), ("acme", "api_calls", "b", Decimal(1))]


def test_a_platform_key_needs_the_events_scope(acme, api_calls):
    client = key_client(issue_platform_key(USAGE_READ))
    response = post(client, {"id": "a", "meter": "api_calls", "tenant": "acme"})
    assert response.status_code == 403
    assert "events:write" in response.json()["error"]["message"]
    assert (
        key_client(issue_platform_key(EVENTS_WRITE))
        .post(
            "/api/v1/events",
            json.dumps({"id": "a", "meter": "api_calls", "tenant": "acme"}),
            content_type="application/json",
        )
        .status_code
        == 202
    )


def test_rate_limit_counts_a_platform_key_apart_from_a_tenant_key_with_the_same_id(settings, acme, api_calls):
    settings.INGEST_RATE_LIMIT = "2/m"
    tenant_secret = issue_key(acme)
    platform_secret = issue_platform_key(EVENTS_WRITE)
    # The two tables number their rows apart: give both keys one id, as fresh tables would.
    same_id = TenantAPIKey.objects.get().pk
    PlatformAPIKey.objects.update(id=same_id)
    platform, tenant = key_client(platform_secret), key_client(tenant_secret)
    for n in range(2):
        assert post(platform, {"id": f"p{n}", "meter": "api_calls", "tenant": "acme"}).status_code == 202
    assert post(tenant, {"id": "t0", "meter": "api_calls"}).status_code == 202
    limited = post(platform, {"id": "p3", "meter": "api_calls", "tenant": "acme"})
    assert limited.status_code == 429
    assert int(limited["Retry-After"]) >= 1


def test_usage_read_with_a_platform_key_names_the_tenant(acme, globex, api_calls):
    post(
        key_client(issue_platform_key(EVENTS_WRITE)),
        {
            "events": [
                {"id": "a", "meter": "api_calls", "tenant": "acme", "timestamp": "2026-11-21T10:05:00Z"},
                {"id": "b", "meter": "api_calls", "tenant": "acme", "timestamp": "2026-11-21T10:06:00Z"},
                {"id": "c", "meter": "api_calls", "tenant": "globex", "timestamp": "2026-11-21T10:07:00Z"},
            ]
        },
    )
    usage_aggregate_batch()
    reader = key_client(issue_platform_key(USAGE_READ))
    usage = reader.get("/api/v1/usage", {"tenant": "cus_acme"})
    assert usage.status_code == 200, usage.json()
    assert [(p["meter"], p["value"]) for p in usage.json()["data"]] == [("api_calls", "2")]
    missing = reader.get("/api/v1/usage")
    assert missing.status_code == 400
    assert "tenant" in missing.json()["error"]["fields"]
    assert reader.get("/api/v1/usage", {"tenant": "nobody"}).status_code == 404
    assert (
        key_client(issue_platform_key(EVENTS_WRITE)).get("/api/v1/usage", {"tenant": "acme"}).status_code
        == 403
    )
    own = key_client(issue_key(acme))
    assert own.get("/api/v1/usage", {"tenant": "acme"}).status_code == 200
    assert own.get("/api/v1/usage", {"tenant": "globex"}).status_code == 403


# --- value property ---------------------------------------------------------------------------


def test_an_event_without_quantity_takes_it_from_the_value_property(platform_client, acme, tokens, api_calls):
    api_calls.value_property = ""
    response = post(
        platform_client,
        {
            "events": [
                {"id": "a", "meter": "tokens", "tenant": "acme", "properties": {"usage": {"tokens": 1200}}},
                {"id": "b", "meter": "tokens", "tenant": "acme", "properties": {"usage": {"tokens": "0.5"}}},
                # An explicit quantity wins.
                {"id": "c", "meter": "tokens", "tenant": "acme", "quantity": 3, "properties": {"usage": {}}},
                # A count meter has no value property: 1 per event.
                {"id": "d", "meter": "api_calls", "tenant": "acme", "properties": {"tokens": 9}},
            ]
        },
    )
    assert response.status_code == 202, response.json()
    assert stored() == [
        ("acme", "api_calls", "d", Decimal(1)),
        ("acme", "tokens", "a", Decimal(1200)),
        ("acme", "tokens", "b", Decimal("0.5")),
        ("acme", "tokens", "c", Decimal(3)),
    ]


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        (None, "is required: meter 'tokens' takes the quantity from it"),
        ({"usage": {"other": 1}}, "is required: meter 'tokens' takes the quantity from it"),
        ({"usage": 5}, "is required: meter 'tokens' takes the quantity from it"),
        ({"usage": {"tokens": "lots"}}, "number"),
        ({"usage": {"tokens": None}}, "not null"),
        ({"usage": {"tokens": True}}, "number"),
        ({"usage": {"tokens": -1}}, "must not be negative"),
        ({"usage": {"tokens": "1234567890123456"}}, "15"),
    ],
)
def test_a_missing_or_bad_value_property_is_a_400_naming_it(tenant_client, tokens, properties, message):
    response = post(tenant_client, {"id": "a", "meter": "tokens", "properties": properties})
    assert response.status_code == 400
    problems = response.json()["error"]["fields"]["properties.usage.tokens"]
    assert message in problems[0]
    assert UsageEvent.objects.count() == 0


def test_create_meter_takes_a_value_property_only_where_a_quantity_counts(capsys):
    call_command("create_meter", "llm_tokens", "--aggregation", "sum", "--value-property", "$.tokens")
    meter = Meter.objects.get(code="llm_tokens")
    assert meter.value_property == "$.tokens"
    with pytest.raises(CommandError, match="count meter does not read quantities"):
        call_command("create_meter", "calls", "--aggregation", "count", "--value-property", "tokens")
    with pytest.raises(CommandError, match="value_property"):
        call_command("create_meter", "bad", "--aggregation", "max", "--value-property", "a..b")
    assert not Meter.objects.filter(code__in=["calls", "bad"]).exists()


def test_a_jsonpath_value_property_reads_the_top_level(tenant_client):
    MeterFactory(code="gpu", aggregation="max", value_property="$.seconds")
    assert (
        post(tenant_client, {"id": "a", "meter": "gpu", "properties": {"seconds": 42.5}}).status_code == 202
    )
    assert UsageEvent.objects.get().quantity == Decimal("42.5")


def test_admin_sets_a_value_property_on_a_sum_meter_only(admin_client):
    from metering.tests.test_admin import change_url, meter_form_data

    calls = MeterFactory(code="calls", aggregation="count")
    refused = admin_client.post(change_url(calls), meter_form_data(calls, value_property="tokens"))
    assert refused.status_code == 200
    assert "Only sum, max and latest meters read a quantity" in refused.content.decode()
    calls.refresh_from_db()
    assert calls.value_property == ""
    tokens = MeterFactory(code="gpt", aggregation="sum")
    saved = admin_client.post(change_url(tokens), meter_form_data(tokens, value_property="$.usage.tokens"))
    assert saved.status_code == 302
    tokens.refresh_from_db()
    assert tokens.value_property == "$.usage.tokens"


def test_the_hour_total_check_counts_each_tenant_of_a_mixed_batch_apart(
    platform_client, acme, globex, storage
):
    big = "999999999999999"  # 15 digits, the most one event may carry
    hour = "2026-11-21T11:10:00Z"

    def events(prefix, tenant, count):
        return [
            {
                "id": f"{prefix}{n}",
                "meter": "storage_gb",
                "tenant": tenant,
                "quantity": big,
                "timestamp": hour,
            }
            for n in range(count)
        ]

    # 60 + 60 such events in one hour: together past what Stripe can bill for one hour (100 events'
    # worth), but each tenant's own hour is not.
    response = post(platform_client, {"events": events("a", "acme", 60) + events("g", "globex", 60)})
    assert response.status_code == 202, response.json()
    # 41 more for acme: its hour (101) is now past it; globex's events in the same batch are fine.
    response = post(platform_client, {"events": events("g2-", "globex", 10) + events("a2-", "acme", 41)})
    assert response.status_code == 400
    problems = response.json()["error"]["fields"]["events"]
    assert set(problems) == {str(n) for n in range(10, 51)}
    assert "more than Stripe can bill" in problems["10"]["quantity"][0]
    assert UsageEvent.objects.count() == 120
