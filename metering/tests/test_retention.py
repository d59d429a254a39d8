from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from freezegun import freeze_time

from conftest import beat_task_from_migration
from metering.aggregation import usage_aggregate
from metering.ingest import usage_events_record, usage_events_validate
from metering.models import HourlyAggregate, PendingHour, UsageEvent

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
    task = beat_task_from_migration("metering", "0003_prune_schedule", "metering.prune_usage_events")
    assert (task.crontab.hour, task.crontab.minute) == ("3", "30")
