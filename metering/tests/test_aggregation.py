import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from freezegun import freeze_time

from conftest import beat_task, run_at_once
from metering.aggregation import usage_aggregate, usage_aggregate_batch
from metering.ingest import usage_events_record, usage_events_validate
from metering.models import AggregationRun, HourlyAggregate, HourlyAggregateChange, MeterFilter, PendingHour
from metering.services import meter_filters_changed
from metering.tests.factories import MeterFactory

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 21, 12, 30, tzinfo=UTC)
H10 = datetime(2026, 11, 21, 10, tzinfo=UTC)
H11 = H10 + timedelta(hours=1)


@pytest.fixture(autouse=True)
def _frozen():
    with freeze_time(NOW):
        yield


def ingest(tenant, *events):
    valid = usage_events_validate(payload={"events": list(events)}, now=NOW)
    return usage_events_record(tenant=tenant, events=valid, now=NOW)


_ids = iter(range(10**9))


def ev(meter, minute_of_day: str, quantity=None, event_id=None, **properties):
    body = {
        "id": event_id or f"e{next(_ids)}",
        "meter": meter,
        "timestamp": f"2026-11-21T{minute_of_day}:00Z",
        "properties": properties,
    }
    if quantity is not None:
        body["quantity"] = quantity
    return body


def values(tenant, meter):
    return {
        a.hour: (a.value, a.event_count) for a in HourlyAggregate.objects.filter(tenant=tenant, meter=meter)
    }


def test_count_sum_max_per_hour(tenant):
    count = MeterFactory(code="c", aggregation="count")
    total = MeterFactory(code="s", aggregation="sum")
    peak = MeterFactory(code="m", aggregation="max")
    for code in ("c", "s", "m"):
        ingest(tenant, ev(code, "10:05", "1.5"), ev(code, "10:59", "2.25"), ev(code, "11:00", "7"))
    usage_aggregate(trigger="test")
    assert values(tenant, count) == {H10: (Decimal(2), 2), H11: (Decimal(1), 1)}
    assert values(tenant, total) == {H10: (Decimal("3.75"), 2), H11: (Decimal(7), 1)}
    assert values(tenant, peak) == {H10: (Decimal("2.25"), 2), H11: (Decimal(7), 1)}


def test_unique_count_counts_distinct_property_values(tenant):
    users = MeterFactory(code="users", aggregation="unique_count", unique_property="user")
    ingest(
        tenant,
        ev("users", "10:01", user="ann"),
        ev("users", "10:02", user="bob"),
        ev("users", "10:03", user="ann"),
        ev("users", "10:04", user=7),
        ev("users", "10:05", user="7"),  # the same value as 7, compared as text
        ev("users", "10:06"),  # no user: not a distinct value
    )
    usage_aggregate(trigger="test")
    assert values(tenant, users) == {H10: (Decimal(3), 6)}


def test_latest_takes_the_last_quantity_of_the_hour(tenant):
    seats = MeterFactory(code="seats", aggregation="latest")
    ingest(tenant, ev("seats", "10:50", 9), ev("seats", "10:10", 4), ev("seats", "10:30", 5))
    usage_aggregate(trigger="test")
    assert values(tenant, seats) == {H10: (Decimal(9), 3)}
    ingest(tenant, ev("seats", "10:55", 2))  # late, but the latest in that hour
    usage_aggregate(trigger="test")
    assert values(tenant, seats) == {H10: (Decimal(2), 4)}


def test_filters_keep_only_matching_events(tenant):
    ok = MeterFactory(code="ok_calls", aggregation="count", filters={"status": ["200", "201"]})
    eu = MeterFactory(code="eu_calls", aggregation="count", filters={"region": ["eu"]})
    for status, region in [(200, "eu"), ("201", "us"), (500, "eu"), (404, None)]:
        ingest(tenant, ev("ok_calls", "10:01", status=status), ev("eu_calls", "10:01", region=region))
    usage_aggregate(trigger="test")
    assert values(tenant, ok) == {H10: (Decimal(2), 2)}
    assert values(tenant, eu) == {H10: (Decimal(2), 2)}


def test_an_hour_whose_events_all_fail_the_filter_has_no_aggregate(tenant):
    ok = MeterFactory(code="ok_calls", aggregation="count", filters={"status": ["200"]})
    ingest(tenant, ev("ok_calls", "10:01", status=500))
    usage_aggregate(trigger="test")
    assert values(tenant, ok) == {}


def test_running_twice_changes_nothing(tenant, api_calls):
    ingest(tenant, ev("api_calls", "10:01"), ev("api_calls", "11:01"))
    first = usage_aggregate(trigger="test")
    before = list(HourlyAggregate.objects.values("hour", "value", "revision", "updated_at"))
    second = usage_aggregate(trigger="test")
    assert (first.hours_aggregated, first.hours_changed) == (2, 2)
    assert (second.hours_aggregated, second.hours_changed) == (0, 0)
    assert list(HourlyAggregate.objects.values("hour", "value", "revision", "updated_at")) == before
    assert AggregationRun.objects.filter(status="succeeded").count() == 2


def test_only_hours_with_new_events_are_aggregated(tenant, api_calls):
    ingest(tenant, *[ev("api_calls", f"{h:02d}:01") for h in range(0, 12)])
    assert usage_aggregate(trigger="test").hours_aggregated == 12
    ingest(tenant, ev("api_calls", "11:45"))
    run = usage_aggregate(trigger="test")
    assert (run.hours_aggregated, run.hours_changed) == (1, 1)


def test_a_late_event_reaggregates_its_hour_and_records_the_change(tenant, api_calls):
    ingest(tenant, ev("api_calls", "10:01"), ev("api_calls", "10:02"))
    usage_aggregate(trigger="test")
    ingest(tenant, ev("api_calls", "10:59"))
    usage_aggregate(trigger="test")
    aggregate = HourlyAggregate.objects.get(tenant=tenant, meter=api_calls, hour=H10)
    assert (aggregate.value, aggregate.event_count, aggregate.revision) == (Decimal(3), 3, 2)
    changes = list(
        HourlyAggregateChange.objects.filter(aggregate=aggregate)
        .order_by("revision")
        .values_list("revision", "old_value", "new_value")
    )
    assert changes == [(1, None, Decimal(2)), (2, Decimal(2), Decimal(3))]


def test_a_duplicate_event_does_not_mark_its_hour(tenant, api_calls):
    ingest(tenant, ev("api_calls", "10:01", event_id="same"))
    usage_aggregate(trigger="test")
    ingest(tenant, ev("api_calls", "10:01", event_id="same"))
    assert PendingHour.objects.count() == 0


def test_tenants_are_aggregated_apart(tenant, other_tenant, api_calls):
    ingest(tenant, ev("api_calls", "10:01"), ev("api_calls", "10:02"))
    ingest(other_tenant, ev("api_calls", "10:03"))
    usage_aggregate(trigger="test")
    assert values(tenant, api_calls) == {H10: (Decimal(2), 2)}
    assert values(other_tenant, api_calls) == {H10: (Decimal(1), 1)}


def test_batches_resume_where_the_last_one_stopped(tenant, api_calls):
    ingest(tenant, *[ev("api_calls", f"{h:02d}:01") for h in range(0, 7)])
    assert usage_aggregate_batch(batch_size=3).hours_aggregated == 3
    assert PendingHour.objects.count() == 4
    run = usage_aggregate(trigger="test", batch_size=3)
    assert run.hours_aggregated == 4
    assert HourlyAggregate.objects.count() == 7


def test_a_failed_batch_leaves_its_hours_pending(tenant, api_calls, monkeypatch):
    ingest(tenant, ev("api_calls", "10:01"))

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("metering.aggregation._write", explode)
    with pytest.raises(RuntimeError):
        usage_aggregate(trigger="test")
    assert PendingHour.objects.count() == 1
    run = AggregationRun.objects.latest()
    assert (run.status, run.error) == ("failed", "RuntimeError: disk full")
    monkeypatch.undo()
    usage_aggregate(trigger="test")
    assert values(tenant, api_calls) == {H10: (Decimal(1), 1)}


def test_changing_filters_recomputes_the_meters_hours(tenant):
    ok = MeterFactory(code="ok_calls", aggregation="count", filters={"status": ["200"]})
    ingest(tenant, ev("ok_calls", "10:01", status=200), ev("ok_calls", "10:02", status=201))
    usage_aggregate(trigger="test")
    assert values(tenant, ok) == {H10: (Decimal(1), 1)}
    MeterFilter.objects.filter(meter=ok).update(operator="in", values=["200", "201"])
    assert meter_filters_changed(meter=ok).marked == 1
    usage_aggregate(trigger="test")
    assert values(tenant, ok) == {H10: (Decimal(2), 2)}


def test_widening_filters_of_a_meter_whose_5_events_all_failed_them_counts_the_5(tenant):
    ok = MeterFactory(code="ok_calls", aggregation="count", filters={"status": ["200"]})
    ingest(tenant, *(ev("ok_calls", f"10:0{n}", status=500) for n in range(5)))
    usage_aggregate(trigger="test")
    assert values(tenant, ok) == {}  # no aggregate and no pending hour left: only raw events
    MeterFilter.objects.filter(meter=ok).update(operator="in", values=["200", "500"])
    assert meter_filters_changed(meter=ok).marked == 1
    usage_aggregate(trigger="test")
    assert values(tenant, ok) == {H10: (Decimal(5), 5)}


def test_full_recompute_command_changes_nothing_when_nothing_changed(tenant, api_calls, storage):
    ingest(tenant, ev("api_calls", "10:01"), ev("storage_gb", "11:01", "2.5"))
    call_command("aggregate_usage", stdout=StringIO())
    before = list(HourlyAggregate.objects.order_by("id").values("value", "revision"))
    out = StringIO()
    call_command("aggregate_usage", "--full", stdout=out)
    assert "marked 2 hour(s) for recompute" in out.getvalue()
    assert "aggregated 2 hour(s), 0 changed" in out.getvalue()
    assert list(HourlyAggregate.objects.order_by("id").values("value", "revision")) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2026-11-01"], "--since and --tenant only apply with --full"),
        (["--full", "--since", "soon"], "argument --since: must be an ISO-8601 string"),
        (["--full", "--tenant", "ghost"], "no tenant with slug, external id or id 'ghost'"),
        (["--batch-size", "0"], "argument --batch-size: must be between 1 and 100000"),
    ],
)
def test_aggregate_usage_bad_arguments(db, args, message):
    with pytest.raises(Exception, match=message):
        call_command("aggregate_usage", *args, stdout=StringIO())


def test_the_hourly_beat_schedule_exists_after_migrate(db):
    task = beat_task("metering.aggregate_usage")
    assert task.enabled
    assert (task.crontab.minute, task.crontab.hour, str(task.crontab.timezone)) == ("2", "*", "UTC")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_runs_at_once_neither_corrupt_nor_double(tenant, other_tenant, api_calls):
    for t in (tenant, other_tenant):
        for h in range(12):
            ingest(t, *[ev("api_calls", f"{h:02d}:{m:02d}") for m in range(0, 60, 6)])
    results = run_at_once(lambda: usage_aggregate(trigger="test", batch_size=2), 3)
    assert sum(r.hours_aggregated for r in results) == 24
    assert HourlyAggregate.objects.count() == 24
    assert set(HourlyAggregate.objects.values_list("value", "event_count", "revision")) == {
        (Decimal(10), 10, 1)
    }
    assert PendingHour.objects.count() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_events_arriving_during_aggregation_are_never_lost(tenant, api_calls):
    stop = threading.Event()
    sent = []

    def produce():
        n = 0
        try:
            while not stop.is_set() or n < 200:
                batch = [ev("api_calls", f"{(n + i) % 12:02d}:30") for i in range(5)]
                result = ingest(tenant, *batch)
                sent.append(result.accepted)
                n += 5
        finally:
            connection.close()

    def aggregate():
        try:
            while not stop.is_set():
                usage_aggregate(trigger="test", batch_size=3)
        finally:
            connection.close()

    threads = [threading.Thread(target=produce), threading.Thread(target=aggregate)]
    for thread in threads:
        thread.start()
    threading.Event().wait(3)
    stop.set()
    for thread in threads:
        thread.join()
    usage_aggregate(trigger="test")
    total = sum(HourlyAggregate.objects.values_list("event_count", flat=True))
    assert total == sum(sent) > 0
    assert sum(HourlyAggregate.objects.values_list("value", flat=True)) == sum(sent)
