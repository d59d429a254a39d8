"""Reconciliation: local aggregates vs what the outbox sent vs what Stripe's meter holds.

For each (tenant, meter) with billed usage in the window, Stripe's hourly meter event summaries are
read and compared hour by hour:
- STRIPE_MISSING: Stripe holds less than was sent (an event refused after acceptance, or lost). The
  hour's sent rows are sent again, one by one through v1 so that Stripe answers each synchronously,
  with timestamps worked out again for the moment of sending.
- STRIPE_EXTRA: Stripe holds more than was sent (sent by someone else, or a report canceled here).
  Listed for an operator; a wrong event of ours can be canceled (`usage_report_cancel`) inside
  Stripe's 24-hour adjustment window.
- NOT_SENT: a local hour's billed quantity is not covered by sent reports (still pending, failed, or
  waiting for a customer). Pending rows are the sender's; failed rows need an operator.
Fractions carried to a later hour (whole-unit reporting) are not differences: the comparison of
local and sent quantities is by quantity and local hour, of sent and Stripe by units and the hour of
the timestamp Stripe got (a report sent after its hour left Stripe's 35 days is stamped later).
Billed hours are those the outbox covered as billed or, not covered yet, those of the plan in force
then. Unsent usage close to Stripe's window is counted on the run (`at_risk`) and alerted.
`usage_reports_check_at_stripe` is the same comparison for the sender's rows whose outcome is
unknown after Stripe's ~24-hour de-duplication.

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
from django.db import transaction
from django.db.models import Count, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from core.models import error_line
from core.notify import email_deliver, email_render
from metering.models import HourlyAggregate
from stripe_sync.models import (
    ReconciliationItem,
    ReconciliationRun,
    ReportedHour,
    StripeMeter,
    UsageReport,
)
from stripe_sync.reporting import (
    error_report_samples,
    hour_billed,
    usage_reports_mark_rejected,
    usage_unsent_near_edge,
    window_start,
)
from stripe_sync.sender import MeterEventSender, SendResult
from tenants.models import Tenant
from tenants.selectors import PlanHistory

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
        status, error = ReconciliationRun.Status.SUCCEEDED, None
    except Exception as exc:
        logger.exception("reconciliation %s failed", run.pk)
        status, error = ReconciliationRun.Status.FAILED, error_line(exc)
    run.stripe_calls = result.calls
    run.finish(status, error=error)
    if run.differences or run.at_risk or run.status == ReconciliationRun.Status.FAILED:
        _alert(run)
    return run


def _reconcile(run, sender, since, until, now, resend) -> None:
    meters = list(StripeMeter.objects.exclude(stripe_meter_id="").select_related("meter"))
    previous = ReconciliationRun.objects.filter(status="succeeded").exclude(pk=run.pk).first()
    _error_reports(sender, meters, previous.started_at - HOUR if previous else since)

    by_meter = {m.meter_id: m for m in meters}
    # Units by the hour of the timestamp Stripe got (a report sent late is stamped later than its
    # hour), quantities by the local hour they cover.
    units = {
        (r["tenant_id"], r["meter_id"], r["stamp"]): r["units"]
        for r in UsageReport.objects.filter(
            status=UsageReport.Status.SENT, timestamp__gte=since, timestamp__lt=until
        )
        .annotate(stamp=TruncHour("timestamp"))
        .values("tenant_id", "meter_id", "stamp")
        .annotate(units=Sum("value"))
        .order_by()
    }
    quantities = {
        (r["tenant_id"], r["meter_id"], r["hour"]): r["quantity"]
        for r in UsageReport.objects.filter(hour__gte=since, hour__lt=until, status__in=COVERING)
        .values("tenant_id", "meter_id", "hour")
        .annotate(quantity=Sum("quantity"))
        .order_by()
    }
    # Hours lowered when their events could no longer be canceled at Stripe (older than a day, or
    # Stripe refused the cancel): Stripe keeps the earlier value, the decrease is offset against
    # later usage of the pair (a covering row with a negative quantity).
    offset = set(
        UsageReport.objects.filter(hour__gte=since, hour__lt=until, status__in=COVERING, quantity__lt=0)
        .values_list("tenant_id", "meter_id", "hour")
        .distinct()
    )
    sent = set(units) | set(quantities)
    covered = {
        (r["tenant_id"], r["meter_id"], r["hour"]): r["billed"]
        for r in ReportedHour.objects.filter(hour__gte=since, hour__lt=until).values(
            "tenant_id", "meter_id", "hour", "billed"
        )
    }
    # Every aggregate of a tenant with a Stripe customer; whether an hour is billed is what the
    # outbox decided (ReportedHour.billed) or, not covered yet, the plan in force during the hour.
    aggregates = list(
        HourlyAggregate.objects.filter(
            hour__gte=since, hour__lt=until, tenant__stripe_customer__isnull=False
        ).values_list("tenant_id", "meter_id", "hour", "value")
    )
    tenants = {
        t.pk: t
        for t in Tenant.objects.filter(pk__in={k[0] for k in sent} | {a[0] for a in aggregates}).exclude(
            stripe_customer=None
        )
    }
    plans = PlanHistory(tenants.values())
    local = {}
    for tenant_id, meter_id, hour, value in aggregates:
        billed = covered.get((tenant_id, meter_id, hour))
        if billed is None:
            billed = tenant_id in tenants and hour_billed(plans, tenant_id, hour)
        if billed:
            local[(tenant_id, meter_id, hour)] = value
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
            row = {"units": units.get(key, 0), "quantity": quantities.get(key, Decimal(0))}
            stripe_value = stripe_totals.get(hour, Decimal(0))
            local_value = local.get(key, Decimal(0))
            run.hours_checked += 1
            kind = None
            if stripe_value < row["units"]:
                kind = ReconciliationItem.Kind.STRIPE_MISSING
            elif stripe_value > row["units"]:
                kind = ReconciliationItem.Kind.STRIPE_EXTRA
            elif local_value != row["quantity"]:
                kind = ReconciliationItem.Kind.NOT_SENT
            elif key in offset:
                kind = ReconciliationItem.Kind.OFFSET
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
            elif kind == ReconciliationItem.Kind.OFFSET:
                item.resolution = (
                    "lowered after Stripe's 24 hours to cancel: Stripe keeps the earlier value, the "
                    "decrease is offset against later usage of this tenant and meter"
                )
            else:
                item.resolution = "for an operator: cancel a wrong report within 24 h of sending it"
            items.append(item)
    _describe_not_sent(not_sent, since, until)
    ReconciliationItem.objects.bulk_create(items)
    run.differences = len(items)
    run.at_risk, oldest = usage_unsent_near_edge(now=now)
    if run.at_risk:
        run.error = (
            f"{run.at_risk} hour(s) of usage still unsent (pending, failed, or not prepared: a tenant "
            f"or meter not ready at Stripe, a failed pair) are close to Stripe's 35-day window, the oldest "
            f"{oldest:%Y-%m-%d %H}:00 UTC: send or fix them before they are stamped late or dropped."
        )


def _resend(run, sender: MeterEventSender, key, now) -> str:
    """Send the hour's sent rows again (same identifiers and values; timestamps worked out again
    for now, so a row whose hour has left Stripe's 35 days is stamped at the oldest moment it takes)."""
    tenant_id, meter_id, stamp = key
    rows = list(
        UsageReport.objects.filter(
            tenant_id=tenant_id,
            meter_id=meter_id,
            timestamp__gte=stamp,
            timestamp__lt=stamp + HOUR,
            status=UsageReport.Status.SENT,
        ).order_by("id")
    )
    # Back to pending so the sender's v1 path can mark each one sent or failed with Stripe's answer;
    # conditional on status, so a row canceled meanwhile stays canceled and is not re-sent.
    rows = [
        r
        for r in rows
        if UsageReport.objects.filter(pk=r.pk, status=UsageReport.Status.SENT).update(
            status=UsageReport.Status.PENDING
        )
    ]
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
    email = email_render("reconciliation", {"run": run})
    logger.warning("%s. %s", email.subject, email.text)
    if settings.OPERATOR_EMAILS:
        try:
            email_deliver(email, settings.OPERATOR_EMAILS)
        except Exception:  # the run is recorded and the warning logged: a mail failure ends nothing
            logger.exception("reconciliation %s: the e-mail to operators failed", run.pk)


def usage_reports_check_at_stripe(sender: MeterEventSender, rows: list[UsageReport]) -> list[UsageReport]:
    """Pending rows whose outcome is unknown and whose first attempt was more than ~23 hours ago:
    Stripe may hold them and no longer drops a copy. Compare, per (customer, meter, hour of the
    timestamp sent), Stripe's hourly summary with what is known sent; the difference is what of
    these rows arrived. Rows that arrived are marked sent; what is missing gets a new deterministic
    identifier (`<identifier>-m`) and is returned to be sent now. A row that arrived only in part
    (several rows in the hour, Stripe holding some) is split: the arrived value stays on it, sent,
    the rest goes out as a new row. Returns the rows to send.

    Stripe's summary cannot tell whose events arrived, so rows are credited in id order; usage sent
    to the same customer and meter by anyone else counts as arrived.
    """
    to_send: list[UsageReport] = []
    stripe_meters = dict(
        StripeMeter.objects.filter(meter_id__in={r.meter_id for r in rows})
        .exclude(stripe_meter_id="")
        .values_list("meter_id", "stripe_meter_id")
    )
    groups: dict[tuple, list[UsageReport]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r.pk):
        groups[(row.tenant_id, row.meter_id, row.customer_id)].append(row)
    for (tenant_id, meter_id, customer), group in groups.items():
        hours = sorted({_hour(r.timestamp) for r in group})
        start, end = hours[0], hours[-1] + HOUR
        stripe_totals = (
            _summaries(sender, meter_id=stripe_meters[meter_id], customer=customer, start=start, end=end)
            if meter_id in stripe_meters
            else {}
        )
        known = {
            r["stamp"]: r["units"]
            for r in UsageReport.objects.filter(
                tenant_id=tenant_id,
                meter_id=meter_id,
                customer_id=customer,
                status=UsageReport.Status.SENT,
                timestamp__gte=start,
                timestamp__lt=end,
            )
            .annotate(stamp=TruncHour("timestamp"))
            .values("stamp")
            .annotate(units=Sum("value"))
            .order_by()
        }
        for hour in hours:
            stripe_value = stripe_totals.get(hour, Decimal(0))
            arrived = max(Decimal(0), stripe_value - known.get(hour, 0))
            for row in (r for r in group if _hour(r.timestamp) == hour):
                got = int(min(Decimal(row.value), arrived))
                arrived -= got
                check = {"api": "summary check", "hour": f"{hour:%Y-%m-%dT%H}", "stripe": str(stripe_value)}
                new = _settle_checked(row, got, check)
                if new is not None:
                    to_send.append(new)
    return to_send


def _settle_checked(row: UsageReport, got: int, check: dict) -> UsageReport | None:
    """Record what of `row` Stripe holds (`got` units); returns the row that carries the rest."""
    now = timezone.now()
    pending = UsageReport.objects.filter(pk=row.pk, status=UsageReport.Status.PENDING)
    if got == row.value:
        pending.update(
            status=UsageReport.Status.SENT,
            sent_at=now,
            outcome_unknown=False,
            stripe_response=check,
            error_message="",
            updated_at=now,
        )
        return None
    fresh = {"outcome_unknown": False, "first_attempt_at": None, "next_attempt_at": None, "updated_at": now}
    if got == 0:
        # Not at Stripe: the same row under a new identifier (the old one may be refused or
        # dropped by Stripe for a while yet, or accepted late; a new one is neither).
        row.identifier = f"{row.identifier}-m"
        pending.update(identifier=row.identifier, **fresh)
        for name, value in fresh.items():
            setattr(row, name, value)
        return row
    with transaction.atomic():
        if not pending.update(
            value=got,
            status=UsageReport.Status.SENT,
            sent_at=now,
            outcome_unknown=False,
            stripe_response=check,
        ):
            return None
        rest = UsageReport.objects.create(
            tenant_id=row.tenant_id,
            meter_id=row.meter_id,
            hour=row.hour,
            revision=row.revision,
            identifier=f"{row.identifier}-m",
            quantity=Decimal(0),
            value=row.value - got,
            customer_id=row.customer_id,
            event_name=row.event_name,
            timestamp=row.timestamp,
            status=UsageReport.Status.PENDING,
        )
    return rest
