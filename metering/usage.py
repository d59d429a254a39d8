"""Fresh usage in a billing period: what the entitlements, the ingestion limit and the thresholds count.

Usage of (tenant, meter) in a period = the hourly aggregates of its hours that are not pending +
the value of each pending hour computed from its raw events (metering.hourly, aggregation's own
per-hour computation). An event counts as soon as its ingestion commits, not at the next hourly
aggregation. A pending hour that also has an aggregate (late events after it was aggregated) is
counted from its raw events only, never both.

The settled hours' aggregates and the list of pending hours come from one statement (one snapshot),
so a concurrent aggregation run cannot make an hour count twice: an hour pending in that snapshot
is counted from its raw events, read next (all of them, whatever the run did meanwhile); an hour
not pending in it is counted from its aggregate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext

from django.db import connection
from django.db.models import DecimalField, Exists, Max, OuterRef, Q, Sum, Value
from django.db.models.functions import TruncMonth
from django.utils import timezone

from metering.estimates import month_bounds
from metering.eventstore import event_store
from metering.models import HourlyAggregate, Meter, PendingHour, PruneRun
from tenants.models import Tenant

# Totals have up to 38 digits: add them in a context wide enough to stay exact.
WIDE = 100
# A prune never deletes events received less than 35 days ago (usage_events_prune refuses to).
PRUNE_FLOOR = timedelta(days=35)
SETTLED, PENDING = 0, 1
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


# One statement, so one snapshot: the month's aggregates of each (tenant, meter), and its pending
# hours, which the raw events then count. The hot path of GET /api/v1/entitlements/{meter}: written
# out for PostgreSQL, where it sums every hour's aggregate by an index-only scan (the covering index
# of migration 0010) and gives each pending hour's own aggregate, to take out again (an anti-join
# probed the pending hours once per hour of the month: 5 times slower); the ORM's union also cost
# more to build than to run. The sums are grouped by the key's own period start: a date_trunc of
# every hour (700 a month per meter) took three quarters of the statement's time. Elsewhere the
# same through the ORM, pending hours left out in SQL.
_PG_ROWS = """
WITH k AS (
    SELECT * FROM unnest(%(tenants)s::bigint[], %(meters)s::bigint[], %(starts)s::timestamptz[],
                         %(ends)s::timestamptz[]) AS k(tenant_id, meter_id, start, "end")
)
SELECT k.tenant_id, k.meter_id, k.start, 0, sum(a.value)
FROM k JOIN metering_hourlyaggregate a
  ON a.tenant_id = k.tenant_id AND a.meter_id = k.meter_id AND a.hour >= k.start AND a.hour < k."end"
GROUP BY k.tenant_id, k.meter_id, k.start
UNION ALL
SELECT p.tenant_id, p.meter_id, p.hour, 1, a.value
FROM k JOIN metering_pendinghour p
  ON p.tenant_id = k.tenant_id AND p.meter_id = k.meter_id AND p.hour >= k.start AND p.hour < k."end"
LEFT JOIN metering_hourlyaggregate a
  ON a.tenant_id = p.tenant_id AND a.meter_id = p.meter_id AND a.hour = p.hour
"""


def _rows_postgresql(keys: set[UsageKey]) -> list:
    ordered = sorted(keys)
    params = {
        "tenants": [k[0] for k in ordered],
        "meters": [k[1] for k in ordered],
        "starts": [k[2] for k in ordered],
        "ends": [month_bounds(k[2])[1] for k in ordered],
    }
    with connection.cursor() as cursor:
        cursor.execute(_PG_ROWS, params)
        return cursor.fetchall()


def _rows_portable(keys: set[UsageKey]):
    scope = _scope(keys, "hour")
    pending_now = PendingHour.objects.filter(
        tenant_id=OuterRef("tenant_id"), meter_id=OuterRef("meter_id"), hour=OuterRef("hour")
    )
    settled = (
        HourlyAggregate.objects.filter(scope)
        .exclude(Exists(pending_now))
        .annotate(month=TruncMonth("hour", tzinfo=UTC), kind=Value(SETTLED))
        .order_by()
        .values("tenant_id", "meter_id", "month", "kind")
        .annotate(total=Sum("value"))
        .values_list("tenant_id", "meter_id", "month", "kind", "total")
    )
    pending_hours = (
        PendingHour.objects.filter(scope)
        .annotate(kind=Value(PENDING), total=Value(None, output_field=DecimalField()))
        .order_by()
        .values_list("tenant_id", "meter_id", "hour", "kind", "total")
    )
    return settled.union(pending_hours, all=True)


def usage_totals(
    *, keys: Iterable[UsageKey], meters: dict[int, Meter] | None = None
) -> dict[UsageKey, Decimal]:
    """Usage of each (tenant id, meter id, period start) in its period (UTC calendar month), counting
    events not aggregated yet. One query, plus one per meter with pending hours (a latest meter:
    one more per pending hour). `meters`: meters already loaded, with their filters prefetched."""
    keys = set(keys)
    if not keys:
        return {}
    rows = _rows_postgresql(keys) if connection.vendor == "postgresql" else _rows_portable(keys)
    totals: dict[UsageKey, Decimal] = dict.fromkeys(keys, Decimal(0))
    pending = []
    with localcontext(prec=WIDE):
        for tenant_id, meter_id, moment, kind, total in rows:
            if kind == PENDING:
                pending.append((tenant_id, meter_id, moment))
                # An hour pending again counts by its raw events: its aggregate (PostgreSQL's rows
                # give it; the ORM's leave it out of the sums) is taken out.
                key = (tenant_id, meter_id, month_bounds(moment)[0])
                if total is not None and key in totals:
                    totals[key] -= total
                continue
            key = (tenant_id, meter_id, moment)
            if key in totals:
                totals[key] += total or Decimal(0)
        if pending:
            kept = _recountable(pending)
            for tenant_id, meter_id, hour in set(pending) - set(kept):
                # Too old to count from raw events: its aggregate, if it has one, stands.
                totals[(tenant_id, meter_id, month_bounds(hour)[0])] += _aggregate_of(
                    tenant_id, meter_id, hour
                )
            pending = kept
        for meter_id, value_by_hour in _pending_values(pending, meters or {}).items():
            for (tenant_id, hour), value in value_by_hour.items():
                key = (tenant_id, meter_id, month_bounds(hour)[0])
                if key in totals:
                    totals[key] += value
    return totals


def _aggregate_of(tenant_id: int, meter_id: int, hour: datetime) -> Decimal:
    value = (
        HourlyAggregate.objects.filter(tenant_id=tenant_id, meter_id=meter_id, hour=hour)
        .values_list("value", flat=True)
        .first()
    )
    return value or Decimal(0)


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
    store = event_store()
    for meter_id, pairs in by_meter.items():
        computed = store.hour_values(meters[meter_id], pairs)
        values[meter_id] = {key: value for key, (value, _) in computed.items()}
    return values


def tenant_usage_now(
    *, tenant: Tenant, meters: list[Meter], now: datetime | None = None
) -> tuple[datetime, datetime, dict[int, Decimal]]:
    """(period start, period end, {meter id: usage}) of the tenant's current period."""
    start, end = month_bounds(now or timezone.now())
    totals = usage_totals(keys={(tenant.pk, m.pk, start) for m in meters}, meters={m.pk: m for m in meters})
    return start, end, {meter_id: total for (_, meter_id, _), total in totals.items()}
