"""Raw events of an hour whose usage report is still on its way to Stripe are not pruned
(stripe_sync.retention, registered as a metering retention hold)."""

from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

from metering.aggregation import retention_holds, usage_aggregate, usage_events_prune
from metering.ingest import usage_events_record, usage_events_validate
from metering.models import UsageEvent
from stripe_sync.models import UsageReport
from stripe_sync.retention import earliest_unreported_hour
from stripe_sync.tests.factories import UsageReportFactory

pytestmark = pytest.mark.django_db
HOUR = datetime(2026, 9, 1, 10, tzinfo=UTC)


def test_the_outbox_hold_is_registered():
    assert earliest_unreported_hour in retention_holds


@pytest.mark.parametrize(
    ("status", "kept"),
    [
        (UsageReport.Status.PENDING, True),
        (UsageReport.Status.CORRECTING, True),
        (UsageReport.Status.SENT, False),
        (UsageReport.Status.FAILED, False),
    ],
)
def test_events_of_an_hour_with_a_report_on_its_way_stay(tenant, api_calls, status, kept):
    now = HOUR + timedelta(minutes=5)
    payload = {"events": [{"id": "e1", "meter": "api_calls", "timestamp": HOUR.isoformat()}]}
    with freeze_time(now):
        usage_events_record(
            events=usage_events_validate(payload=payload, now=now, tenant=tenant), now=now, tenant=tenant
        )
        usage_aggregate(trigger="test")
    UsageReportFactory(tenant=tenant, meter=api_calls, hour=HOUR, status=status)
    with freeze_time(HOUR + timedelta(days=60)):
        result = usage_events_prune(older_than=timedelta(days=45))
    assert UsageEvent.objects.filter(tenant=tenant).exists() is kept
    if kept:
        assert result.cutoff <= HOUR
