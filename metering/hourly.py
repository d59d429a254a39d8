"""The per-hour value of a meter computed from raw events: what aggregation stores for an hour, and
what the fresh usage read (metering.usage) counts for an hour still pending."""

from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import CharField, Count, Max, QuerySet, Sum
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, TruncHour

from metering.models import Meter, UsageEvent

HOUR = timedelta(hours=1)


def hour_start(moment: datetime) -> datetime:
    """The start of the hour `moment` falls in."""
    return moment.replace(minute=0, second=0, microsecond=0)


def _property_text(name: str):
    # Compared as text so that 200 and "200" match alike on PostgreSQL and SQLite.
    return Cast(KeyTextTransform(name, "properties"), CharField())


def meter_events(meter: Meter, filters: list | None = None) -> QuerySet:
    """The events that count for a meter (its property filters applied)."""
    events = UsageEvent.objects.filter(meter=meter)
    for index, meter_filter in enumerate(meter.filters.all() if filters is None else filters):
        alias = f"_filter_{index}"
        events = events.alias(**{alias: _property_text(meter_filter.property)}).filter(
            **{f"{alias}__in": meter_filter.text_values()}
        )
    return events


def hourly_values(meter: Meter, events: QuerySet) -> dict[tuple[int, datetime], tuple[Decimal, int]]:
    """{(tenant_id, hour): (value, event_count)} for the events given, one GROUP BY query."""
    value_expr = {
        Meter.Aggregation.COUNT: Count("id"),
        Meter.Aggregation.SUM: Sum("quantity"),
        Meter.Aggregation.MAX: Max("quantity"),
        Meter.Aggregation.LATEST: Count("id"),  # replaced by the last quantity below
        Meter.Aggregation.UNIQUE_COUNT: Count(_property_text(meter.unique_property), distinct=True)
        if meter.unique_property
        else Count("id"),
    }[meter.aggregation]
    rows = (
        events.annotate(bucket=TruncHour("timestamp"))
        .values("tenant_id", "bucket")
        .annotate(value=value_expr, events=Count("id"))
        .order_by()
    )
    result = {(r["tenant_id"], r["bucket"]): (Decimal(r["value"] or 0), r["events"]) for r in rows}
    if meter.aggregation == Meter.Aggregation.LATEST:
        for (tenant_id, hour), (_, count) in result.items():
            last = (
                events.filter(tenant_id=tenant_id, timestamp__gte=hour, timestamp__lt=hour + HOUR)
                .order_by("-timestamp", "-id")
                .values_list("quantity", flat=True)
                .first()
            )
            result[(tenant_id, hour)] = (last, count)
    return result


def contiguous_ranges(hours: list[datetime]) -> list[tuple[datetime, datetime]]:
    """Sorted hours as [start, end) ranges, so each range is one index range scan."""
    ranges: list[tuple[datetime, datetime]] = []
    for hour in hours:
        if ranges and ranges[-1][1] == hour:
            ranges[-1] = (ranges[-1][0], hour + HOUR)
        else:
            ranges.append((hour, hour + HOUR))
    return ranges
