"""The hourly aggregation task on a real Celery worker process (test Redis, test PostgreSQL)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from metering.ingest import usage_events_record, usage_events_validate
from metering.models import AggregationRun, HourlyAggregate, PendingHour
from metering.tasks import aggregate_usage

pytestmark = [pytest.mark.worker, pytest.mark.redis]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_worker_aggregates_pending_hours(celery_worker_process, tenant, api_calls):
    now = timezone.now()
    hour = (now - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    payload = {
        "events": [
            {"id": f"w{n}", "meter": "api_calls", "timestamp": (hour + timedelta(minutes=n)).isoformat()}
            for n in range(7)
        ]
    }
    usage_events_record(tenant=tenant, events=usage_events_validate(payload=payload, now=now), now=now)

    result = aggregate_usage.delay().get(timeout=60)

    assert (result["hours_aggregated"], result["hours_changed"]) == (1, 1)
    aggregate = HourlyAggregate.objects.get(tenant=tenant, meter=api_calls)
    assert (aggregate.hour, aggregate.value, aggregate.event_count) == (hour, Decimal(7), 7)
    assert PendingHour.objects.count() == 0
    assert AggregationRun.objects.get(pk=result["run"]).trigger == "beat"
