"""Reconciliation: local aggregates vs what the outbox sent vs what Stripe's meter holds.

For each (tenant, meter) with billed usage in the window, Stripe's hourly meter event summaries are
read and compared hour by hour:
- STRIPE_MISSING: Stripe holds less than was sent (an event refused after acceptance, or lost). Inside
  Stripe's 35-day window the hour's sent rows are sent again, one by one through v1 so that Stripe
  answers each synchronously; their identifiers make the resend harmless for events Stripe has.
- STRIPE_EXTRA: Stripe holds more than was sent (sent by someone else, or a report canceled here).
  Listed for an operator; a wrong event of ours can be canceled (`usage_report_cancel`) inside
  Stripe's 24-hour adjustment window.
- NOT_SENT: a local hour's billed quantity is not covered by sent reports (still pending, failed, or
  waiting for a customer). Pending rows are the sender's; failed rows need an operator.
Fractions carried to a later hour (whole-unit reporting) are not differences: the comparison of
local and sent quantities is by quantity, of sent and Stripe by units.

Asynchronous meter error reports for the platform's meters are also fetched (v2 events) and the
affected rows marked failed, in case the webhook delivering them was missed.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.mail import send_mail
from django.db.models import Count, Q, Sum
from django.utils import timezone

from metering.models import HourlyAggregate
from stripe_sync.models import (
    ReconciliationItem,
    ReconciliationRun,
    ReportedHour,
    StripeMeter,
    UsageReport,
)
from stripe_sync.reporting import (
    STRIPE_PAST_WINDOW,
    error_report_samples,
    usage_reports_mark_rejected,
    window_start,
)
from stripe_sync.sender import MeterEventSender, SendResult
from tenants.models import Tenant

logger = logging.getLogger(__name__)
HOUR = timedelta(hours=1)
# Rows whose quantity the outbox has accounted for: sent, or carried as a fraction.
COVERING = (UsageReport.Status.SENT, UsageReport.Status.NOTHING_TO_SEND)
ERROR_REPORT_EVENT = "v1.billing.meter.error_report_triggered"


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _summaries(
    sender: MeterEventSender, *, meter_id: str, customer: str, start: datetime, end: datetime
) -> dict:
    """Stripe's hourly totals for one customer and meter: {hour start: Decimal}."""
    totals: dict[datetime, Decimal] = {}
    params = {
        "customer": customer,
        "start_time": int(start.timestamp()),
        "end_time": int(end.timestamp()),
        "value_grouping_window": "hour",
        "limit": 100,
    }
    while True:
        page = sender.call(
            lambda p=dict(params): sender.client.v1.billing.meters.event_summaries.list(meter_id, params=p)
        )
        for summary in page.data:
            hour = datetime.fromtimestamp(summary.start_time, tz=UTC)
            totals[hour] = Decimal(str(summary.aggregated_value))
        if not page.has_more or not page.data:
            return totals
        params["starting_after"] = page.data[-1].id


def _error_reports(sender: MeterEventSender, meters: list[StripeMeter], since: datetime) -> int:
    """Mark rows that Stripe's asynchronous error reports name; returns how many."""
    marked = 0
    for meter in meters:
        params = {"object_id": meter.stripe_meter_id, "types": [ERROR_REPORT_EVENT], "limit": 100}
        params["created"] = {"gte": since.strftime("%Y-%m-%dT%H:%M:%S.000Z")}
        page = sender.call(lambda p=params: sender.client.v2.core.events.list(params=p))
        for event in page.data:
            errors = error_report_samples((event.get("data") or {}).get("reason") or {})
            if errors:
                marked += usage_reports_mark_rejected(errors=errors, source_event=event.id)
    return marked


def usage_reconcile(
    *, trigger: str, since: datetime | None = None, until: datetime | None = None, resend: bool = True
) -> ReconciliationRun:
    now = timezone.now()
    until = _hour(until or now)
    since = max(_hour(since) if since else window_start(now), window_start(now))
    run = ReconciliationRun.objects.create(
        started_at=now, trigger=trigger, window_start=since, window_end=until
    )
    result = SendResult()
    try:
        sender = MeterEventSender(result, time.sleep)
        _reconcile(run, sender, since, until, now, resend)
        run.status = ReconciliationRun.Status.SUCCEEDED
    except Exception as error:
        logger.exception("reconciliation %s failed", run.pk)
        run.status = ReconciliationRun.Status.FAILED
        run.error = f"{type(error).__name__}: {error}"
    run.stripe_calls = result.calls
    run.finished_at = timezone.now()
    run.save()
    if run.differences or run.status == ReconciliationRun.Status.FAILED:
        _alert(run)
    return run


def _reconcile(run, sender, since, until, now, resend) -> None:
    meters = list(StripeMeter.objects.exclude(stripe_meter_id="").select_related("meter"))
    previous = ReconciliationRun.objects.filter(status="succeeded").exclude(pk=run.pk).first()
    _error_reports(sender, meters, previous.started_at - HOUR if previous else since)

    by_meter = {m.meter_id: m for m in meters}
    reported = (
        UsageReport.objects.filter(hour__gte=since, hour__lt=until)
        .values("tenant_id", "meter_id", "hour")
        .annotate(
            units=Sum("value", filter=Q(status=UsageReport.Status.SENT), default=0),
            quantity=Sum("quantity", filter=Q(status__in=COVERING), default=Decimal(0)),
        )
    )
    sent = {(r["tenant_id"], r["meter_id"], r["hour"]): r for r in reported}
    covered = {
        (r["tenant_id"], r["meter_id"], r["hour"]): r["billed"]
        for r in ReportedHour.objects.filter(hour__gte=since, hour__lt=until).values(
            "tenant_id", "meter_id", "hour", "billed"
        )
    }
    local = {
        (a["tenant_id"], a["meter_id"], a["hour"]): a["value"]
        for a in HourlyAggregate.objects.filter(
            hour__gte=since, hour__lt=until, tenant__plan=Tenant.Plan.METERED
        ).values("tenant_id", "meter_id", "hour", "value")
    }
    tenants = {
        t.pk: t
        for t in Tenant.objects.filter(pk__in={k[0] for k in sent} | {k[0] for k in local}).exclude(
            stripe_customer=None
        )
    }
    pairs = defaultdict(set)
    for tenant_id, meter_id, hour in set(sent) | set(local):
        if tenant_id in tenants and meter_id in by_meter:
            pairs[(tenant_id, meter_id)].add(hour)

    items, not_sent = [], []
    for (tenant_id, meter_id), hours in sorted(pairs.items()):
        stripe_totals = _summaries(
            sender,
            meter_id=by_meter[meter_id].stripe_meter_id,
            customer=tenants[tenant_id].stripe_customer_id,
            start=since,
            end=until,
        )
        for hour in sorted(hours | {h for h in stripe_totals if since <= h < until}):
            key = (tenant_id, meter_id, hour)
            row = sent.get(key) or {"units": 0, "quantity": Decimal(0)}
            stripe_value = stripe_totals.get(hour, Decimal(0))
            local_value = local.get(key, Decimal(0)) if covered.get(key, True) else Decimal(0)
            run.hours_checked += 1
            kind = None
            if stripe_value < row["units"]:
                kind = ReconciliationItem.Kind.STRIPE_MISSING
            elif stripe_value > row["units"]:
                kind = ReconciliationItem.Kind.STRIPE_EXTRA
            elif local_value != row["quantity"]:
                kind = ReconciliationItem.Kind.NOT_SENT
            if kind is None:
                continue
            item = ReconciliationItem(
                run=run,
                tenant_id=tenant_id,
                meter_id=meter_id,
                hour=hour,
                kind=kind,
                local_quantity=local_value,
                sent_value=row["units"],
                stripe_value=stripe_value,
            )
            if kind == ReconciliationItem.Kind.STRIPE_MISSING:
                item.resolution = _resend(run, sender, key, now) if resend else "not re-sent (resend off)"
            elif kind == ReconciliationItem.Kind.NOT_SENT:
                not_sent.append(item)
            else:
                item.resolution = "for an operator: cancel a wrong report within 24 h of sending it"
            items.append(item)
    _describe_not_sent(not_sent, since, until)
    ReconciliationItem.objects.bulk_create(items)
    run.differences = len(items)


def _resend(run, sender: MeterEventSender, key, now) -> str:
    tenant_id, meter_id, hour = key
    if hour < now - STRIPE_PAST_WINDOW:
        return "outside Stripe's 35-day window: cannot be re-sent"
    rows = list(
        UsageReport.objects.filter(
            tenant_id=tenant_id, meter_id=meter_id, hour=hour, status=UsageReport.Status.SENT
        ).order_by("id")
    )
    # Back to pending so the sender's v1 path can mark each one sent or failed with Stripe's answer.
    UsageReport.objects.filter(pk__in=[r.pk for r in rows]).update(status=UsageReport.Status.PENDING)
    before = (sender.result.sent, sender.result.failed)
    sender.send_one_by_one(rows)
    run.resent += len(rows)
    sent, failed = sender.result.sent - before[0], sender.result.failed - before[1]
    return f"re-sent {len(rows)} report(s): {sent} accepted, {failed} refused"


def _describe_not_sent(items: list[ReconciliationItem], since: datetime, until: datetime) -> None:
    """Each item's resolution: how many of its hour's outbox rows are in which status (one query)."""
    if not items:
        return
    counts = defaultdict(dict)
    for row in (
        UsageReport.objects.filter(
            hour__gte=since,
            hour__lt=until,
            tenant_id__in={item.tenant_id for item in items},
            meter_id__in={item.meter_id for item in items},
        )
        .values("tenant_id", "meter_id", "hour", "status")
        .annotate(n=Count("id"))
        .order_by()
    ):
        counts[(row["tenant_id"], row["meter_id"], row["hour"])][row["status"]] = row["n"]
    for item in items:
        found = counts.get((item.tenant_id, item.meter_id, item.hour))
        item.resolution = (
            ", ".join(f"{n} {status}" for status, n in sorted(found.items()))
            if found
            else "not in the outbox yet (next report run)"
        )


def _alert(run: ReconciliationRun) -> None:
    subject = (
        f"Billing reconciliation {run.pk}: {run.differences} difference(s)"
        if run.status == ReconciliationRun.Status.SUCCEEDED
        else f"Billing reconciliation {run.pk} failed"
    )
    body = (
        f"Window {run.window_start:%Y-%m-%d %H:%M} to {run.window_end:%Y-%m-%d %H:%M} UTC, "
        f"{run.hours_checked} hours checked, {run.differences} differences, {run.resent} reports re-sent."
        f"{chr(10) + run.error if run.error else ''}\nSee the reconciliation run in admin."
    )
    logger.warning("%s. %s", subject, body)
    if settings.OPERATOR_EMAILS:
        send_mail(subject, body, None, settings.OPERATOR_EMAILS, fail_silently=True)
