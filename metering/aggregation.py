"""Hourly aggregation: turn pending hours into HourlyAggregate rows, incrementally.

Ingestion marks (tenant, meter, hour) pending in the same transaction as the events. A run claims
a batch of pending hours with `SELECT ... FOR UPDATE SKIP LOCKED`, recomputes each from its events,
writes the aggregates and deletes the claimed rows, all in one transaction:
- a concurrent ingestion that touches a claimed hour blocks on the row lock until the run commits,
  then inserts the hour again, so its events are aggregated by the next run, never lost;
- an ingestion transaction still open when the run claims leaves its hour locked, and the run
  skips it (SKIP LOCKED) for the next run;
- two runs at once claim disjoint hours; a crash rolls everything back and the hours stay pending.
Cost grows with the number of pending hours and their events, not with history.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Max, QuerySet
from django.db.models.functions import TruncHour
from django.utils import timezone

from core.models import error_line
from metering.eventstore import event_store
from metering.hourly import HOUR
from metering.ingest import BACKFILL_WINDOW, REPORTABLE_WINDOW
from metering.models import (
    AggregationRun,
    HourlyAggregate,
    HourlyAggregateChange,
    Meter,
    PendingHour,
    PruneRun,
    UsageEvent,
)
from metering.thresholds import usage_thresholds_check

logger = logging.getLogger(__name__)
DEFAULT_BATCH = 500
# Raw events are kept this long (the daily prune job's default), longer than Stripe's 35-day window.
RAW_EVENT_RETENTION = timedelta(days=45)


@dataclass(frozen=True)
class AggregationResult:
    hours_aggregated: int
    hours_changed: int
    # (tenant id, meter id, hour) of the aggregates that changed: their months' thresholds are checked.
    changed: frozenset = frozenset()


def _write(
    computed: dict[tuple[int, int, datetime], tuple[Decimal, int]], now: datetime
) -> list[tuple[int, int, datetime]]:
    """Create or update the aggregates of a batch in bulk; record a change row for each one whose
    value or count moved. Returns the (tenant id, meter id, hour) of those that changed."""
    keys = sorted(computed)
    # One locking read of the batch's existing aggregates (a superset: the cross product of its
    # tenants, meters and hours), in one order, so two runs never lock in opposite orders.
    existing = {
        (a.tenant_id, a.meter_id, a.hour): a
        for a in HourlyAggregate.objects.select_for_update()
        .filter(
            tenant_id__in={k[0] for k in keys},
            meter_id__in={k[1] for k in keys},
            hour__in={k[2] for k in keys},
        )
        .order_by("tenant_id", "meter_id", "hour")
    }
    created, updated, changes = [], [], []
    for key in keys:
        value, count = computed[key]
        aggregate = existing.get(key)
        if aggregate is None:
            if count:
                created.append(
                    HourlyAggregate(
                        tenant_id=key[0], meter_id=key[1], hour=key[2], value=value, event_count=count
                    )
                )
            continue
        if aggregate.value == value and aggregate.event_count == count:
            continue
        changes.append(
            HourlyAggregateChange(
                aggregate=aggregate,
                revision=aggregate.revision + 1,
                old_value=aggregate.value,
                new_value=value,
                old_event_count=aggregate.event_count,
                new_event_count=count,
            )
        )
        aggregate.value, aggregate.event_count = value, count
        aggregate.revision += 1
        aggregate.updated_at = now
        updated.append(aggregate)
    HourlyAggregate.objects.bulk_create(created)
    changes += [
        HourlyAggregateChange(aggregate=a, revision=1, new_value=a.value, new_event_count=a.event_count)
        for a in created
    ]
    HourlyAggregate.objects.bulk_update(updated, ["value", "event_count", "revision", "updated_at"])
    HourlyAggregateChange.objects.bulk_create(changes)
    return [(a.tenant_id, a.meter_id, a.hour) for a in (*created, *updated)]


def _claim(batch_size: int) -> list[tuple[int, int, datetime]]:
    claimed = list(
        PendingHour.objects.select_for_update(
            skip_locked=connection.features.has_select_for_update_skip_locked
        )
        .order_by("id")
        .values_list("id", "tenant_id", "meter_id", "hour")[:batch_size]
    )
    if claimed:
        PendingHour.objects.filter(id__in=[row[0] for row in claimed]).delete()
    return [row[1:] for row in claimed]


def usage_aggregate_batch(*, batch_size: int = DEFAULT_BATCH) -> AggregationResult:
    """Aggregate up to `batch_size` pending hours in one transaction.

    A claimed hour that starts before a prune's cutoff may have lost raw events: it is dropped, not
    recomputed, so its aggregate stands (a recompute from what is left would lower it)."""
    with transaction.atomic():
        all_claimed = _claim(batch_size)
        if not all_claimed:
            return AggregationResult(0, 0)
        pruned = pruned_horizon()
        claimed = [row for row in all_claimed if pruned is None or row[2] >= pruned]
        if len(claimed) < len(all_claimed):
            logger.warning(
                "dropped %d pending hour(s) before %s: their raw events may be partly pruned",
                len(all_claimed) - len(claimed),
                pruned,
            )
        meters = {m.pk: m for m in Meter.objects.filter(pk__in={m for _, m, _ in claimed})}
        by_meter = defaultdict(list)
        for tenant_id, meter_id, hour in claimed:
            by_meter[meter_id].append((tenant_id, hour))
        computed = {}
        # One query per meter for all of the batch's tenants and hours: a batch is mostly one or
        # a few hours across many tenants (recomputes are marked hour by hour).
        store = event_store()
        for meter_id, pairs in by_meter.items():
            values = store.hour_values(meters[meter_id], pairs)
            for tenant_id, hour in pairs:
                computed[(tenant_id, meter_id, hour)] = values.get((tenant_id, hour), (Decimal(0), 0))
        changed = _write(computed, timezone.now())
    return AggregationResult(len(all_claimed), len(changed), frozenset(changed))


def usage_aggregate(
    *, trigger: str, batch_size: int = DEFAULT_BATCH, max_batches: int | None = None
) -> AggregationRun:
    """Aggregate every pending hour, batch by batch, record the run, then check the usage thresholds
    of the tenants, meters and months whose hours changed (metering.thresholds), once their
    aggregates are committed."""
    run = AggregationRun.objects.create(started_at=timezone.now(), trigger=trigger)
    batches = 0
    changed: set[tuple[int, int, datetime]] = set()
    try:
        while max_batches is None or batches < max_batches:
            result = usage_aggregate_batch(batch_size=batch_size)
            batches += 1
            run.hours_aggregated += result.hours_aggregated
            run.hours_changed += result.hours_changed
            # One entry per (tenant, meter, month), not per hour: the check sums whole months.
            changed |= {(t, m, hour.replace(day=1, hour=0)) for t, m, hour in result.changed}
            if result.hours_aggregated < batch_size:
                break
        usage_thresholds_check(periods=changed)
    except Exception as exc:
        run.finish(AggregationRun.Status.FAILED, error=error_line(exc))
        raise
    run.finish(AggregationRun.Status.SUCCEEDED)
    return run


def recompute_window_start() -> datetime:
    """The first hour a recompute covers by default: every hour the outbox still reports (ingestion's
    35 days plus the reporting lag), plus the hour that straddles its edge. Older hours can no longer
    be reported, so recomputing them changes nothing that is billed."""
    return (timezone.now() - REPORTABLE_WINDOW - HOUR).replace(minute=0, second=0, microsecond=0)


def _ceil_hour(moment: datetime) -> datetime:
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + HOUR


def pruned_horizon() -> datetime | None:
    """The first hour no prune has touched: every hour before it may have lost raw events (a prune
    deletes events timed and received before its cutoff, whatever their hour). None: never pruned."""
    cutoff = PruneRun.objects.aggregate(latest=Max("cutoff"))["latest"]
    return None if cutoff is None else _ceil_hour(cutoff)


def recompute_horizon(*, now: datetime | None = None) -> datetime:
    """The first hour that may be recomputed from raw events: hours past the retention
    (`RAW_EVENT_RETENTION`, which the daily prune may reach at any moment) or before a prune's
    cutoff may have lost some of their events, and recomputing them would lower a kept aggregate."""
    horizon = _ceil_hour((now or timezone.now()) - RAW_EVENT_RETENTION)
    pruned = pruned_horizon()
    return horizon if pruned is None else max(horizon, pruned)


@dataclass(frozen=True)
class RecomputeResult:
    marked: int  # hours marked pending again
    skipped: int  # hours with events before `horizon`, left as they are
    horizon: datetime


def _events_in(
    since: datetime, until: datetime | None, tenant_id: int | None, meter_id: int | None
) -> QuerySet:
    events = UsageEvent.objects.filter(timestamp__gte=since)
    if until is not None:
        events = events.filter(timestamp__lt=until)
    if tenant_id is not None:
        events = events.filter(tenant_id=tenant_id)
    if meter_id is not None:
        events = events.filter(meter_id=meter_id)
    return events


def usage_mark_for_recompute(
    *,
    since: datetime,
    until: datetime | None = None,
    tenant_id: int | None = None,
    meter_id: int | None = None,
) -> RecomputeResult:
    """Mark every hour in [since, until) (until: no end) that has events pending again: a recompute.

    Used after a meter's filters change, by `aggregate_usage --full` and by the tenant page's
    re-aggregation. One INSERT ... SELECT, so memory does not grow with history. Hours before
    `recompute_horizon()` are never marked: their raw events may be partly pruned, and their
    aggregates stand; they are counted as skipped.
    """
    horizon = recompute_horizon()
    skipped = 0
    if since < horizon:
        old_end = horizon if until is None else min(until, horizon)
        skipped = (
            _events_in(since, old_end, tenant_id, meter_id)
            .annotate(bucket=TruncHour("timestamp"))
            .values_list("tenant_id", "meter_id", "bucket")
            .distinct()
            .order_by()
            .count()
        )
        since = horizon
    if until is not None and until <= since:
        return RecomputeResult(marked=0, skipped=skipped, horizon=horizon)
    events = _events_in(since, until, tenant_id, meter_id)
    hours = (
        events.annotate(bucket=TruncHour("timestamp"))
        .values_list("tenant_id", "meter_id", "bucket")
        .distinct()
        .order_by()
    )
    select_sql, params = hours.query.sql_with_params()
    table = PendingHour._meta.db_table
    # "WHERE true" lets SQLite tell the upsert's ON CONFLICT from a join condition.
    sql = (
        f"INSERT INTO {table} (tenant_id, meter_id, hour, marked_at) "  # noqa: S608 - table name from the model
        # Hour by hour, so that each aggregation batch covers few hours across many tenants.
        f"SELECT h.*, %s FROM ({select_sql}) AS h WHERE true ORDER BY 3, 1, 2 "
        "ON CONFLICT (tenant_id, meter_id, hour) DO UPDATE SET marked_at = excluded.marked_at"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, (timezone.now(), *params))
        marked = cursor.rowcount
    return RecomputeResult(marked=marked, skipped=skipped, horizon=horizon)


@dataclass(frozen=True)
class PruneResult:
    deleted: int
    cutoff: datetime


# Who else must be done with an hour before its raw events may go: stripe_sync registers the
# earliest hour its outbox still has to send (metering cannot import it). Each callable takes the
# cutoff and answers the earliest hour before it that still needs its raw events, or None.
retention_holds: list = []


def usage_events_prune(*, older_than: timedelta, now: datetime | None = None) -> PruneResult:
    """Remove raw events timed before now - older_than, once every hour before that is aggregated
    (no pending hour) and reported (retention_holds), through the event store: PostgreSQL drops
    whole days' partitions, SQLite deletes in batches. Aggregates stay forever; raw events are kept
    longer than Stripe's 35-day window, so no hour Stripe still accepts loses its events."""
    if older_than <= BACKFILL_WINDOW:
        raise ValueError("raw events must be kept longer than Stripe's 35-day window")
    now = now or timezone.now()
    cutoff = now - older_than
    # A pending hour that old means aggregation is stuck: keep its events until it has run.
    stuck = (
        PendingHour.objects.filter(hour__lt=cutoff).order_by("hour").values_list("hour", flat=True).first()
    )
    holds = [stuck, *(hold(cutoff) for hold in retention_holds)]
    for hour in holds:
        if hour is not None:
            cutoff = min(cutoff, hour)
    store = event_store()
    cutoff = store.effective_cutoff(cutoff)
    # Recorded (and committed) before anything is removed, so that no recompute starting from now
    # on reads an hour this run may be thinning out.
    run = PruneRun.objects.create(started_at=timezone.now(), cutoff=cutoff)
    run.deleted = store.prune(cutoff=cutoff, now=now)
    run.finished_at = timezone.now()
    run.save(update_fields=["deleted", "finished_at"])
    return PruneResult(deleted=run.deleted, cutoff=cutoff)
