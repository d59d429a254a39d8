"""The daily usage report for operators: one UTC day's usage, estimated revenue, failures and AWS cost.

`daily_report_build` reads the figures (a fixed number of queries whatever the number of tenants),
`daily_report_csv` and `daily_report_email` (templates emails/daily-report-*) shape them,
`daily_report_send` e-mails them to OPERATOR_EMAILS once per day. The Beat task (07:00 UTC, after
the 06:00 cost check), the `send_daily_report` command and the admin's CSV download all go through
these functions.

Estimated revenue is the pricing preview (`metering.estimates.revenue_estimates`, the same
arithmetic as the tenant page's estimate). Prices are monthly (tiers, free allowance, flat amounts), so a
day's revenue is what the day added to the month: the month-to-date estimate at the end of the day
minus the one at its start. A first tier's flat amount therefore belongs to no day; it is in the
month-to-date figure.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Q, Sum
from django.urls import reverse
from django.utils import timezone

from core.db_routing import lagging_reads
from core.money import Money, plain_decimal
from core.notify import Email, email_deliver, email_render
from costwatch.conf import CostwatchConfigError, costwatch_config
from costwatch.models import CostCheckRun, DailyCost
from metering.estimates import month_bounds, revenue_estimates
from metering.models import AggregationRun, HourlyAggregate, Meter
from stripe_sync.models import UsageReport, WebhookEvent
from tenants.models import Tenant

logger = logging.getLogger(__name__)

TOP_TENANTS = 10
FAILURES_LISTED = 20  # per kind; the counts are always complete
CSV_COLUMNS = ["day", "section", "item", "name", "quantity", "events", "amount", "currency", "at", "detail"]
# The record of a sent report lives in the cache (Redis in production): no table for it, and it only
# needs to outlive Beat's and Celery's retries of one day's task.
SENT_RECORD_SECONDS = 40 * 86_400
# A send in progress holds the day this long; a worker killed mid-send frees it for the redelivery.
SENDING_CLAIM_SECONDS = 600


def yesterday() -> date:
    return timezone.now().astimezone(UTC).date() - timedelta(days=1)


# --- The report -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeterLine:
    code: str
    name: str
    unit: str
    quantity: Decimal  # the day's hourly values summed: what the day bills
    events: int
    revenue: list[Money]  # the day's estimated revenue per currency; empty: the meter has no price

    @property
    def quantity_text(self) -> str:
        return plain_decimal(self.quantity, places=0)


@dataclass(frozen=True)
class TenantLine:
    slug: str
    name: str
    events: int
    revenue: list[Money]


@dataclass(frozen=True)
class FailureLine:
    kind: str  # usage_report, webhook_event, cost_check, aggregation
    reference: str
    at: datetime
    status: str
    detail: str
    url: str


@dataclass(frozen=True)
class CostLine:
    service: str
    amount: Money


@dataclass
class DailyReport:
    day: date
    generated_at: datetime
    meters: list[MeterLine]
    events_total: int
    top_tenants: list[TenantLine]
    revenue_day: list[Money]  # per currency
    revenue_month_to_date: list[Money]  # the month up to the end of the day
    failures: list[FailureLine]  # at most FAILURES_LISTED per kind
    failure_counts: dict[str, int]  # every kind, complete
    cost_currency: str = ""
    cost_by_service: list[CostLine] = field(default_factory=list)
    cost_unattributed: Money | None = None
    cost_total: Money | None = None
    cost_estimated: bool = False  # Cost Explorer still marks the day Estimated
    cost_error: str = ""  # a bad COSTWATCH_* setting: no cost section

    @property
    def failures_total(self) -> int:
        return sum(self.failure_counts.values())


FAILURE_KINDS = {
    "usage_report": "Usage reports to Stripe failed",
    "webhook_event": "Stripe webhook events failed",
    "cost_check": "Cost checks failed or completed with errors",
    "aggregation": "Aggregation runs failed",
}


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:300] if lines else ""


def _money(amounts: dict[str, int]) -> list[Money]:
    return [Money.from_minor(amount, currency) for currency, amount in sorted(amounts.items())]


def _revenue(*, day_start: datetime, day_end: datetime):
    """(tenant id, currency, meter id) -> minor units the day added, and the month to date per currency."""
    month_start, _ = month_bounds(day_start)
    before = {
        (estimate.tenant.pk, estimate.currency): estimate.by_meter
        for estimate in revenue_estimates(start=month_start, end=day_start)
    }
    added: dict[tuple[int, str, int], int] = {}
    month_to_date: dict[str, int] = defaultdict(int)
    for estimate in revenue_estimates(start=month_start, end=day_end):
        earlier = before.get((estimate.tenant.pk, estimate.currency), {})
        for meter_id, amount in estimate.by_meter.items():
            added[estimate.tenant.pk, estimate.currency, meter_id] = amount - earlier.get(meter_id, 0)
            month_to_date[estimate.currency] += amount
    return added, dict(month_to_date)


def _failures(*, day_start: datetime, day_end: datetime) -> tuple[list[FailureLine], dict[str, int]]:
    """Rows that failed during the day and are still failed (the time of failure is their last change)."""
    in_day = {"updated_at__gte": day_start, "updated_at__lt": day_end}
    reports = UsageReport.objects.filter(status=UsageReport.Status.FAILED, **in_day)
    webhooks = WebhookEvent.objects.filter(status=WebhookEvent.Status.FAILED, **in_day)
    checks = CostCheckRun.objects.filter(
        status__in=[CostCheckRun.Status.FAILED, CostCheckRun.Status.PARTIAL],
        started_at__gte=day_start,
        started_at__lt=day_end,
    )
    aggregations = AggregationRun.objects.filter(
        status=AggregationRun.Status.FAILED, started_at__gte=day_start, started_at__lt=day_end
    )
    counts = {
        "usage_report": reports.count(),
        "webhook_event": webhooks.count(),
        "cost_check": checks.count(),
        "aggregation": aggregations.count(),
    }
    lines = [
        FailureLine(
            kind="usage_report",
            reference=row.identifier,
            at=row.updated_at,
            status=row.status,
            detail=f"{row.tenant.slug} {row.meter.code} {row.hour:%Y-%m-%d %H}:00: "
            + (f"{row.error_code}: " if row.error_code else "")
            + _first_line(row.error_message),
            url=reverse("admin:stripe_sync_usagereport_change", args=[row.pk]),
        )
        for row in reports.select_related("tenant", "meter").order_by("updated_at", "id")[:FAILURES_LISTED]
    ]
    lines += [
        FailureLine(
            kind="webhook_event",
            reference=row.stripe_id,
            at=row.updated_at,
            status=row.status,
            detail=f"{row.type}: {_first_line(row.error)}",
            url=reverse("admin:stripe_sync_webhookevent_change", args=[row.pk]),
        )
        for row in webhooks.order_by("updated_at", "id")[:FAILURES_LISTED]
    ]
    lines += _run_failures("cost_check", checks, lambda row: f"cost check run {row.pk} ({row.checked_date})")
    lines += _run_failures("aggregation", aggregations, lambda row: f"aggregation run {row.pk}")
    return lines, counts


def _run_failures(kind: str, runs, reference) -> list[FailureLine]:
    """Failed run records (core.models.RunRecord) as report lines, oldest first."""
    opts = runs.model._meta
    return [
        FailureLine(
            kind=kind,
            reference=reference(row),
            at=row.started_at,
            status=row.status,
            detail=_first_line(row.error),
            url=reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[row.pk]),
        )
        for row in runs.order_by("started_at", "id")[:FAILURES_LISTED]
    ]


def daily_report_build(*, day: date) -> DailyReport:
    """The report of one UTC day: about eighteen queries, whatever the number of tenants or meters."""
    day_start = datetime.combine(day, time.min, tzinfo=UTC)
    day_end = day_start + timedelta(days=1)

    usage = {
        meter_id: (quantity, events)
        for meter_id, quantity, events in HourlyAggregate.objects.filter(
            hour__gte=day_start, hour__lt=day_end
        )
        .order_by()
        .values("meter")
        .annotate(quantity=Sum("value"), events=Sum("event_count"))
        .values_list("meter", "quantity", "events")
    }
    added, month_to_date = _revenue(day_start=day_start, day_end=day_end)
    by_meter: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    by_tenant: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    day_total: dict[str, int] = defaultdict(int)
    for (tenant_id, currency, meter_id), amount in added.items():
        by_meter[meter_id][currency] += amount
        by_tenant[tenant_id][currency] += amount
        day_total[currency] += amount

    meters = []
    for meter in Meter.objects.order_by("code"):
        quantity, events = usage.get(meter.pk, (Decimal(0), 0))
        meters.append(
            MeterLine(
                code=meter.code,
                name=meter.name,
                unit=meter.unit,
                quantity=quantity or Decimal(0),
                events=events or 0,
                revenue=_money(by_meter.get(meter.pk, {})),
            )
        )

    tenant_rows = list(
        HourlyAggregate.objects.filter(hour__gte=day_start, hour__lt=day_end)
        .order_by()
        .values("tenant")
        .annotate(events=Sum("event_count"))
        .order_by("-events", "tenant__name")
        .values_list("tenant", "events")[:TOP_TENANTS]
    )
    tenants = Tenant.objects.only("slug", "name").in_bulk([tenant_id for tenant_id, _ in tenant_rows])
    top_tenants = [
        TenantLine(
            slug=tenants[tenant_id].slug,
            name=tenants[tenant_id].name,
            events=events,
            revenue=_money(by_tenant.get(tenant_id, {})),
        )
        for tenant_id, events in tenant_rows
    ]

    failures, failure_counts = _failures(day_start=day_start, day_end=day_end)
    report = DailyReport(
        day=day,
        generated_at=timezone.now(),
        meters=meters,
        events_total=sum(line.events for line in meters),
        top_tenants=top_tenants,
        revenue_day=_money(day_total),
        revenue_month_to_date=_money(month_to_date),
        failures=failures,
        failure_counts=failure_counts,
    )
    _add_costs(report)
    return report


def _add_costs(report: DailyReport) -> None:
    """The day's AWS cost (costwatch's DailyCost rows) by service, unattributed (no tenant tag), total."""
    try:
        config = costwatch_config()
    except CostwatchConfigError as error:
        report.cost_error = str(error)
        return
    currency = config.currency
    rows = DailyCost.objects.filter(metric=config.metric, day=report.day, currency=currency)
    report.cost_currency = currency
    report.cost_by_service = [
        CostLine(service=service, amount=Money(amount, currency))
        for service, amount in rows.order_by()
        .values("service")
        .annotate(total=Sum("amount"))
        .order_by("service")
        .values_list("service", "total")
    ]
    totals = rows.order_by().aggregate(
        total=Sum("amount"),
        unattributed=Sum("amount", filter=Q(tag_value="")),
        estimated=Count("id", filter=Q(estimated=True)),
    )
    report.cost_total = Money(totals["total"] or Decimal(0), currency)
    report.cost_unattributed = Money(totals["unattributed"] or Decimal(0), currency)
    report.cost_estimated = bool(totals["estimated"])


# --- Shapes: CSV, text, HTML ----------------------------------------------------------------------


def daily_report_csv(report: DailyReport) -> str:
    """One flat table, a row per figure, its `section` saying what it is (see CSV_COLUMNS).

    Sections: `usage` (a meter: quantity, events, the day's estimated revenue; one row per currency
    when priced in several), `tenant` (top tenants by events), `revenue` (`day` and `month_to_date`
    per currency), `failures` (count per kind), `failure` (each failure listed), `cost_by_service`,
    `cost` (`unattributed` and `total`). Amounts are exact decimals in major units of `currency`;
    quantities are exact decimals; times are ISO 8601 UTC.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    day = report.day.isoformat()

    def row(section, item, name="", quantity="", events="", amount=None, at=None, detail=""):
        writer.writerow(
            [
                day,
                section,
                item,
                name,
                quantity,
                events,
                "" if amount is None else plain_decimal(amount.amount, places=2),
                "" if amount is None else amount.currency,
                "" if at is None else at.astimezone(UTC).isoformat(),
                detail,
            ]
        )

    for meter in report.meters:
        quantity = plain_decimal(meter.quantity, places=0)
        for money in meter.revenue or [None]:
            row("usage", meter.code, meter.name, quantity, meter.events, amount=money, detail=meter.unit)
    for tenant in report.top_tenants:
        for money in tenant.revenue or [None]:
            row("tenant", tenant.slug, tenant.name, events=tenant.events, amount=money)
    for money in report.revenue_day:
        row("revenue", "day", "estimated revenue of the day", amount=money)
    for money in report.revenue_month_to_date:
        row("revenue", "month_to_date", "estimated revenue of the month to the end of the day", amount=money)
    for kind, count in report.failure_counts.items():
        row("failures", kind, FAILURE_KINDS[kind], quantity=count)
    for failure in report.failures:
        row("failure", failure.kind, failure.reference, at=failure.at, detail=failure.detail)
    if report.cost_error:
        row("cost", "error", detail=report.cost_error)
    else:
        for line in report.cost_by_service:
            row("cost_by_service", line.service, amount=line.amount)
        estimated = "estimated by Cost Explorer" if report.cost_estimated else ""
        row("cost", "unattributed", "cost with no tenant tag", amount=report.cost_unattributed)
        row("cost", "total", "all services", amount=report.cost_total, detail=estimated)
    return out.getvalue()


def daily_report_filename(day: date) -> str:
    return f"daily-report-{day.isoformat()}.csv"


def _money_text(amounts: list[Money]) -> str:
    return ", ".join(str(money) for money in amounts) or "-"


def _email_context(report: DailyReport) -> dict:
    """The report as emails/daily-report-* show it: numbers and amounts already written out."""
    return {
        "report": report,
        "day": report.day.isoformat(),
        "events_total": f"{report.events_total:,}",
        "meters": [
            {
                "code": meter.code,
                "quantity": plain_decimal(meter.quantity, places=0),
                "unit": meter.unit,
                "events": f"{meter.events:,}",
                "revenue": _money_text(meter.revenue),
            }
            for meter in report.meters
        ],
        "top_tenants": [
            {
                "name": tenant.name,
                "slug": tenant.slug,
                "events": f"{tenant.events:,}",
                "revenue": _money_text(tenant.revenue),
            }
            for tenant in report.top_tenants
        ],
        "revenue_day": _money_text(report.revenue_day),
        "revenue_month_to_date": _money_text(report.revenue_month_to_date),
        "failure_counts": [(FAILURE_KINDS[kind], count) for kind, count in report.failure_counts.items()],
    }


def daily_report_email(report: DailyReport) -> Email:
    """The report's e-mail: subject, text body and HTML body (emails/daily-report-*)."""
    return email_render("daily-report", _email_context(report))


# --- Sending --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DailyReportDelivery:
    day: date
    status: str  # sent, already_sent, in_progress, no_recipients
    message: str
    recipients: list[str] = field(default_factory=list)
    sent_at: str = ""
    csv_sha256: str = ""

    def as_dict(self) -> dict:
        return {
            "day": self.day.isoformat(),
            "status": self.status,
            "message": self.message,
            "recipients": self.recipients,
            "sent_at": self.sent_at,
            "csv_sha256": self.csv_sha256,
        }


def _record_key(day: date) -> str:
    return f"daily-report:{day.isoformat()}"


def daily_report_sent_record(*, day: date) -> dict | None:
    """What was sent for `day` (recipients, time, the CSV's SHA-256), while the cache keeps it."""
    record = cache.get(_record_key(day))
    return record if record and record.get("status") == "sent" else None


def daily_report_send(*, day: date | None = None, force: bool = False) -> DailyReportDelivery:
    """E-mail the report of `day` (default yesterday, UTC) to OPERATOR_EMAILS, once per day.

    Text body, an HTML alternative and the CSV attached. A second call for the same day sends nothing
    and says when and to whom the first went (unless `force`); Celery's redelivery of a task whose
    worker died mid-send waits for the claim to lapse (SENDING_CLAIM_SECONDS), then sends.
    """
    day = day or yesterday()
    recipients = list(settings.OPERATOR_EMAILS)
    if not recipients:
        message = f"no report for {day} sent: OPERATOR_EMAILS is empty"
        logger.info(message)
        return DailyReportDelivery(day=day, status="no_recipients", message=message)

    key = _record_key(day)
    claim = {"status": "sending", "since": timezone.now().isoformat()}
    if force:
        cache.set(key, claim, SENDING_CLAIM_SECONDS)
    elif not cache.add(key, claim, SENDING_CLAIM_SECONDS):
        record = cache.get(key) or {}
        if record.get("status") == "sent":
            message = (
                f"the report for {day} was already sent at {record['sent_at']} to {', '.join(record['to'])}"
            )
            logger.info(message)
            return DailyReportDelivery(
                day=day,
                status="already_sent",
                message=message,
                recipients=record["to"],
                sent_at=record["sent_at"],
                csv_sha256=record["csv_sha256"],
            )
        message = f"the report for {day} is being sent by another run (since {record.get('since', '?')})"
        logger.info(message)
        return DailyReportDelivery(day=day, status="in_progress", message=message)

    try:
        with lagging_reads():  # the read replica when configured: a past day's figures
            report = daily_report_build(day=day)
        content = daily_report_csv(report)
        attachment = (daily_report_filename(day), content, "text/csv")
        email_deliver(daily_report_email(report), recipients, attachments=[attachment])
    except Exception:
        cache.delete(key)  # a retry may send
        raise
    sent_at = timezone.now().isoformat()
    digest = hashlib.sha256(content.encode()).hexdigest()
    cache.set(
        key,
        {"status": "sent", "sent_at": sent_at, "to": recipients, "csv_sha256": digest},
        SENT_RECORD_SECONDS,
    )
    message = f"the report for {day} was sent to {', '.join(recipients)}"
    logger.info(message, extra={"report_day": day.isoformat(), "csv_sha256": digest})
    return DailyReportDelivery(
        day=day, status="sent", message=message, recipients=recipients, sent_at=sent_at, csv_sha256=digest
    )
