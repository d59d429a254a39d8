"""The usage reporting outbox: what Stripe must be told about each (tenant, meter, hour).

`usage_reports_prepare()` compares every hourly aggregate of the reporting window (every hour
ingestion accepted, plus REPORTING_LAG) with what the outbox already covers (`ReportedHour`) and, for
each one that changed, writes a `UsageReport` row with the difference, in the same transaction that
reads the aggregate and under a lock on the (tenant, meter) balance. A chunk of pairs that fails is
done again pair by pair: a pair that cannot be prepared is marked failed on its balance (admin,
dashboard) and the others go on. The row's identifier is derived from (tenant, meter, hour, revision) and its
value is fixed when it is written, so any resend (after a crash, a timeout, a reconciliation) carries
the same identifier with the same value and Stripe drops the copy.

Stripe meter event values are whole numbers. Local quantities are decimal, so each (tenant, meter)
keeps a balance: the local quantity reported so far and the whole units sent for it. A report sends
floor(quantity after) - units before; the fraction is carried into the next report and nothing is
lost or billed twice. A decrease (a late recompute that lowered an hour) is corrected at Stripe when
every event sent for the hour is under CORRECTION_WINDOW old: the sender cancels them (meter event
adjustments) and then sends the hour's whole new total (`_correct_lowered_hour`,
`usage_reports_correct`). Older, or if Stripe refuses the cancel, it sends nothing and is offset
against later usage of the same tenant and meter; reconciliation shows the hour ("offset").

Whether an hour is billed is decided by the plan in force during that hour (`hour_billed`, from the
tenant's plan history), for late events too. Free hours are covered (recorded as not billed) but
not reported; billed hours are reported once the tenant has a Stripe customer and the meter exists
at Stripe. A change of more than Stripe's 15 digits goes out as several meter events.

A report is stamped at its hour's start, except in the hour the tenant's metered subscription started:
there, at the subscription's start, or Stripe (which bills usage by timestamp within the subscription's
period) would bill that hour to no invoice (`report_timestamp`, worked out again at every send).
"""

from __future__ import annotations

import functools
import logging
import operator
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import NamedTuple

from django.db import connection, transaction
from django.db.models import Count, Exists, F, Min, OuterRef, Q, Subquery
from django.utils import timezone

from metering.ingest import MAX_PARTS_PER_HOUR, REPORTABLE_WINDOW, STRIPE_MAX_EVENT_VALUE
from metering.models import HourlyAggregate
from stripe_sync.client import stripe_client
from stripe_sync.models import ReportedHour, ReportingBalance, StripeMeter, TenantSubscription, UsageReport
from tenants.models import Tenant, TenantChange
from tenants.selectors import PlanHistory

logger = logging.getLogger(__name__)
HOUR = timedelta(hours=1)

# Stripe accepts meter events stamped within the past 35 days. A report whose hour is older than
# that when it is sent is stamped at the oldest moment Stripe still takes, with this margin; the
# stamp is worked out again at every send (a resend never reuses a stale one).
STRIPE_PAST_WINDOW = timedelta(days=35)
TIMESTAMP_MARGIN = timedelta(minutes=10)
# Every hour ingestion accepted is still prepared (with a clamped timestamp if needed): see
# metering.ingest.REPORTABLE_WINDOW, which filter-change recomputes cover too.
PREPARE_WINDOW = REPORTABLE_WINDOW
# Unsent usage this close to Stripe's 35 days is shown on the dashboard and alerted.
EDGE_WARNING = timedelta(days=3)
PAIRS_PER_TRANSACTION = 200
# A Stripe meter event value has at most 15 digits: a larger change of one hour goes out as several
# events (parts), each with its own deterministic identifier.
STRIPE_MAX_VALUE = STRIPE_MAX_EVENT_VALUE  # ingestion refuses an hour of more than MAX_PARTS_PER_HOUR
MAX_UNITS = 2**63 - 1  # ReportingBalance.units and UsageReport.value are 64-bit


class PairError(Exception):
    """This (tenant, meter) cannot be prepared; the message says why (shown in admin)."""


@dataclass
class PrepareResult:
    reports: int = 0  # outbox rows written that carry units to send
    carried: int = 0  # rows written with nothing to send yet (under one whole unit)
    units: int = 0
    free_hours: int = 0  # hours covered without billing (the tenant was on the free plan then)
    waiting_pairs: int = 0  # (tenant, meter) pairs that cannot be reported yet (no customer / meter)
    failed_pairs: int = 0  # (tenant, meter) pairs whose preparation failed (marked, shown in admin)
    corrected: int = 0  # lowered hours to be corrected at Stripe (cancel, then send the new total)
    errors: list[str] | None = None

    def add(self, other: PrepareResult) -> None:
        for f in fields(self):
            if f.name != "errors":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def report_identifier(*, tenant_id: int, meter_id: int, hour: datetime, revision: int, part: int = 1) -> str:
    suffix = f"-p{part}" if part > 1 else ""
    # f"{hour:%Y%m%d%H}", without strftime's cost (thousands per run)
    code = f"{hour.year:04d}{hour.month:02d}{hour.day:02d}{hour.hour:02d}"
    return f"bp-{tenant_id}-{meter_id}-{code}-r{revision}{suffix}"


def report_timestamp(
    *, hour: datetime, now: datetime, subscription_start: datetime | None = None
) -> datetime:
    """The meter event's timestamp for a report of `hour`: the hour's start, or the start of the
    tenant's metered subscription when it started during that hour (Stripe bills meter usage by
    timestamp within the subscription's period [start, end): stamped at the hour's start, the usage
    of the hour a subscription starts would be billed by no invoice). Either is inside the hour, so
    reconciliation (Stripe's summaries per hour) and the row's identity do not change. An hour older
    than Stripe takes is stamped at the oldest moment Stripe still accepts."""
    stamp = hour
    if subscription_start is not None and hour < subscription_start < hour + HOUR:
        stamp = subscription_start
    return max(stamp, now - STRIPE_PAST_WINDOW + TIMESTAMP_MARGIN)


def subscription_starts(tenant_ids) -> dict[int, datetime]:
    """{tenant id: when its metered subscription started} for the tenants that have one recorded
    (`TenantSubscription`, Stripe's `start_date` in dj-stripe's mirror), in one query.

    The recorded subscription counts even if it has ended since: moving a stamp to its start only
    matters in the hour it started, and usage from that moment belongs to its period. A resubscribed
    tenant's record names the new subscription, whose start then decides.
    """
    starts = {}
    for tenant_id, start_date, period_start in TenantSubscription.objects.filter(
        tenant_id__in=set(tenant_ids), subscription__isnull=False
    ).values_list(
        "tenant_id",
        "subscription__stripe_data__start_date",
        "subscription__stripe_data__current_period_start",
    ):
        moment = start_date if isinstance(start_date, int) else period_start
        if isinstance(moment, int) and not isinstance(moment, bool):
            starts[tenant_id] = datetime.fromtimestamp(moment, tz=UTC)
    return starts


def window_start(now: datetime) -> datetime:
    """The first hour the outbox (and reconciliation) covers: every hour ingestion accepted."""
    return (now - PREPARE_WINDOW).replace(minute=0, second=0, microsecond=0)


def edge_moment(now: datetime) -> datetime:
    """Usage of hours before this, still unsent, is about to fall out of Stripe's window."""
    return now - STRIPE_PAST_WINDOW + EDGE_WARNING


def pairs_q(pairs) -> Q:
    return functools.reduce(operator.or_, (Q(tenant_id=t, meter_id=m) for t, m in pairs))


def _changed_aggregates(since: datetime):
    """Aggregates inside the window whose revision the outbox has not covered yet, and hours covered
    as free whose tenant moved to metered within the hour afterwards (billed now, same revision)."""
    covered = ReportedHour.objects.filter(
        tenant_id=OuterRef("tenant_id"), meter_id=OuterRef("meter_id"), hour=OuterRef("hour")
    )
    upgraded_within = TenantChange.objects.filter(
        tenant_id=OuterRef("tenant_id"),
        field=TenantChange.Field.PLAN,
        new_value=Tenant.Plan.METERED,
        created_at__gte=OuterRef("hour"),
        created_at__lt=OuterRef("hour") + HOUR,
    )
    return (
        HourlyAggregate.objects.filter(hour__gte=since)
        .annotate(
            covered_revision=Subquery(covered.values("revision")[:1]),
            covered_quantity=Subquery(covered.values("quantity")[:1]),
            covered_billed=Subquery(covered.values("billed")[:1]),
        )
        .filter(
            Q(covered_revision__isnull=True)
            | Q(covered_revision__lt=F("revision"))
            | Q(covered_billed=False) & Exists(upgraded_within)
        )
    )


class ChangedHour(NamedTuple):
    """One aggregate the outbox has not covered at its revision: a row of `_changed_aggregates`."""

    tenant_id: int
    meter_id: int
    hour: datetime
    revision: int
    value: Decimal
    covered_revision: int | None
    covered_quantity: Decimal | None
    covered_billed: bool | None


# `_changed_aggregates` in one pass on PostgreSQL: a hash join against the covered hours instead of
# three correlated subqueries per aggregate (10,000 aggregates: ~15 ms against ~230 ms), read as tuples
# (no model instances). The two select the same rows (test_reporting_outbox_speed.py checks it).
_CHANGED_SQL = """
SELECT a.tenant_id, a.meter_id, a.hour, a.revision, a.value,
       r.revision AS covered_revision, r.quantity AS covered_quantity, r.billed AS covered_billed
FROM {aggregates} a
LEFT JOIN {covered} r ON r.tenant_id = a.tenant_id AND r.meter_id = a.meter_id AND r.hour = a.hour
WHERE a.hour >= %(since)s {pairs}
  AND (r.id IS NULL OR r.revision < a.revision OR (NOT r.billed AND EXISTS (
    SELECT 1 FROM {changes} c
    WHERE c.tenant_id = a.tenant_id AND c.field = %(plan_field)s AND c.new_value = %(metered)s
      AND c.created_at >= a.hour AND c.created_at < a.hour + interval '1 hour')))
"""
_IN_PAIRS = (
    "AND (a.tenant_id, a.meter_id) IN (SELECT * FROM unnest(%(tenants)s::bigint[], %(meters)s::bigint[]))"
)


def _quoted(value) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


# How each column type's values are written inside a PostgreSQL array literal (None is NULL).
_ARRAY_ELEMENT = {
    "bigint": str,
    "integer": str,
    "numeric": str,
    "boolean": lambda v: "t" if v else "f",
    "timestamptz": lambda v: f'"{v.isoformat()}"',
    "varchar": _quoted,
    "text": _quoted,
}


def pg_array(values, type_: str = "varchar") -> str:
    """A PostgreSQL array literal of `values` (of SQL type `type_`): one query parameter for a whole
    column instead of one adapted value per row."""
    element = _ARRAY_ELEMENT[type_]
    return "{" + ",".join("NULL" if v is None else element(v) for v in values) + "}"


def _changed_query(since: datetime, pairs=None) -> tuple[str, dict]:
    params = {
        "since": since,
        "plan_field": TenantChange.Field.PLAN.value,
        "metered": Tenant.Plan.METERED.value,
    }
    if pairs is not None:
        params |= {
            "tenants": pg_array((t for t, _ in pairs), "bigint"),
            "meters": pg_array((m for _, m in pairs), "bigint"),
        }
    sql = _CHANGED_SQL.format(
        aggregates=HourlyAggregate._meta.db_table,
        covered=ReportedHour._meta.db_table,
        changes=TenantChange._meta.db_table,
        pairs=_IN_PAIRS if pairs is not None else "",
    )
    return sql, params


def _changed_pairs(since: datetime) -> list[tuple[int, int]]:
    """The (tenant, meter) pairs with changed aggregates, sorted."""
    if connection.vendor != "postgresql":
        return sorted(set(_changed_aggregates(since).values_list("tenant_id", "meter_id").order_by()))
    sql, params = _changed_query(since)
    with connection.cursor() as cursor:
        distinct = f"SELECT DISTINCT tenant_id, meter_id FROM ({sql}) changed ORDER BY 1, 2"  # noqa: S608
        cursor.execute(distinct, params)
        return [tuple(row) for row in cursor.fetchall()]


def _changed_hours(since: datetime, pairs) -> list[ChangedHour]:
    """The changed aggregates of these pairs, by tenant, meter and hour."""
    if connection.vendor != "postgresql":
        rows = (
            _changed_aggregates(since)
            .filter(pairs_q(pairs))
            .order_by("tenant_id", "meter_id", "hour")
            .values_list(*ChangedHour._fields)
        )
        return [ChangedHour(*row) for row in rows]
    sql, params = _changed_query(since, pairs)
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} ORDER BY a.tenant_id, a.meter_id, a.hour", params)
        return [ChangedHour(*row) for row in cursor.fetchall()]


def usage_unsent_near_edge(*, now: datetime | None = None) -> tuple[int, datetime | None]:
    """Hours of usage not at Stripe yet that are close to (or past) Stripe's 35 days: outbox rows
    pending or failed, and changed aggregates not prepared (a pair waiting or failed). Returns
    their number and the oldest hour."""
    now = now or timezone.now()
    edge = edge_moment(now)
    rows = UsageReport.objects.filter(
        status__in=[UsageReport.Status.PENDING, UsageReport.Status.FAILED], hour__lt=edge
    ).aggregate(n=Count("id"), oldest=Min("hour"))
    unprepared = (
        _changed_aggregates(window_start(now))
        .filter(hour__lt=edge)
        .aggregate(n=Count("id"), oldest=Min("hour"))
    )
    oldest = min((m for m in (rows["oldest"], unprepared["oldest"]) if m is not None), default=None)
    return rows["n"] + unprepared["n"], oldest


def hour_billed(plans: PlanHistory, tenant_id: int, hour: datetime) -> bool:
    """An hour is billed if the tenant was on the metered plan at any moment of it.

    Decided from the plan history, not the plan of the moment reporting runs: a tenant moved to
    free keeps its metered hours (and their late events) billed, an upgraded tenant's free hours
    stay free. In the hour of a change the usage is not split by event; it is billed whole, so no
    metered usage is ever lost (at most the free part of that one hour is billed with it).
    """
    return plans.metered_during(tenant_id, hour, hour + HOUR)


def usage_reports_prepare(*, now: datetime | None = None) -> PrepareResult:
    """Write outbox rows for every changed (tenant, meter, hour); safe to run concurrently.

    Pairs go in transactions of PAIRS_PER_TRANSACTION; if one fails, its pairs are done one by
    one, so a pair that cannot be prepared is marked failed (admin, dashboard) and the others go on.
    Set-based on PostgreSQL: per transaction, one read of the changed aggregates (a join, as tuples)
    and one statement each for the outbox rows, the covered hours and the balances.
    """
    now = now or timezone.now()
    since = window_start(now)
    result = PrepareResult(errors=[])
    pairs = _changed_pairs(since)
    if not pairs:
        return result
    tenants = {t.pk: t for t in Tenant.objects.filter(pk__in={t for t, _ in pairs})}
    plans = PlanHistory(tenants.values())
    event_names = dict(StripeMeter.objects.exclude(stripe_meter_id="").values_list("meter_id", "event_name"))
    starts = subscription_starts(tenants)
    context = (tenants, plans, event_names, since, now, starts)
    for start in range(0, len(pairs), PAIRS_PER_TRANSACTION):
        chunk = pairs[start : start + PAIRS_PER_TRANSACTION]
        try:
            result.add(_prepare_pairs(chunk, *context))
            continue
        except Exception:  # noqa: BLE001 (one pair's problem: find it below, the others go on)
            logger.warning("preparing %d (tenant, meter) pairs failed; retrying them one by one", len(chunk))
        for pair in chunk:
            try:
                result.add(_prepare_pairs([pair], *context))
            except Exception as error:  # noqa: BLE001 (recorded on the pair, shown in admin)
                message = (
                    error.args[0] if isinstance(error, PairError) else f"{type(error).__name__}: {error}"
                )
                logger.error("usage reports of tenant %s meter %s not prepared: %s", *pair, message)
                _mark_pair_failed(pair, message, now)
                result.failed_pairs += 1
                result.errors.append(f"tenant {pair[0]} meter {pair[1]}: {message}")
    return result


def _mark_pair_failed(pair: tuple[int, int], message: str, now: datetime) -> None:
    tenant_id, meter_id = pair
    balance, _ = ReportingBalance.objects.get_or_create(tenant_id=tenant_id, meter_id=meter_id)
    ReportingBalance.objects.filter(pk=balance.pk).update(failed_at=now, error=message[:2000])


def _prepare_pairs(pairs, tenants, plans, event_names, since, now, starts) -> PrepareResult:
    result = PrepareResult()
    with transaction.atomic():
        ReportingBalance.objects.bulk_create(
            [ReportingBalance(tenant_id=t, meter_id=m) for t, m in pairs], ignore_conflicts=True
        )
        # The balance row lock serializes writers of one (tenant, meter): a concurrent run waits
        # here, then sees the hours this one covered and writes nothing twice.
        balances = {
            (b.tenant_id, b.meter_id): b
            for b in ReportingBalance.objects.select_for_update().filter(pairs_q(pairs)).order_by("id")
        }
        by_pair: dict[tuple[int, int], list[ChangedHour]] = {}
        for agg in _changed_hours(since, pairs):
            by_pair.setdefault((agg.tenant_id, agg.meter_id), []).append(agg)
        reports, covered, touched = [], [], set()
        for key, aggregates in by_pair.items():
            tenant = tenants[key[0]]
            # Once billed, an hour stays billed (what was sent for it is not taken back).
            billed = {
                agg.hour: bool(agg.covered_billed) or hour_billed(plans, tenant.pk, agg.hour)
                for agg in aggregates
            }
            if any(billed.values()) and (not tenant.stripe_customer_id or key[1] not in event_names):
                result.waiting_pairs += 1  # not lost: covered once the customer and meter exist
                continue
            balance = balances[key]
            if balance.failed_at is not None:
                balance.failed_at, balance.error = None, ""
                touched.add(key)
            for agg in aggregates:
                covered.append(
                    (agg.tenant_id, agg.meter_id, agg.hour, agg.revision, agg.value, billed[agg.hour])
                )
                if not billed[agg.hour]:
                    result.free_hours += 1
                    continue
                # Nothing of an hour covered as free was billed: all of it is the difference now.
                delta = agg.value - (agg.covered_quantity if agg.covered_billed else Decimal(0))
                if delta == 0:
                    continue
                if delta < 0 and agg.covered_billed:
                    replacement = _correct_lowered_hour(
                        agg, balance, tenant, event_names[agg.meter_id], now, starts.get(tenant.pk)
                    )
                    if replacement is not None:
                        touched.add(key)
                        reports.append(replacement)
                        result.corrected += 1
                        if replacement.value > 0:
                            result.reports += 1
                            result.units += replacement.value
                        continue
                balance.quantity += delta
                units = max(balance.units, int(balance.quantity.to_integral_value(rounding=ROUND_FLOOR)))
                if units > MAX_UNITS:
                    raise PairError(
                        f"{agg.hour:%Y-%m-%d %H}:00: the running total would be {units} whole units, more "
                        f"than can be recorded ({MAX_UNITS}); nothing of this pair is reported until fixed"
                    )
                value, balance.units = units - balance.units, units
                touched.add(key)
                rows = _rows(agg, delta, value, tenant, event_names[agg.meter_id], now, starts.get(tenant.pk))
                reports.extend(rows)
                if value > 0:
                    result.reports += len(rows)
                    result.units += value
                else:
                    result.carried += 1
        _insert_reports(reports)
        _upsert_covered(covered)
        _update_balances([balances[k] for k in touched])
    return result


_BALANCE_COLUMNS = ("id", "quantity", "units", "failed_at", "error")


def _update_balances(balances: list[ReportingBalance]) -> None:
    if not balances:
        return
    if connection.vendor != "postgresql":
        ReportingBalance.objects.bulk_update(balances, list(_BALANCE_COLUMNS[1:]))
        return
    types = ("bigint", "numeric", "bigint", "timestamptz", "text")
    source, params = _unnest(_BALANCE_COLUMNS, types, balances)
    with connection.cursor() as cursor:
        update = (
            f"UPDATE {ReportingBalance._meta.db_table} b SET quantity = u.quantity, units = u.units, "  # noqa: S608
            f"failed_at = u.failed_at, error = u.error FROM {source} AS u({', '.join(_BALANCE_COLUMNS)}) "
            "WHERE b.id = u.id"
        )
        cursor.execute(update, params)


_REPORT_COLUMNS = (
    "tenant_id",
    "meter_id",
    "hour",
    "revision",
    "identifier",
    "quantity",
    "value",
    "customer_id",
    "event_name",
    "timestamp",
    "status",
    "replaces_hour",
)
_REPORT_TYPES = (
    "bigint",
    "bigint",
    "timestamptz",
    "integer",
    "varchar",
    "numeric",
    "bigint",
    "varchar",
    "varchar",
    "timestamptz",
    "varchar",
    "boolean",
)


@dataclass(slots=True)
class OutboxRow:
    """A UsageReport about to be written (plain values: thousands are built per run)."""

    tenant_id: int
    meter_id: int
    hour: datetime
    revision: int
    identifier: str
    quantity: Decimal
    value: int
    customer_id: str
    event_name: str
    timestamp: datetime
    status: str
    replaces_hour: bool = False


def _unnest(columns, types, rows) -> tuple[str, dict]:
    """`unnest(%(c0)s::type[], ...)` with one array literal per column."""
    params, args = {}, []
    for i, (column, type_) in enumerate(zip(columns, types, strict=True)):
        if rows and isinstance(rows[0], tuple):
            params[f"c{i}"] = pg_array((row[i] for row in rows), type_)
        else:
            params[f"c{i}"] = pg_array((getattr(row, column) for row in rows), type_)
        args.append(f"%(c{i})s::{type_}[]")
    return f"unnest({', '.join(args)})", params


def _insert_reports(rows: list[OutboxRow]) -> None:
    """The outbox rows in one statement (PostgreSQL: INSERT ... SELECT FROM unnest of one array per
    column; elsewhere bulk_create). A repeated identifier raises IntegrityError as before."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        UsageReport.objects.bulk_create(
            [UsageReport(**{c: getattr(r, c) for c in _REPORT_COLUMNS}) for r in rows], batch_size=1000
        )
        return
    source, params = _unnest(_REPORT_COLUMNS, _REPORT_TYPES, rows)
    params["now"] = timezone.now()
    with connection.cursor() as cursor:
        insert = (
            f"INSERT INTO {UsageReport._meta.db_table} ({', '.join(_REPORT_COLUMNS)}, attempts, "  # noqa: S608
            "outcome_unknown, error_code, error_message, created_at, updated_at) "
            f"SELECT *, 0, false, '', '', %(now)s, %(now)s FROM {source}"
        )
        cursor.execute(insert, params)


_COVERED_COLUMNS = ("tenant_id", "meter_id", "hour", "revision", "quantity", "billed")


def _upsert_covered(covered: list[tuple]) -> None:
    """Record the hours covered, at their revision, quantity and billed flag (tuples in
    _COVERED_COLUMNS order), in one statement on PostgreSQL."""
    if not covered:
        return
    if connection.vendor != "postgresql":
        ReportedHour.objects.bulk_create(
            [ReportedHour(**dict(zip(_COVERED_COLUMNS, row, strict=True))) for row in covered],
            batch_size=1000,
            update_conflicts=True,
            unique_fields=["tenant", "meter", "hour"],
            update_fields=["revision", "quantity", "billed"],
        )
        return
    types = ("bigint", "bigint", "timestamptz", "integer", "numeric", "boolean")
    source, params = _unnest(_COVERED_COLUMNS, types, covered)
    with connection.cursor() as cursor:
        upsert = (
            f"INSERT INTO {ReportedHour._meta.db_table} ({', '.join(_COVERED_COLUMNS)}) "  # noqa: S608
            f"SELECT * FROM {source} "
            "ON CONFLICT (tenant_id, meter_id, hour) DO UPDATE SET revision = EXCLUDED.revision, "
            "quantity = EXCLUDED.quantity, billed = EXCLUDED.billed"
        )
        cursor.execute(upsert, params)


# Stripe cancels a meter event within 24 hours of receiving it; a lowered hour is corrected at Stripe
# only if every event sent for it is younger than this (the margin covers the send's own delay).
CORRECTION_WINDOW = timedelta(hours=23)


def _correct_lowered_hour(
    agg, balance, tenant: Tenant, event_name: str, now: datetime, subscription_start: datetime | None
):
    """A recompute lowered an hour already reported: if every event sent for it can still be
    canceled at Stripe, take the whole hour back and write one row with its new total.

    The hour's sent rows become `correcting` (the sender cancels them at Stripe, then sends the
    replacement, which waits until none is left); rows that never reached Stripe (nothing to send,
    pending and never attempted) are canceled here. Their quantity and units leave the balance and
    the new total enters it like any report (floor of the running quantity, fraction carried), so a
    refused cancel can be turned back into today's offset exactly (`_correction_refused`).
    Returns the replacement row (not saved), or None when the hour must be offset instead.
    """
    rows = list(
        UsageReport.objects.filter(tenant_id=agg.tenant_id, meter_id=agg.meter_id, hour=agg.hour)
        .exclude(status=UsageReport.Status.CANCELED)
        .select_for_update()
    )
    sent, local = [], []
    for row in rows:
        if row.status == UsageReport.Status.SENT and row.sent_at and row.sent_at >= now - CORRECTION_WINDOW:
            sent.append(row)
        elif row.status == UsageReport.Status.NOTHING_TO_SEND or (
            row.status == UsageReport.Status.PENDING and row.attempts == 0 and not row.outcome_unknown
        ):
            local.append(row)
        else:
            return None  # too old to cancel, failed, in flight or being canceled: offset
    if sum((r.quantity for r in rows), Decimal(0)) != agg.covered_quantity:
        return None  # the rows do not account for the hour exactly: do not guess
    balance.quantity -= agg.covered_quantity
    balance.units -= sum(r.value for r in sent) + sum(r.value for r in local)
    balance.quantity += agg.value
    units = max(balance.units, int(balance.quantity.to_integral_value(rounding=ROUND_FLOOR)))
    value = units - balance.units
    if value > STRIPE_MAX_VALUE or units > MAX_UNITS:
        raise PairError(f"{agg.hour:%Y-%m-%d %H}:00: the lowered hour's new total is too large to send")
    balance.units = units
    stamp = timezone.now()
    UsageReport.objects.filter(pk__in=[r.pk for r in sent]).update(
        status=UsageReport.Status.CORRECTING, updated_at=stamp
    )
    UsageReport.objects.filter(pk__in=[r.pk for r in local]).update(
        status=UsageReport.Status.CANCELED,
        error_message=f"replaced by revision {agg.revision} (the hour was lowered)",
        updated_at=stamp,
    )
    (row,) = _rows(agg, agg.value, value, tenant, event_name, now, subscription_start)
    row.replaces_hour = True
    return row


def usage_reports_correct(*, now: datetime | None = None) -> dict[str, int]:
    """Cancel at Stripe the events of lowered hours (rows `correcting`), one by one.

    Each cancel is recorded as soon as Stripe answers; a crash before that leaves the row
    `correcting` and the next run cancels it again (Stripe's answer for an event already canceled
    changes nothing). The hour's replacement is sent by the sender once none of its rows is left
    correcting. A cancel Stripe refuses (past its 24 hours, unknown event) turns the hour back into
    an offset (`_correction_refused`), shown by reconciliation. Other errors leave the row for the
    next run.
    """
    import stripe

    counts = {"canceled": 0, "refused": 0, "errors": 0}
    for row in UsageReport.objects.filter(status=UsageReport.Status.CORRECTING).order_by("id"):
        try:
            adjustment = stripe_client().v1.billing.meter_event_adjustments.create(
                params={
                    "event_name": row.event_name,
                    "type": "cancel",
                    "cancel": {"identifier": row.identifier},
                }
            )
        except stripe.InvalidRequestError as error:
            message = getattr(error, "user_message", None) or str(error)
            logger.warning(
                "Stripe refused to cancel %s: %s; the hour is offset instead", row.identifier, message
            )
            _correction_refused(row, message)
            counts["refused"] += 1
            continue
        except stripe.StripeError as error:
            logger.warning("canceling %s at Stripe failed (%s); tried again next run", row.identifier, error)
            counts["errors"] += 1
            continue
        UsageReport.objects.filter(pk=row.pk, status=UsageReport.Status.CORRECTING).update(
            status=UsageReport.Status.CANCELED,
            stripe_response={**(row.stripe_response or {}), "adjustment": adjustment.to_dict()},
            error_message="canceled at Stripe: its hour was lowered and is sent again whole",
            updated_at=timezone.now(),
        )
        counts["canceled"] += 1
    return counts


def _correction_refused(row: UsageReport, message: str) -> None:
    """Stripe would not cancel `row`: it stays sent, and the hour's replacement row becomes what an
    offset would have been (the hour's new total minus what stays at Stripe for it)."""
    with transaction.atomic():
        balance = ReportingBalance.objects.select_for_update().get(
            tenant_id=row.tenant_id, meter_id=row.meter_id
        )
        if not UsageReport.objects.filter(pk=row.pk, status=UsageReport.Status.CORRECTING).update(
            status=UsageReport.Status.SENT,
            error_message=f"not canceled at Stripe ({message}); the lowered hour is offset against "
            "later usage of this tenant and meter",
            updated_at=timezone.now(),
        ):
            return
        replacement = (
            UsageReport.objects.select_for_update()
            .filter(
                tenant_id=row.tenant_id,
                meter_id=row.meter_id,
                hour=row.hour,
                replaces_hour=True,
                status__in=[UsageReport.Status.PENDING, UsageReport.Status.NOTHING_TO_SEND],
            )
            .order_by("-id")
            .first()
        )
        # Undo the replacement, put the refused row back, then the difference as an offset.
        balance.units += row.value
        balance.quantity += row.quantity
        quantity = row.quantity
        if replacement is not None:
            balance.units -= replacement.value
            balance.quantity -= replacement.quantity
            quantity = replacement.quantity
        delta = quantity - row.quantity
        balance.quantity += delta
        units = max(balance.units, int(balance.quantity.to_integral_value(rounding=ROUND_FLOOR)))
        value, balance.units = units - balance.units, units
        balance.save(update_fields=["units", "quantity"])
        if replacement is not None:
            UsageReport.objects.filter(pk=replacement.pk).update(
                quantity=delta,
                value=value,
                status=UsageReport.Status.PENDING if value > 0 else UsageReport.Status.NOTHING_TO_SEND,
                error_message="an earlier event of the hour could not be canceled: offset",
                updated_at=timezone.now(),
            )


def _rows(
    agg,
    delta: Decimal,
    value: int,
    tenant: Tenant,
    event_name: str,
    now: datetime,
    subscription_start: datetime | None = None,
) -> list[OutboxRow]:
    """The outbox rows of one hour's change: one, or several parts if its value has more than
    Stripe's 15 digits (the first part carries the quantity, the others 0)."""
    parts = max(1, -(-value // STRIPE_MAX_VALUE))
    if parts > MAX_PARTS_PER_HOUR:
        raise PairError(
            f"{agg.hour:%Y-%m-%d %H}:00: {value} units in one hour would take {parts} meter events "
            f"of at most {STRIPE_MAX_VALUE}; more than {MAX_PARTS_PER_HOUR} is refused as implausible"
        )
    rows = []
    remaining = value
    for part in range(1, parts + 1):
        part_value = min(remaining, STRIPE_MAX_VALUE)
        remaining -= part_value
        rows.append(
            OutboxRow(
                tenant_id=agg.tenant_id,
                meter_id=agg.meter_id,
                hour=agg.hour,
                revision=agg.revision,
                identifier=report_identifier(
                    tenant_id=agg.tenant_id,
                    meter_id=agg.meter_id,
                    hour=agg.hour,
                    revision=agg.revision,
                    part=part,
                ),
                quantity=delta if part == 1 else Decimal(0),
                value=part_value,
                customer_id=tenant.stripe_customer_id,
                event_name=event_name,
                timestamp=report_timestamp(hour=agg.hour, now=now, subscription_start=subscription_start),
                status=UsageReport.Status.PENDING if part_value > 0 else UsageReport.Status.NOTHING_TO_SEND,
            )
        )
    return rows


def error_report_samples(reason) -> dict[str, tuple[str, str]]:
    """{report identifier: (Stripe's error code, its message)} from the `reason` of a meter error
    report event (Stripe lists a few sample errors per error code)."""
    errors: dict[str, tuple[str, str]] = {}
    for error_type in reason.get("error_types") or []:
        for sample in error_type.get("sample_errors") or []:
            identifier = ((sample.get("request") or {}).get("identifier")) or ""
            if identifier:
                errors[identifier] = (error_type.get("code") or "", sample.get("error_message") or "")
    return errors


def usage_reports_mark_rejected(*, errors: dict[str, tuple[str, str]], source_event: str = "") -> int:
    """Stripe refused these events after accepting them (an asynchronous meter error report).

    `errors` maps a report identifier to (Stripe's error code, its message). Returns the number of
    outbox rows marked failed; identifiers that are not ours are ignored.
    """
    now = timezone.now()
    suffix = f" (Stripe error report {source_event})" if source_event else ""
    marked = 0
    # Conditional on status: a row canceled (or being canceled) meanwhile is left as it is.
    rejectable = (UsageReport.Status.PENDING, UsageReport.Status.SENT, UsageReport.Status.FAILED)
    for identifier, (code, message) in errors.items():
        marked += UsageReport.objects.filter(identifier=identifier, status__in=rejectable).update(
            status=UsageReport.Status.FAILED,
            error_code=(code or "")[:100],
            error_message=f"{message}{suffix}",
            outcome_unknown=False,
            updated_at=now,
        )
    return marked


def usage_report_retry(*, report: UsageReport) -> bool:
    """Put a failed report back in the queue (same identifier and value): False if it was not failed."""
    return bool(
        UsageReport.objects.filter(pk=report.pk, status=UsageReport.Status.FAILED).update(
            status=UsageReport.Status.PENDING, next_attempt_at=None, updated_at=timezone.now()
        )
    )


class ReportError(Exception):
    """An operator action on a report that cannot be done; the message says why."""


ADJUSTMENT_WINDOW = timedelta(hours=24)


def usage_report_cancel(*, report: UsageReport) -> None:
    """Cancel a wrong report at Stripe (a meter event adjustment, within 24 hours of sending it).

    The row is claimed first with a conditional update (sent -> canceling), so of two operators
    canceling the same row at once only one calls Stripe and adjusts the balance; the other is told
    it is no longer sent. Its units and quantity leave the (tenant, meter) balance, so the fraction
    carry stays right; the hour then shows in reconciliation as local usage not sent.
    """
    report.refresh_from_db()
    if report.status != UsageReport.Status.SENT:
        raise ReportError(f"only a sent report can be canceled; {report.identifier} is {report.status}")
    if report.sent_at < timezone.now() - ADJUSTMENT_WINDOW:
        raise ReportError(
            f"Stripe cancels meter events only within 24 hours; {report.identifier} was sent at "
            f"{report.sent_at:%Y-%m-%d %H:%M} UTC"
        )
    claimed = UsageReport.objects.filter(pk=report.pk, status=UsageReport.Status.SENT).update(
        status=UsageReport.Status.CANCELING, updated_at=timezone.now()
    )
    if not claimed:
        report.refresh_from_db()
        raise ReportError(f"only a sent report can be canceled; {report.identifier} is {report.status}")
    try:
        adjustment = stripe_client().v1.billing.meter_event_adjustments.create(
            params={
                "event_name": report.event_name,
                "type": "cancel",
                "cancel": {"identifier": report.identifier},
            }
        )
    except BaseException:
        UsageReport.objects.filter(pk=report.pk, status=UsageReport.Status.CANCELING).update(
            status=UsageReport.Status.SENT, updated_at=timezone.now()
        )
        raise
    with transaction.atomic():
        balance = ReportingBalance.objects.select_for_update().get(
            tenant_id=report.tenant_id, meter_id=report.meter_id
        )
        balance.units -= report.value
        balance.quantity -= report.quantity
        balance.save(update_fields=["units", "quantity"])
        UsageReport.objects.filter(pk=report.pk, status=UsageReport.Status.CANCELING).update(
            status=UsageReport.Status.CANCELED,
            stripe_response={**(report.stripe_response or {}), "adjustment": adjustment.to_dict()},
            updated_at=timezone.now(),
        )
    report.refresh_from_db()
