from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from freezegun import freeze_time

from conftest import beat_task
from console.models import OperatorJob
from console.operator_jobs import operator_job_run
from console.tests.factories import OperatorJobFactory
from metering.aggregation import recompute_horizon, usage_aggregate, usage_mark_for_recompute
from metering.ingest import usage_events_record, usage_events_validate
from metering.models import HourlyAggregate, PendingHour, PruneRun, UsageEvent
from metering.tests.factories import PendingHourFactory

pytestmark = pytest.mark.django_db
START = datetime(2026, 9, 1, 12, tzinfo=UTC)


def ingest_at(moment, tenant, *ids):
    with freeze_time(moment):
        payload = {"events": [{"id": i, "meter": "api_calls", "timestamp": moment.isoformat()} for i in ids]}
        events = usage_events_validate(payload=payload, now=moment)
        usage_events_record(tenant=tenant, events=events, now=moment)


def test_old_raw_events_go_and_their_aggregates_stay(tenant, api_calls):
    ingest_at(START, tenant, "old-1", "old-2")
    ingest_at(START + timedelta(days=40), tenant, "recent")
    with freeze_time(START + timedelta(days=40)):
        usage_aggregate(trigger="test")
    with freeze_time(START + timedelta(days=50)):
        out = StringIO()
        call_command("prune_usage_events", "--older-than-days", "45", stdout=out)
    assert "deleted 2 event(s)" in out.getvalue()
    assert list(UsageEvent.objects.values_list("event_id", flat=True)) == ["recent"]
    assert sorted(HourlyAggregate.objects.values_list("value", flat=True)) == [Decimal(1), Decimal(2)]


def test_events_of_a_pending_hour_are_kept(tenant, api_calls):
    ingest_at(START, tenant, "never-aggregated")
    with freeze_time(START + timedelta(days=60)):
        call_command("prune_usage_events", stdout=StringIO())
    assert UsageEvent.objects.count() == 1
    assert PendingHour.objects.count() == 1


def test_retention_shorter_than_stripes_window_is_refused(db):
    with pytest.raises(CommandError, match="longer than Stripe's 35-day window"):
        call_command("prune_usage_events", "--older-than-days", "30", stdout=StringIO())


def test_the_daily_prune_schedule_exists(db):
    task = beat_task("metering.prune_usage_events")
    assert (task.crontab.hour, task.crontab.minute) == ("3", "30")


# --- Pruned hours are never recomputed from what is left -------------------------------------------
# An hour H gets 10 events at once and 1 late event 30 days later; a prune with a 36-day retention
# then removes what it may before its cutoff, the next midnight: on SQLite the 10 (received before
# the cutoff) and not the late one, so the aggregate says 11 and the raw events 1; on PostgreSQL the
# whole day's partition, so the raw events say 0. Every recompute entry point must leave the 11 alone.

H = datetime(2026, 9, 1, 10, tzinfo=UTC)
CUTOFF = datetime(2026, 9, 2, tzinfo=UTC)
AFTER_PRUNE = CUTOFF + timedelta(days=36, hours=1)


def left_after_prune():
    """The raw events of hour H a prune leaves: SQLite deletes by receipt, PostgreSQL drops days."""
    return [] if connection.vendor == "postgresql" else ["late"]


def ingest_events_at(moment, tenant, timestamp, ids):
    with freeze_time(moment):
        payload = {
            "events": [{"id": i, "meter": "api_calls", "timestamp": timestamp.isoformat()} for i in ids]
        }
        usage_events_record(
            tenant=tenant, events=usage_events_validate(payload=payload, now=moment), now=moment
        )
        usage_aggregate(trigger="test")


@pytest.fixture
def partly_pruned_hour(tenant, api_calls):
    ingest_events_at(H + timedelta(minutes=10), tenant, H, [f"early-{n}" for n in range(10)])
    ingest_events_at(H + timedelta(days=30), tenant, H + timedelta(minutes=5), ["late"])
    with freeze_time(AFTER_PRUNE - timedelta(hours=1)):
        call_command("prune_usage_events", "--older-than-days", "36", stdout=StringIO())
    assert list(UsageEvent.objects.values_list("event_id", flat=True)) == left_after_prune()
    assert HourlyAggregate.objects.get(hour=H).value == 11
    return HourlyAggregate.objects.get(hour=H)


def test_prune_records_its_cutoff_before_deleting(partly_pruned_hour):
    run = PruneRun.objects.get()
    assert (run.cutoff, run.deleted) == (CUTOFF, 11 - len(left_after_prune()))
    with freeze_time(AFTER_PRUNE):
        assert recompute_horizon() == CUTOFF


def test_recompute_service_skips_a_partly_pruned_hour_and_keeps_its_aggregate_of_11(partly_pruned_hour):
    with freeze_time(AFTER_PRUNE):
        result = usage_mark_for_recompute(since=H - timedelta(days=1))
        usage_aggregate(trigger="test")
    assert (result.marked, result.skipped, result.horizon) == (0, len(left_after_prune()), CUTOFF)
    assert not PendingHour.objects.exists()
    revision = partly_pruned_hour.revision
    partly_pruned_hour.refresh_from_db()
    assert (partly_pruned_hour.value, partly_pruned_hour.revision) == (11, revision)


def test_full_aggregate_command_refuses_since_before_the_prune_cutoff(partly_pruned_hour):
    with freeze_time(AFTER_PRUNE), pytest.raises(CommandError) as refused:
        call_command("aggregate_usage", "--full", "--since", "2026-09-01", stdout=StringIO())
    assert "--since 2026-09-01 00:00Z is before 2026-09-02 00:00Z" in str(refused.value)
    assert "would lower its aggregate" in str(refused.value)
    assert not PendingHour.objects.exists()
    assert HourlyAggregate.objects.get(hour=H).value == 11


def test_full_aggregate_command_by_default_keeps_the_partly_pruned_hour(partly_pruned_hour):
    with freeze_time(AFTER_PRUNE):
        out = StringIO()
        call_command("aggregate_usage", "--full", stdout=out)
    assert "marked 0 hour(s)" in out.getvalue()
    assert HourlyAggregate.objects.get(hour=H).value == 11


def test_a_pending_hour_before_the_prune_cutoff_is_dropped_not_recomputed(
    partly_pruned_hour, tenant, api_calls
):
    # As a recompute marked before this rule existed, or one racing a prune, would leave it.
    PendingHourFactory(tenant=tenant, meter=api_calls, hour=H, marked_at=AFTER_PRUNE)
    with freeze_time(AFTER_PRUNE):
        run = usage_aggregate(trigger="test")
    assert (run.hours_aggregated, run.hours_changed) == (1, 0)
    assert not PendingHour.objects.exists()
    assert HourlyAggregate.objects.get(hour=H).value == 11


def test_reaggregate_form_refuses_hours_before_the_prune_cutoff(partly_pruned_hour, admin_client, tenant):
    with freeze_time(AFTER_PRUNE):
        response = admin_client.post(
            f"/admin/tenants/tenant/{tenant.pk}/operations/reaggregate/",
            {"first_hour": "2026-09-01T10:00", "last_hour": "2026-09-01T11:00"},
        )
    assert response.status_code == 200
    assert "Hours before 2026-09-02 00:00 UTC cannot be re-aggregated" in response.content.decode()
    assert not OperatorJob.objects.exists()
    assert HourlyAggregate.objects.get(hour=H).value == 11


def test_reaggregate_job_queued_before_the_prune_skips_the_hour_and_says_so(partly_pruned_hour, tenant):
    job = OperatorJobFactory(
        kind=OperatorJob.Kind.REAGGREGATE,
        tenant=tenant,
        params={"since": H.isoformat(), "until": (H + timedelta(hours=1)).isoformat()},
        task_id="job-1",
    )
    with freeze_time(AFTER_PRUNE):
        operator_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == OperatorJob.Status.SUCCEEDED
    skipped = len(left_after_prune())
    assert (job.result["hours_marked"], job.result["hours_skipped_past_retention"]) == (0, skipped)
    if skipped:
        assert "1 hour(s) before 2026-09-02 00:00 UTC skipped" in job.progress
    assert HourlyAggregate.objects.get(hour=H).value == 11


def test_hours_past_the_45_day_retention_are_refused_even_before_any_prune(tenant, api_calls):
    ingest_events_at(H + timedelta(minutes=10), tenant, H, ["a", "b"])
    with freeze_time(H + timedelta(days=46)):
        result = usage_mark_for_recompute(since=H)
        with pytest.raises(CommandError, match="is before"):
            call_command("aggregate_usage", "--full", "--since", "2026-09-01", stdout=StringIO())
    assert (result.marked, result.skipped) == (0, 1)
    assert not PendingHour.objects.exists()


# Every way an hour gets recomputed from raw events, and the test that shows it leaves a partly
# pruned hour alone. A new entry point fails this test until it is added here with its test.
RECOMPUTE_ENTRY_POINTS = {
    # usage_mark_for_recompute callers
    "metering/services.py": "meter_filters_changed -> the service's skip (test_recompute_service_skips_...)",
    "metering/management/commands/aggregate_usage.py": "test_full_aggregate_command_refuses_since_...",
    "console/operator_jobs.py": "test_reaggregate_job_queued_before_the_prune_skips_the_hour_...",
    "bench/aggregate.py": "a benchmark on its own database; the service's skip applies",
}
PENDING_HOUR_WRITERS = {
    "metering/aggregation.py": "usage_mark_for_recompute, and the claim that drops pruned hours "
    "(test_a_pending_hour_before_the_prune_cutoff_is_dropped_not_recomputed)",
    "metering/eventstore/postgresql.py": "ingestion's new events only, never older than 35 days "
    "(inside every prune cutoff)",
    "metering/eventstore/sqlite.py": "the same, on SQLite",
    "bench/aggregate.py": "a benchmark's synthetic data",
    "bench/entitlements.py": "a benchmark's synthetic data, on its own database",
}


def _sources_containing(*patterns: str) -> set[str]:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    found = set()
    for path in root.rglob("*.py"):
        relative = path.relative_to(root).as_posix()
        if relative.startswith((".venv/", "var/")) or "/tests/" in relative or "/migrations/" in relative:
            continue
        text = path.read_text(encoding="utf-8")
        if any(pattern in text for pattern in patterns):
            found.add(relative)
    return found


def test_every_recompute_entry_point_is_known_and_covered():
    callers = _sources_containing("usage_mark_for_recompute(") - {"metering/aggregation.py"}
    assert callers == set(RECOMPUTE_ENTRY_POINTS)
    writers = _sources_containing(
        "INSERT INTO metering_pendinghour", "PendingHour(", "PendingHour._meta.db_table"
    )
    assert writers - {"metering/models.py"} == set(PENDING_HOUR_WRITERS)
