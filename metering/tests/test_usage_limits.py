"""Hard limits that refuse: ingestion stores nothing of a batch that would take a tenant's usage of a
meter past its plan's limit (native, Lago, OpenMeter, event bus), counts only events actually
stored (a resent batch answers duplicates), and stays exact when batches race; the plan allowance
rules (refuse on count and sum meters only) in the service, the command and the admin."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError
from django.db import connection
from django.urls import reverse

from conftest import run_at_once
from metering.aggregation import usage_aggregate
from metering.allowances import AllowanceError, plan_allowance_set
from metering.ingest import UsageLimitExceeded, usage_events_record, usage_events_validate
from metering.models import PendingHour, PlanMeterAllowance, UsageEvent, UsageQueue
from metering.tests.factories import MeterFactory
from metering.tests.support import consume, summary, usage_queue
from tenants.models import Tenant
from tenants.tests.factories import TenantFactory
from tenants.tests.support import issue_key, issue_platform_key, key_client, run_command

pytestmark = pytest.mark.django_db
EVENTS = "/api/v1/events"


def refuse_at(meter, limit, *, plan=Tenant.Plan.FREE, included="0"):
    return plan_allowance_set(
        plan=plan, meter=meter, included=Decimal(included), hard_limit=Decimal(limit), at_limit="refuse"
    )


@pytest.fixture
def free(db):
    return TenantFactory(slug="free-co", external_id="sub_free", plan=Tenant.Plan.FREE)


@pytest.fixture
def free_client(free):
    return key_client(issue_key(free))


def send(client, *events):
    return client.post(EVENTS, {"events": list(events)}, format="json")


def calls(*ids, **fields):
    return [{"id": event_id, "meter": "api_calls", **fields} for event_id in ids]


def stored(tenant) -> list[str]:
    return sorted(UsageEvent.objects.filter(tenant=tenant).values_list("event_id", flat=True))


def test_events_up_to_the_limit_are_accepted_and_the_next_is_refused_naming_the_limit(
    free, free_client, api_calls
):
    refuse_at(api_calls, 5)
    assert send(free_client, *calls("a", "b", "c", "d", "e")).json() == {"accepted": 5, "duplicates": 0}

    response = send(free_client, *calls("f"))

    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "usage_limit_exceeded"
    assert "'api_calls' is limited to 5 per billing period" in error["message"]
    assert "usage is 5 and these events add 1" in error["message"]
    month_end = f"{(datetime.now(UTC).replace(day=28) + timedelta(days=4)).replace(day=1):%Y-%m-01}T00:00:00Z"
    assert f"The period ends {month_end}" in error["message"]
    assert list(error["fields"]) == ["meter"]
    assert stored(free) == ["a", "b", "c", "d", "e"]


def test_a_batch_that_would_cross_the_limit_is_refused_whole(free, free_client, api_calls, storage):
    refuse_at(api_calls, 5)
    send(free_client, *calls("a", "b", "c"))
    pending_before = PendingHour.objects.count()

    # Three more would make 6: none of them is stored, nor the storage event riding along.
    response = send(free_client, *calls("d", "e", "f"), {"id": "s1", "meter": "storage_gb", "quantity": 1})

    assert response.status_code == 403
    assert stored(free) == ["a", "b", "c"]
    assert PendingHour.objects.count() == pending_before
    assert send(free_client, *calls("d", "e")).status_code == 202  # exactly up to the limit


def test_a_resent_batch_at_the_limit_answers_duplicates_not_a_refusal(free, free_client, api_calls):
    refuse_at(api_calls, 3)
    assert send(free_client, *calls("a", "b", "c")).status_code == 202

    again = send(free_client, *calls("a", "b", "c"))
    assert again.status_code == 202
    assert again.json() == {"accepted": 0, "duplicates": 3}

    # A duplicate with one new event past the limit: refused whole.
    assert send(free_client, *calls("a", "new")).status_code == 403
    assert stored(free) == ["a", "b", "c"]


def test_a_sum_meter_is_limited_by_quantity_and_aggregated_usage_counts(free, free_client, storage):
    refuse_at(storage, "10.5")
    assert send(free_client, {"id": "s1", "meter": "storage_gb", "quantity": "6"}).status_code == 202
    usage_aggregate(trigger="test")  # now an aggregate, no longer pending: still counted
    assert send(free_client, {"id": "s2", "meter": "storage_gb", "quantity": "4.5"}).status_code == 202
    refused = send(free_client, {"id": "s3", "meter": "storage_gb", "quantity": "0.000001"})
    assert refused.status_code == 403
    assert "usage is 10.5" in refused.json()["error"]["message"]
    # Zero adds nothing: accepted even at the limit.
    assert send(free_client, {"id": "s4", "meter": "storage_gb", "quantity": "0"}).status_code == 202


def test_events_that_the_meter_filters_out_do_not_count_toward_the_limit(free, free_client):
    ok_calls = MeterFactory(code="ok_calls", aggregation="count", filters={"status": ["200"]})
    refuse_at(ok_calls, 2)
    failed = [{"id": f"x{n}", "meter": "ok_calls", "properties": {"status": 500}} for n in range(5)]
    assert send(free_client, *failed).status_code == 202
    ok = [{"id": f"ok{n}", "meter": "ok_calls", "properties": {"status": 200}} for n in range(3)]
    assert send(free_client, *ok[:2]).status_code == 202
    assert send(free_client, ok[2]).status_code == 403


def test_report_only_limits_and_other_plans_accept_past_the_limit(
    free, free_client, api_calls, tenant_client
):
    plan_allowance_set(
        plan=Tenant.Plan.FREE, meter=api_calls, included=Decimal(1), hard_limit=Decimal(2), at_limit="report"
    )
    assert send(free_client, *calls("a", "b", "c", "d")).status_code == 202
    # The metered plan has no row: the free plan's refusing limit is not the metered tenant's.
    refuse_at(api_calls, 2)
    assert send(tenant_client, *calls("m1", "m2", "m3")).status_code == 202


def test_another_tenants_usage_never_counts(free, free_client, api_calls):
    refuse_at(api_calls, 2)
    neighbour = TenantFactory(slug="neighbour", plan=Tenant.Plan.FREE)
    assert send(key_client(issue_key(neighbour)), *calls("n1", "n2")).status_code == 202
    assert send(free_client, *calls("a", "b")).status_code == 202


def test_a_platform_batch_is_refused_whole_when_one_of_its_tenants_crosses(free, api_calls, tenant):
    refuse_at(api_calls, 1)
    platform = key_client(issue_platform_key("events:write"))
    batch = [
        {"id": "t1", "meter": "api_calls", "tenant": tenant.slug},  # metered: not limited
        {"id": "f1", "meter": "api_calls", "tenant": "sub_free"},
        {"id": "f2", "meter": "api_calls", "tenant": "sub_free"},
    ]
    assert send(platform, *batch).status_code == 403
    assert not UsageEvent.objects.exists()
    assert send(platform, *batch[:2]).status_code == 202


def test_last_months_backfill_counts_against_last_months_usage(free, free_client, api_calls):
    refuse_at(api_calls, 2)
    now = datetime.now(UTC)
    last_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) - timedelta(minutes=30)
    send(free_client, *calls("a", "b"))
    old = send(free_client, *calls("old1", "old2", timestamp=last_month.isoformat()))
    assert old.status_code == 202
    assert send(free_client, *calls("old3", timestamp=last_month.isoformat())).status_code == 403


# --- Lago, OpenMeter, the event bus ------------------------------------------------------------------


def test_lago_and_openmeter_answer_the_limit_in_their_own_shapes(free, api_calls):
    refuse_at(api_calls, 1)
    client = key_client(issue_platform_key("events:write"))
    lago = {"event": {"transaction_id": "l1", "external_subscription_id": "sub_free", "code": "api_calls"}}
    assert client.post("/compat/lago/api/v1/events", lago, format="json").status_code == 200

    lago["event"]["transaction_id"] = "l2"
    response = client.post("/compat/lago/api/v1/events", lago, format="json")
    assert response.status_code == 403
    body = response.json()
    assert (body["status"], body["error"], body["code"]) == (403, "Forbidden", "usage_limit_exceeded")
    assert "limited to 1" in body["message"]

    cloud = {"id": "o1", "source": "app", "specversion": "1.0", "type": "api_calls", "subject": "sub_free"}
    response = client.post(
        "/compat/openmeter/api/v1/events", json.dumps(cloud), content_type="application/cloudevents+json"
    )
    assert response.status_code == 403
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["extensions"]["code"] == "usage_limit_exceeded"
    assert (problem["extensions"]["meter"], problem["extensions"]["limit"]) == ("api_calls", "1")
    assert problem["extensions"]["usage"] == "1"
    assert stored(free) == ["l1"]


def test_a_bus_event_past_the_limit_stays_in_the_queue_with_a_clear_error(aws, api_calls):
    tenant = TenantFactory(slug="tenant-zero", external_id="Tenant0", plan=Tenant.Plan.FREE)
    refuse_at(api_calls, 1)
    queue = usage_queue()
    configured = UsageQueue.objects.create(url=queue.url, meter=api_calls)
    queue.send({"TenantID": "Tenant0", "Quantity": 1})
    assert consume(queue.url)[0] == summary(received=1, processed=1)

    queue.send({"TenantID": "Tenant0", "Quantity": 1})
    out, err = consume(queue.url)

    assert out == summary(received=1, failed=1)
    assert "usage limit: meter 'api_calls'" in err
    assert queue.count() == 1
    configured.refresh_from_db()
    assert "usage limit: meter 'api_calls' is limited to 1 per billing period" in configured.last_error
    assert UsageEvent.objects.filter(tenant=tenant).count() == 1


# --- concurrency -------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_batches_racing_at_the_limit_never_exceed_it(api_calls):
    tenant = TenantFactory(slug="racer", plan=Tenant.Plan.FREE)
    refuse_at(api_calls, 10)
    batches = iter(range(100))

    def ingest():
        n = next(batches)
        events = usage_events_validate(
            payload={"events": calls(f"b{n}-1", f"b{n}-2", f"b{n}-3")}, now=datetime.now(UTC), tenant=tenant
        )
        try:
            return usage_events_record(events=events, now=datetime.now(UTC), tenant=tenant).accepted
        except UsageLimitExceeded:
            return 0
        finally:
            connection.close()

    results = run_at_once(ingest, 8)

    # Batches of 3 against a limit of 10: exactly three fit, whatever the order they ran in.
    assert sorted(results) == [0, 0, 0, 0, 0, 3, 3, 3]
    assert UsageEvent.objects.filter(tenant=tenant).count() == 9


# --- the rules of a plan allowance -------------------------------------------------------------------


def test_refuse_is_for_count_and_sum_meters_only_and_needs_a_limit_at_least_the_allowance(api_calls):
    peak = MeterFactory(code="peak", aggregation="max")
    with pytest.raises(AllowanceError, match="count and sum meters only"):
        refuse_at(peak, 10)
    with pytest.raises(AllowanceError, match="hard_limit: must be at least the included allowance"):
        refuse_at(api_calls, 10, included="20")
    with pytest.raises(AllowanceError, match="hard_limit: is required to refuse"):
        plan_allowance_set(plan="free", meter=api_calls, included=Decimal(1), at_limit="refuse")
    # Report only is fine on any meter; setting again replaces the plan's row.
    plan_allowance_set(plan="free", meter=peak, included=Decimal(5), hard_limit=Decimal(10))
    plan_allowance_set(plan="free", meter=peak, included=Decimal(7))
    assert PlanMeterAllowance.objects.get(meter=peak).included == 7
    assert PlanMeterAllowance.objects.count() == 1


def test_the_command_sets_a_plan_allowance_and_refuses_in_one_line(api_calls):
    [line] = run_command(
        "set_plan_allowance",
        "free",
        "api_calls",
        "--included",
        "1000",
        "--limit",
        "1500",
        "--at-limit",
        "refuse",
    )
    assert line == "plan free, meter api_calls: 1,000 included per month (UTC), limit 1,500 (refuse)"
    row = PlanMeterAllowance.objects.get()
    assert (row.plan, row.included, row.hard_limit, row.at_limit) == ("free", 1000, 1500, "refuse")

    with pytest.raises(CommandError, match="must be at least the included allowance"):
        run_command("set_plan_allowance", "free", "api_calls", "--included", "10", "--limit", "5")
    with pytest.raises(CommandError, match="no meter with code 'nope'"):
        run_command("set_plan_allowance", "free", "nope", "--included", "1")


def test_the_meter_admin_refuses_refuse_on_a_max_meter(admin_client):
    peak = MeterFactory(code="peak", aggregation="max")
    url = reverse("admin:metering_meter_change", args=[peak.pk])
    data = {
        "code": "peak",
        "name": "peak",
        "unit": "unit",
        "aggregation": "max",
        "unique_property": "",
        "value_property": "",
        **{f"{prefix}-{k}": v for prefix in ("filters", "prices") for k, v in _empty_management().items()},
        **{f"plan_allowances-{k}": v for k, v in _management(1).items()},
        "plan_allowances-0-plan": "free",
        "plan_allowances-0-included": "10",
        "plan_allowances-0-hard_limit": "20",
        "plan_allowances-0-at_limit": "refuse",
        "plan_allowances-0-meter": str(peak.pk),
    }
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "refuse works on count and sum meters only" in response.content.decode()
    assert not PlanMeterAllowance.objects.exists()

    data["plan_allowances-0-at_limit"] = "report"
    assert admin_client.post(url, data).status_code == 302
    assert PlanMeterAllowance.objects.get().hard_limit == 20


def _management(total: int) -> dict:
    return {"TOTAL_FORMS": str(total), "INITIAL_FORMS": "0", "MIN_NUM_FORMS": "0", "MAX_NUM_FORMS": "1000"}


def _empty_management() -> dict:
    return _management(0)
