"""Reads of usage for tenants."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import Count, Sum
from django.db.models.functions import TruncDay

from metering.models import HourlyAggregate, Meter
from tenants.models import Tenant


@dataclass(frozen=True)
class UsagePoint:
    meter: str
    start: datetime
    value: Decimal
    hours: int
    events: int


def usage_series(
    *, tenant: Tenant, start: datetime, end: datetime, granularity: str, meter: Meter | None = None
) -> list[UsagePoint]:
    """The tenant's aggregates in [start, end), per hour or per UTC day.

    A day's value is the sum of its hours' values: each hour's value is what is billed for it.
    """
    aggregates = HourlyAggregate.objects.filter(tenant=tenant, hour__gte=start, hour__lt=end)
    if meter is not None:
        aggregates = aggregates.filter(meter=meter)
    if granularity == "hour":
        rows = aggregates.order_by("meter__code", "hour").values_list(
            "meter__code", "hour", "value", "event_count"
        )
        return [UsagePoint(code, hour, value, 1, events) for code, hour, value, events in rows]
    rows = (
        aggregates.annotate(day=TruncDay("hour"))
        .values("meter__code", "day")
        .annotate(value=Sum("value"), events=Sum("event_count"), hours=Count("id"))
        .order_by("meter__code", "day")
    )
    return [
        UsagePoint(row["meter__code"], row["day"], row["value"], row["hours"], row["events"]) for row in rows
    ]


def daily_usage(*, tenant: Tenant, days: list[date]) -> dict[str, dict[date, Decimal]]:
    """Each meter's usage per UTC day over the consecutive `days`, by meter code: the daily points of
    `usage_series` (one grouped query). The tenant page and the metering admin's usage chart read this."""
    points = usage_series(
        tenant=tenant,
        start=datetime.combine(days[0], time.min, tzinfo=UTC),
        end=datetime.combine(days[-1] + timedelta(days=1), time.min, tzinfo=UTC),
        granularity="day",
    )
    daily: dict[str, dict[date, Decimal]] = defaultdict(dict)
    for point in points:
        daily[point.meter][point.start.astimezone(UTC).date()] = point.value
    return dict(daily)


def last_days(*, now: datetime, count: int) -> list[date]:
    """The `count` UTC days ending with `now`'s, oldest first."""
    today = now.astimezone(UTC).date()
    return [today - timedelta(days=offset) for offset in range(count - 1, -1, -1)]
