"""The usage reporting outbox: what Stripe must be told about each (tenant, meter, hour).

`usage_reports_prepare()` compares every hourly aggregate inside Stripe's 35-day window with what
the outbox already covers (`ReportedHour`) and, for each one that changed, writes a `UsageReport`
row with the difference, in the same transaction that reads the aggregate and under a lock on the
(tenant, meter) balance. The row's identifier is derived from (tenant, meter, hour, revision) and its
value is fixed when it is written, so any resend (after a crash, a timeout, a reconciliation) carries
the same identifier with the same value and Stripe drops the copy.

Stripe meter event values are whole numbers. Local quantities are decimal, so each (tenant, meter)
keeps a balance: the local quantity reported so far and the whole units sent for it. A report sends
floor(quantity after) - units before; the fraction is carried into the next report and nothing is
lost or billed twice. A decrease (a late recompute that lowered an hour) sends nothing and is offset
against later usage of the same tenant and meter; reconciliation shows the hour.

Free-plan tenants are covered (their hours are recorded as not billed) but not reported; metered
tenants are reported once they have a Stripe customer and the meter exists at Stripe.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

from django.db import transaction
from django.db.models import F, OuterRef, Q, Subquery
from django.utils import timezone

from metering.ingest import BACKFILL_WINDOW
from metering.models import HourlyAggregate
from stripe_sync.client import stripe_client
from stripe_sync.models import ReportedHour, ReportingBalance, StripeMeter, UsageReport
from tenants.models import Tenant

# Stripe accepts meter events stamped within the past 35 days; a report for an hour that has
# slipped (just) past that is stamped at the oldest moment Stripe still takes, with this margin.
STRIPE_PAST_WINDOW = BACKFILL_WINDOW
TIMESTAMP_MARGIN = timedelta(minutes=10)
PAIRS_PER_TRANSACTION = 200


@dataclass
class PrepareResult:
    reports: int = 0  # outbox rows written that carry units to send
    carried: int = 0  # rows written with nothing to send yet (under one whole unit)
    units: int = 0
    free_hours: int = 0  # hours of free-plan tenants covered without billing
    waiting_pairs: int = 0  # (tenant, meter) pairs that cannot be reported yet (no customer / meter)


def report_identifier(*, tenant_id: int, meter_id: int, hour: datetime, revision: int) -> str:
    return f"bp-{tenant_id}-{meter_id}-{hour:%Y%m%d%H}-r{revision}"


def report_timestamp(*, hour: datetime, now: datetime) -> datetime:
    """The hour's start, or the oldest moment Stripe still accepts if the hour is older."""
    return max(hour, now - STRIPE_PAST_WINDOW + TIMESTAMP_MARGIN)


def window_start(now: datetime) -> datetime:
    return (now - STRIPE_PAST_WINDOW).replace(minute=0, second=0, microsecond=0)


def pairs_q(pairs) -> Q:
    return functools.reduce(operator.or_, (Q(tenant_id=t, meter_id=m) for t, m in pairs))


def _changed_aggregates(since: datetime):
    """Aggregates inside the window whose revision the outbox has not covered yet."""
    covered = ReportedHour.objects.filter(
        tenant_id=OuterRef("tenant_id"), meter_id=OuterRef("meter_id"), hour=OuterRef("hour")
    )
    return (
        HourlyAggregate.objects.filter(hour__gte=since)
        .annotate(
            covered_revision=Subquery(covered.values("revision")[:1]),
            covered_quantity=Subquery(covered.values("quantity")[:1]),
        )
        .filter(Q(covered_revision__isnull=True) | Q(covered_revision__lt=F("revision")))
    )


def usage_reports_prepare(*, now: datetime | None = None) -> PrepareResult:
    """Write outbox rows for every changed (tenant, meter, hour); safe to run concurrently."""
    now = now or timezone.now()
    since = window_start(now)
    result = PrepareResult()
    pairs = sorted(set(_changed_aggregates(since).values_list("tenant_id", "meter_id").order_by()))
    if not pairs:
        return result
    tenants = {t.pk: t for t in Tenant.objects.filter(pk__in={t for t, _ in pairs})}
    event_names = dict(StripeMeter.objects.exclude(stripe_meter_id="").values_list("meter_id", "event_name"))
    ready = []
    for tenant_id, meter_id in pairs:
        tenant = tenants[tenant_id]
        if tenant.plan == Tenant.Plan.METERED and (
            not tenant.stripe_customer_id or meter_id not in event_names
        ):
            result.waiting_pairs += 1
            continue
        ready.append((tenant_id, meter_id))
    for start in range(0, len(ready), PAIRS_PER_TRANSACTION):
        _prepare_pairs(ready[start : start + PAIRS_PER_TRANSACTION], tenants, event_names, since, now, result)
    return result


def _prepare_pairs(pairs, tenants, event_names, since, now, result: PrepareResult) -> None:
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
        aggregates = (
            _changed_aggregates(since).filter(pairs_q(pairs)).order_by("tenant_id", "meter_id", "hour")
        )
        reports, covered, touched = [], [], set()
        for agg in aggregates:
            key = (agg.tenant_id, agg.meter_id)
            tenant = tenants[agg.tenant_id]
            billed = tenant.plan == Tenant.Plan.METERED
            delta = agg.value - (agg.covered_quantity or Decimal(0))
            covered.append(
                ReportedHour(
                    tenant_id=agg.tenant_id,
                    meter_id=agg.meter_id,
                    hour=agg.hour,
                    revision=agg.revision,
                    quantity=agg.value,
                    billed=billed,
                )
            )
            if not billed:
                result.free_hours += 1
                continue
            if delta == 0:
                continue
            balance = balances[key]
            balance.quantity += delta
            units = max(balance.units, int(balance.quantity.to_integral_value(rounding=ROUND_FLOOR)))
            value, balance.units = units - balance.units, units
            touched.add(key)
            reports.append(
                UsageReport(
                    tenant_id=agg.tenant_id,
                    meter_id=agg.meter_id,
                    hour=agg.hour,
                    revision=agg.revision,
                    identifier=report_identifier(
                        tenant_id=agg.tenant_id, meter_id=agg.meter_id, hour=agg.hour, revision=agg.revision
                    ),
                    quantity=delta,
                    value=value,
                    customer_id=tenant.stripe_customer_id,
                    event_name=event_names[agg.meter_id],
                    timestamp=report_timestamp(hour=agg.hour, now=now),
                    status=UsageReport.Status.PENDING if value > 0 else UsageReport.Status.NOTHING_TO_SEND,
                )
            )
            if value > 0:
                result.reports += 1
                result.units += value
            else:
                result.carried += 1
        UsageReport.objects.bulk_create(reports, batch_size=1000)
        ReportedHour.objects.bulk_create(
            covered,
            batch_size=1000,
            update_conflicts=True,
            unique_fields=["tenant", "meter", "hour"],
            update_fields=["revision", "quantity", "billed"],
        )
        ReportingBalance.objects.bulk_update([balances[k] for k in touched], ["quantity", "units"])


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
    rows = list(UsageReport.objects.filter(identifier__in=list(errors)))
    now = timezone.now()
    suffix = f" (Stripe error report {source_event})" if source_event else ""
    for row in rows:
        code, message = errors[row.identifier]
        row.status = UsageReport.Status.FAILED
        row.error_code = code or ""
        row.error_message = f"{message}{suffix}"
        row.updated_at = now
    UsageReport.objects.bulk_update(rows, ["status", "error_code", "error_message", "updated_at"])
    return len(rows)


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

    Its units and quantity leave the (tenant, meter) balance, so the fraction carry stays right; the
    hour then shows in reconciliation as local usage not sent, until an operator decides.
    """
    if report.status != UsageReport.Status.SENT:
        raise ReportError(f"only a sent report can be canceled; {report.identifier} is {report.status}")
    if report.sent_at < timezone.now() - ADJUSTMENT_WINDOW:
        raise ReportError(
            f"Stripe cancels meter events only within 24 hours; {report.identifier} was sent at "
            f"{report.sent_at:%Y-%m-%d %H:%M} UTC"
        )
    adjustment = stripe_client().v1.billing.meter_event_adjustments.create(
        params={
            "event_name": report.event_name,
            "type": "cancel",
            "cancel": {"identifier": report.identifier},
        }
    )
    with transaction.atomic():
        balance = ReportingBalance.objects.select_for_update().get(
            tenant_id=report.tenant_id, meter_id=report.meter_id
        )
        balance.units -= report.value
        balance.quantity -= report.quantity
        balance.save(update_fields=["units", "quantity"])
        UsageReport.objects.filter(pk=report.pk).update(
            status=UsageReport.Status.CANCELED,
            stripe_response={**(report.stripe_response or {}), "adjustment": adjustment.to_dict()},
            updated_at=timezone.now(),
        )
    report.refresh_from_db()
