"""Fresh usage in a billing period: what the entitlements, the ingestion limit and the thresholds count.

Usage of (tenant, meter) in a period = the hourly aggregates of its hours that are not pending +
the value of each pending hour computed from its raw events (metering.hourly, aggregation's own
per-hour computation). An event counts as soon as its ingestion commits, not at the next hourly
aggregation. A pending hour that also has an aggregate (late events after it was aggregated) is
counted from its raw events only, never both.

The pending hours are read first and then excluded from the aggregates by name, so a concurrent
aggregation run cannot make an hour count twice: an hour read as pending is counted from its raw
events (all of them, whatever the run did meanwhile); an hour read as not pending is counted from
its aggregate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext

from django.db.models import Max, Q, Sum
from django.db.models.functions import TruncMonth
from django.utils import timezone

from metering.estimates import month_bounds
from metering.hourly import contiguous_ranges, hourly_values, meter_events
from metering.models import HourlyAggregate, Meter, PendingHour, PruneRun
from tenants.models import Tenant

# Totals have up to 38 digits: add them in a context wide enough to stay exact.
WIDE = 100
# A prune never deletes events received less than 35 days ago (usage_events_prune refuses to).
PRUNE_FLOOR = timedelta(days=35)
# (tenant id, meter id, period start)
UsageKey = tuple[int, int, datetime]


def _scope(keys: set[UsageKey], field: str) -> Q:
    """Rows of these (tenant, meter, period): one condition per (tenant, period), meters in a list."""
    meters: dict[tuple[int, datetime], set[int]] = defaultdict(set)
    for tenant_id, meter_id, start in keys:
        meters[(tenant_id, start)].add(meter_id)
    scope = Q()
    for (tenant_id, start), meter_ids in meters.items():
        scope |= Q(
            tenant_id=tenant_id,
            meter_id__in=meter_ids,
            **{f"{field}__gte": start, f"{field}__lt": month_bounds(start)[1]},
        )
    return scope


def _recountable(pending: list[tuple[int, int, datetime]]) -> list[tuple[int, int, datetime]]:
    """Pending hours whose raw events are all still there. An hour before a prune's cutoff may have
    lost some (aggregation drops such an hour and keeps its aggregate): it counts by its aggregate."""
    oldest = min(hour for _, _, hour in pending)
    if oldest >= timezone.now() - PRUNE_FLOOR:
        return pending  # newer than any prune reaches (raw events are kept longer than 35 days)
    cutoff = PruneRun.objects.aggregate(latest=Max("cutoff"))["latest"]
    return pending if cutoff is None else [row for row in pending if row[2] >= cutoff]


def usage_totals(
    *, keys: Iterable[UsageKey], meters: dict[int, Meter] | None = None
) -> dict[UsageKey, Decimal]:
    """Usage of each (tenant id, meter id, period start) in its period (UTC calendar month), counting
    events not aggregated yet. Two queries, plus one per meter with pending hours (a latest meter:
    one more per pending hour). `meters`: meters already loaded, with their filters prefetched."""
    keys = set(keys)
    if not keys:
        return {}
    pending = list(
        PendingHour.objects.filter(_scope(keys, "hour")).values_list("tenant_id", "meter_id", "hour")
    )
    if pending:
        pending = _recountable(pending)
    aggregates = HourlyAggregate.objects.filter(_scope(keys, "hour"))
    if pending:
        hours: dict[tuple[int, int], list[datetime]] = defaultdict(list)
        for tenant_id, meter_id, hour in pending:
            hours[(tenant_id, meter_id)].append(hour)
        excluded = Q()
        for (tenant_id, meter_id), pair_hours in hours.items():
            excluded |= Q(tenant_id=tenant_id, meter_id=meter_id, hour__in=pair_hours)
        aggregates = aggregates.exclude(excluded)
    totals: dict[UsageKey, Decimal] = dict.fromkeys(keys, Decimal(0))
    rows = (
        aggregates.annotate(month=TruncMonth("hour", tzinfo=UTC))
        .order_by()
        .values("tenant_id", "meter_id", "month")
        .annotate(total=Sum("value"))
        .values_list("tenant_id", "meter_id", "month", "total")
    )
    with localcontext(prec=WIDE):
        for tenant_id, meter_id, month, total in rows:
            key = (tenant_id, meter_id, month)
            if key in totals:
                totals[key] += total or Decimal(0)
        for meter_id, value_by_hour in _pending_values(pending, meters or {}).items():
            for (tenant_id, hour), value in value_by_hour.items():
                key = (tenant_id, meter_id, month_bounds(hour)[0])
                if key in totals:
                    totals[key] += value
    return totals


def _pending_values(
    pending: list[tuple[int, int, datetime]], meters: dict[int, Meter]
) -> dict[int, dict[tuple[int, datetime], Decimal]]:
    """{meter id: {(tenant id, hour): value}} of the pending hours, from their raw events."""
    by_meter: dict[int, set[tuple[int, datetime]]] = defaultdict(set)
    for tenant_id, meter_id, hour in pending:
        by_meter[meter_id].add((tenant_id, hour))
    if not by_meter:
        return {}
    missing = by_meter.keys() - meters.keys()
    if missing:
        meters = {**meters, **Meter.objects.prefetch_related("filters").in_bulk(missing)}
    values: dict[int, dict[tuple[int, datetime], Decimal]] = {}
    for meter_id, pairs in by_meter.items():
        ranges = Q()
        for start, end in contiguous_ranges(sorted({hour for _, hour in pairs})):
            ranges |= Q(timestamp__gte=start, timestamp__lt=end)
        meter = meters[meter_id]
        events = meter_events(meter).filter(tenant_id__in={t for t, _ in pairs}).filter(ranges)
        # The ranges cover every pending hour of every tenant listed: keep only the pending pairs.
        values[meter_id] = {
            key: value for key, (value, _) in hourly_values(meter, events).items() if key in pairs
        }
    return values


def tenant_usage_now(
    *, tenant: Tenant, meters: list[Meter], now: datetime | None = None
) -> tuple[datetime, datetime, dict[int, Decimal]]:
    """(period start, period end, {meter id: usage}) of the tenant's current period."""
    start, end = month_bounds(now or timezone.now())
    totals = usage_totals(keys={(tenant.pk, m.pk, start) for m in meters}, meters={m.pk: m for m in meters})
    return start, end, {meter_id: total for (_, meter_id, _), total in totals.items()}
