"""The raw-event store: partitions by day, idempotency across partitions and key generations,
partition upkeep and retention by dropping days (metering/eventstore, docs/scaling.md)."""

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from freezegun import freeze_time

from conftest import beat_task, run_at_once
from metering.aggregation import usage_aggregate, usage_events_prune
from metering.eventstore import event_store
from metering.ingest import usage_events_record, usage_events_validate
from metering.models import HourlyAggregate, PruneRun, UsageEvent
from tenants.tests.factories import TenantFactory

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def send(tenant, now, *events):
    """Ingest [(id, timestamp)] for `tenant` at `now`; the IngestResult."""
    payload = {"events": [{"id": i, "meter": "api_calls", "timestamp": ts.isoformat()} for i, ts in events]}
    with freeze_time(now):
        valid = usage_events_validate(payload=payload, now=now, tenant=tenant)
        return usage_events_record(events=valid, now=now, tenant=tenant)


def stored(tenant):
    return sorted(UsageEvent.objects.filter(tenant=tenant).values_list("event_id", "timestamp"))


# --- Idempotency, on every engine --------------------------------------------------------------------


def test_a_resend_with_a_timestamp_on_another_day_is_a_duplicate(tenant, api_calls):
    assert send(tenant, NOW, ("a", NOW - timedelta(days=3))).accepted == 1
    result = send(tenant, NOW + timedelta(minutes=1), ("a", NOW), ("b", NOW - timedelta(days=20)))
    assert (result.accepted, result.duplicates) == (1, 1)
    assert stored(tenant) == [("a", NOW - timedelta(days=3)), ("b", NOW - timedelta(days=20))]


@pytest.mark.parametrize("later", [timedelta(days=1), timedelta(days=20), timedelta(days=35, hours=23)])
def test_a_resend_up_to_36_days_after_the_first_send_is_a_duplicate(tenant, api_calls, later):
    send(tenant, NOW, ("a", NOW))
    result = send(tenant, NOW + later, ("a", NOW + later - timedelta(minutes=1)))
    assert (result.accepted, result.duplicates) == (0, 1)
    assert stored(tenant) == [("a", NOW)]


# --- PostgreSQL: partitions and key generations ------------------------------------------------------


def _partition_of_row(event_id: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text FROM metering_usageevent WHERE event_id = %s", [event_id]
        )
        return cursor.fetchone()[0]


def _relkind(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE relname = %s", [name])
        row = cursor.fetchone()
    return row[0] if row else ""


@pytest.mark.postgres
def test_events_land_in_the_partition_of_their_utc_day(tenant, api_calls):
    send(tenant, NOW, ("late-evening", datetime(2026, 11, 18, 23, 59, 59, tzinfo=UTC)))
    send(tenant, NOW, ("midnight", datetime(2026, 11, 19, tzinfo=UTC)))
    assert _relkind("metering_usageevent") == "p"  # partitioned
    assert _relkind("metering_eventkey") == "p"
    assert _partition_of_row("late-evening") == "metering_usageevent_20261118"
    assert _partition_of_row("midnight") == "metering_usageevent_20261119"


@pytest.mark.postgres
def test_a_batch_creates_the_partition_it_needs_when_the_upkeep_has_not(tenant, api_calls):
    far = datetime(2031, 3, 4, 8, tzinfo=UTC)  # no upkeep has run anywhere near this day
    assert _relkind("metering_usageevent_20310304") == ""
    assert send(tenant, far, ("x", far - timedelta(hours=1))).accepted == 1
    assert _partition_of_row("x") == "metering_usageevent_20310304"


@pytest.mark.postgres
def test_a_stale_partition_cache_is_forgotten_and_the_batch_still_lands(tenant, api_calls):
    store = event_store()
    store.prepare_for([NOW])
    with connection.cursor() as cursor:  # as retention or a rollback elsewhere would leave it
        cursor.execute("ALTER TABLE metering_usageevent DETACH PARTITION metering_usageevent_20261120")
        cursor.execute("DROP TABLE metering_usageevent_20261120")
    assert send(tenant, NOW, ("y", NOW)).accepted == 1
    assert _partition_of_row("y") == "metering_usageevent_20261120"


def _boundary_after(moment: datetime) -> datetime:
    from metering.eventstore.postgresql import KEY_GENERATION, generation

    return datetime.fromtimestamp((generation(moment) + 1) * KEY_GENERATION.total_seconds(), UTC)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "first_send", ["a second before the boundary", "a day after it", "35 days after it"], ids=str
)
def test_keys_written_into_two_generations_catch_resends_across_the_boundary(tenant, api_calls, first_send):
    boundary = _boundary_after(NOW)
    first = {
        "a second before the boundary": boundary - timedelta(seconds=1),
        "a day after it": boundary + timedelta(days=1),
        "35 days after it": boundary + timedelta(days=35),
    }[first_send]
    send(tenant, first, ("k", first - timedelta(minutes=5)))
    for later in (timedelta(seconds=2), timedelta(days=17), timedelta(days=35, hours=23)):
        result = send(tenant, first + later, ("k", first + later - timedelta(minutes=1)))
        assert result.duplicates == 1, later
    assert len(stored(tenant)) == 1


@pytest.mark.postgres
def test_upkeep_creates_the_coming_days_and_drops_key_generations_no_check_reads(tenant, api_calls):
    from metering.eventstore.postgresql import KEY_GENERATION, generation, key_generations

    old = NOW - 3 * KEY_GENERATION
    send(tenant, old, ("ancient", old))  # writes keys into two old generations
    result = event_store().maintain(now=NOW)
    current = generation(NOW)
    assert set(key_generations()) == {current - 1, current, current + 1}
    assert f"metering_eventkey_g{generation(old)}" in result["dropped_key_generations"]
    for day in ("20261121", "20261122", "20261123", "20261015"):
        assert _relkind(f"metering_usageevent_{day}") == "r"
    # With its keys gone the id is new again (it is long past the 36-day window).
    assert send(tenant, NOW, ("ancient", NOW)).accepted == 1


@pytest.mark.postgres
def test_the_upkeep_runs_hourly_from_beat(db):
    task = beat_task("metering.maintain_event_store")
    assert task.crontab.minute == "5"


# --- Retention ---------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_prune_drops_whole_days_past_retention_and_no_event_of_a_kept_day(tenant, api_calls):
    start = datetime(2026, 9, 1, 22, tzinfo=UTC)
    send(tenant, start + timedelta(hours=1), ("old-1", start), ("old-2", start + timedelta(minutes=30)))
    send(tenant, start + timedelta(days=1), ("next-day", start + timedelta(hours=3)))
    with freeze_time(start + timedelta(days=1, hours=1)):
        usage_aggregate(trigger="test")
    # 45 days after 09-01 23:00 the cutoff is 09-01 23:00: no whole day is past it yet.
    with freeze_time(start + timedelta(days=45, hours=1)):
        assert usage_events_prune(older_than=timedelta(days=45)).deleted == 0
    assert PruneRun.objects.latest().cutoff == datetime(2026, 9, 1, tzinfo=UTC)
    with freeze_time(datetime(2026, 10, 17, 0, 30, tzinfo=UTC)):  # cutoff 09-02 00:30 -> 09-02 00:00
        out = StringIO()
        call_command("prune_usage_events", "--older-than-days", "45", stdout=out)
    assert "deleted 2 event(s)" in out.getvalue()
    assert [e for e, _ in stored(tenant)] == ["next-day"]
    assert _relkind("metering_usageevent_20260901") == ""  # dropped, not emptied
    assert _relkind("metering_usageevent_20260902") == "r"
    assert sorted(HourlyAggregate.objects.values_list("event_count", flat=True)) == [1, 2]


@pytest.mark.postgres
def test_prune_keeps_the_day_of_an_hour_still_pending(tenant, api_calls):
    start = datetime(2026, 9, 1, 10, tzinfo=UTC)
    send(tenant, start, ("never-aggregated", start))
    with freeze_time(start + timedelta(days=60)):
        result = usage_events_prune(older_than=timedelta(days=45))
    assert (result.deleted, result.cutoff) == (0, datetime(2026, 9, 1, tzinfo=UTC))
    assert _relkind("metering_usageevent_20260901") == "r"


# --- Concurrency across partitions and generations ----------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_batches_sharing_ids_across_days_and_generations_store_each_once(api_calls):
    tenant = TenantFactory(slug="racers")
    boundary = _boundary_after(NOW)
    ids = [f"shared-{n}" for n in range(200)]
    # Eight batches of the same 200 ids, each with its own timestamps on its own day, sent at once:
    # half just before a key generation boundary, half just after it.
    plans = iter((boundary + timedelta(seconds=1 if n % 2 else -1), timedelta(days=n + 1)) for n in range(8))
    event_store().prepare_for([boundary - timedelta(days=d) for d in range(10)], now=boundary)
    event_store().prepare_for([], now=boundary + timedelta(seconds=1))

    def ingest():
        now, back = next(plans)
        payload = {
            "events": [{"id": i, "meter": "api_calls", "timestamp": (now - back).isoformat()} for i in ids]
        }
        valid = usage_events_validate(payload=payload, now=now, tenant=tenant)
        return usage_events_record(events=valid, now=now, tenant=tenant).accepted

    results = run_at_once(ingest, 8)

    assert sum(results) == 200
    rows = list(UsageEvent.objects.filter(tenant=tenant).values_list("event_id", flat=True))
    assert sorted(rows) == sorted(ids)
    # Whole batches won or lost per id, and the stored events sit on up to eight different days.
    assert 1 <= UsageEvent.objects.filter(tenant=tenant).dates("timestamp", "day").count() <= 8
