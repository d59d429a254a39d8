"""What reporting still needs of metering's raw events: the retention hold it registers
(metering.aggregation.retention_holds, from StripeSyncConfig.ready)."""

from datetime import datetime

from django.db.models import Min

from stripe_sync.models import UsageReport

# Reports that have not reached a final state: their hour may still be corrected or resent.
UNFINISHED = (
    UsageReport.Status.PENDING,
    UsageReport.Status.CANCELING,
    UsageReport.Status.CORRECTING,
)


def earliest_unreported_hour(cutoff: datetime) -> datetime | None:
    """The earliest hour before `cutoff` with a report still on its way to Stripe, else None: raw
    events of that hour and later stay until it is sent, canceled or refused."""
    return UsageReport.objects.filter(status__in=UNFINISHED, hour__lt=cutoff).aggregate(earliest=Min("hour"))[
        "earliest"
    ]
