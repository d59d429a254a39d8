"""The operator dashboard on the admin index: usage, billing health, costs and jobs.

One selector per panel, each a small fixed number of queries whatever the number of tenants (grouped
aggregates, never a query per tenant or per row), so the index stays fast as the business grows.
Everything is UTC; money is Decimal, shown with two decimals and its currency.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from urllib.parse import urlencode

from django.db.models import Count, Max, Min, Q, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from core.charts import Chart, daily_chart
from core.money import Money, percent
from costwatch.budgets import linear_forecast
from costwatch.conf import CostwatchConfigError, costwatch_config
from costwatch.costs import budget_scope_q, next_month
from costwatch.margin import MarginRow, margin_table
from costwatch.models import Alert, Budget, BudgetEvaluation, CostCheckRun, DailyCost
from metering.estimates import month_bounds, revenue_estimates
from metering.models import AggregationRun, HourlyAggregate, Meter, UsageEvent
from stripe_sync.admin.customers import StripeOnboardingFilter
from stripe_sync.circuit import STRIPE, circuit_is_open
from stripe_sync.models import CircuitBreaker, ReconciliationRun, ReportingBalance, UsageReport, WebhookEvent
from stripe_sync.onboarding import tenants_waiting_for_onboarding
from stripe_sync.reporting import edge_moment
from tenants.models import Tenant

CHART_DAYS = 30
TOP_COUNT = 5
AGGREGATION_MAX_AGE = timedelta(hours=2)  # hourly job: one missed run is tolerated
COST_CHECK_MAX_AGE = timedelta(hours=26)  # daily job, with two hours of slack
AGGREGATION_TASK = "metering.aggregate_usage"
COST_CHECK_TASK = "costwatch.check_costs"
RECONCILIATION_TASK = "stripe_sync.reconcile_usage"


def _changelist(model_label: str, **filters) -> str:
    url = reverse(f"admin:{model_label}_changelist")
    if filters:
        # str(): a Choices member's text is its value ("failed"), which is what the admin filters on.
        url += "?" + urlencode({key: str(value) for key, value in filters.items()}, safe=",")
    return url


def _change(model_label: str, pk: int) -> str:
    return reverse(f"admin:{model_label}_change", args=[pk])


# --- Usage ----------------------------------------------------------------------------------------


@dataclass
class MeterUsage:
    meter: Meter | None  # None: the total over every meter
    last_hour: int = 0
    last_day: int = 0
    last_30_days: int = 0
    url: str = ""


@dataclass
class TenantFigure:
    tenant_id: int
    name: str
    slug: str
    value: object  # events (int) or Money
    url: str


@dataclass
class UsagePanel:
    meters: list[MeterUsage]
    window_start: datetime  # the 30 days' first hour
    top_by_events: list[TenantFigure]
    top_by_revenue: dict[str, list[TenantFigure]] | None  # per currency, highest first; None: no money
    chart: Chart
    totals: MeterUsage  # the sums over every meter (its `meter` is None)


def usage_chart(daily: dict[date, int], days: list[date]) -> Chart:
    """Bars of daily event counts, every day of the window (core.charts)."""
    total = sum(daily.values())
    return daily_chart(
        daily,
        days,
        title=f"Events per day (UTC), last {len(days)} days: {total:,} in all",
        label=f"Events per day over the last {len(days)} days, {total:,} in all",
        unit="events",
        value_text=lambda value: f"{value:,}",
        empty_text=f"No events in the last {len(days)} days.",
        testid="usage-chart",
        bar_testid="usage-bar",
    )


def _revenue_ranking(*, month_start: datetime, month_end: datetime) -> dict[str, list[TenantFigure]]:
    """Every tenant's pricing preview for the month (`metering.estimates.revenue_estimates`), ranked
    per currency."""
    ranked: dict[str, list[tuple[int, Tenant]]] = defaultdict(list)
    for estimate in revenue_estimates(start=month_start, end=month_end):
        ranked[estimate.currency].append((estimate.amount_minor, estimate.tenant))
    result = {}
    for currency, rows in sorted(ranked.items()):
        rows.sort(key=lambda row: (-row[0], row[1].name))
        result[currency] = [
            TenantFigure(
                tenant_id=tenant.pk,
                name=tenant.name,
                slug=tenant.slug,
                value=Money.from_minor(amount, currency),
                url=_change("tenants_tenant", tenant.pk),
            )
            for amount, tenant in rows[:TOP_COUNT]
        ]
    return result


def usage_panel(*, now: datetime | None = None, money: bool = True) -> UsagePanel:
    """Events per meter (last hour, day, 30 days), top tenants this month, daily events over 30 days.

    Seven queries: meters, raw events of the last day, aggregates of the 30 days, the month's top
    tenants by events, and the revenue ranking's aggregates, prices and tenants.
    """
    now = now or timezone.now()
    today = now.astimezone(UTC).date()
    days = [today - timedelta(days=n) for n in range(CHART_DAYS - 1, -1, -1)]
    window_start = datetime.combine(days[0], time.min, tzinfo=UTC)
    window_end = datetime.combine(today + timedelta(days=1), time.min, tzinfo=UTC)
    month_start, month_end = month_bounds(now)

    meters = {meter.pk: MeterUsage(meter=meter) for meter in Meter.objects.all()}
    for usage in meters.values():
        usage.url = _changelist("metering_hourlyaggregate", meter__id__exact=usage.meter.pk)

    # The last hour and day are counted from raw events by event time: a range on the timestamp, so
    # PostgreSQL reads only the partitions of the last two days (metering/eventstore).
    for meter_id, last_hour, last_day in (
        UsageEvent.objects.filter(timestamp__gte=now - timedelta(days=1), timestamp__lte=now)
        .order_by()
        .values("meter")
        .annotate(
            last_hour=Count("id", filter=Q(timestamp__gte=now - timedelta(hours=1))), last_day=Count("id")
        )
        .values_list("meter", "last_hour", "last_day")
    ):
        if meter_id in meters:
            meters[meter_id].last_hour, meters[meter_id].last_day = last_hour, last_day

    # The 30 days come from hourly aggregates' event counts, not raw events: one row per tenant,
    # meter and hour instead of every event (millions at scale), and the aggregates outlive the raw
    # events' 45-day retention. The price: buckets are by event time, not arrival, and events of the
    # last hour appear only after the next aggregation run (at most an hour late).
    daily: dict[date, int] = defaultdict(int)
    for meter_id, day, events in (
        HourlyAggregate.objects.filter(hour__gte=window_start, hour__lt=window_end)
        .order_by()
        .annotate(day=TruncDate("hour", tzinfo=UTC))
        .values("meter", "day")
        .annotate(events=Sum("event_count"))
        .values_list("meter", "day", "events")
    ):
        daily[day] += events
        if meter_id in meters:
            meters[meter_id].last_30_days += events

    top_by_events = [
        TenantFigure(
            tenant_id=row["tenant"],
            name=row["tenant__name"],
            slug=row["tenant__slug"],
            value=row["events"],
            url=_changelist("metering_hourlyaggregate", tenant__id__exact=row["tenant"]),
        )
        for row in HourlyAggregate.objects.filter(hour__gte=month_start, hour__lt=month_end)
        .order_by()
        .values("tenant", "tenant__name", "tenant__slug")
        .annotate(events=Sum("event_count"))
        .order_by("-events", "tenant__name")[:TOP_COUNT]
    ]

    meter_rows = sorted(meters.values(), key=lambda usage: usage.meter.code)
    totals = MeterUsage(
        meter=None,
        last_hour=sum(usage.last_hour for usage in meter_rows),
        last_day=sum(usage.last_day for usage in meter_rows),
        last_30_days=sum(usage.last_30_days for usage in meter_rows),
    )
    return UsagePanel(
        meters=meter_rows,
        window_start=window_start,
        top_by_events=top_by_events,
        top_by_revenue=_revenue_ranking(month_start=month_start, month_end=month_end) if money else None,
        chart=usage_chart(daily, days),
        totals=totals,
    )


# --- Billing health -------------------------------------------------------------------------------


@dataclass
class BillingPanel:
    reports_pending: int
    reports_failed: int
    oldest_pending_at: datetime | None
    oldest_pending_age: timedelta | None
    first_failed: UsageReport | None
    breaker: CircuitBreaker | None
    breaker_open: bool
    last_reconciliation: ReconciliationRun | None
    webhooks_last_day: int
    webhooks_failed: int
    webhooks_waiting: int
    oldest_unprocessed: WebhookEvent | None
    links: dict[str, str]
    # Pending or failed reports of hours close to Stripe's 35-day window (stripe_sync.reporting).
    reports_near_edge: int = 0
    # (tenant, meter) pairs whose reports could not be prepared; the others go on.
    pairs_failed: int = 0
    # Active metered tenants with no Stripe customer or no live subscription: their usage is not billed.
    onboarding_waiting: int = 0


def billing_panel(*, now: datetime | None = None) -> BillingPanel:
    """The outbox, failed pairs, the circuit breaker, the last reconciliation, the webhook inbox and
    the metered tenants waiting for onboarding; eight queries."""
    now = now or timezone.now()
    pending, failed = UsageReport.Status.PENDING, UsageReport.Status.FAILED
    outbox = UsageReport.objects.order_by().aggregate(
        pending=Count("id", filter=Q(status=pending)),
        failed=Count("id", filter=Q(status=failed)),
        oldest_pending=Min("created_at", filter=Q(status=pending)),
        near_edge=Count("id", filter=Q(status__in=[pending, failed], hour__lt=edge_moment(now))),
    )
    pairs_failed = ReportingBalance.objects.filter(failed_at__isnull=False).count()
    onboarding_waiting = tenants_waiting_for_onboarding().count()
    first_failed = (
        UsageReport.objects.filter(status=failed)
        .select_related("tenant", "meter")
        .only("id", "identifier", "error_code", "error_message", "hour", "tenant__name", "meter__code")
        .order_by("id")
        .first()
    )
    # Read the breaker, never `circuit_get`: that creates the row, and a page view writes nothing.
    breaker = CircuitBreaker.objects.filter(name=STRIPE).first()
    last_run = ReconciliationRun.objects.order_by("-started_at", "-id").first()

    unprocessed = ~Q(status__in=WebhookEvent.FINAL_STATUSES)
    waiting = Q(status__in=[WebhookEvent.Status.RECEIVED, WebhookEvent.Status.PROCESSING])
    webhooks = WebhookEvent.objects.order_by().aggregate(
        last_day=Count("id", filter=Q(received_at__gte=now - timedelta(days=1))),
        failed=Count("id", filter=Q(status=WebhookEvent.Status.FAILED)),
        waiting=Count("id", filter=waiting),
    )
    oldest_unprocessed = (
        WebhookEvent.objects.filter(unprocessed)
        .only("id", "stripe_id", "type", "status", "received_at", "error")
        .order_by("received_at", "id")
        .first()
    )
    oldest_pending_at = outbox["oldest_pending"]
    return BillingPanel(
        reports_pending=outbox["pending"],
        reports_failed=outbox["failed"],
        oldest_pending_at=oldest_pending_at,
        oldest_pending_age=now - oldest_pending_at if oldest_pending_at else None,
        first_failed=first_failed,
        breaker=breaker,
        breaker_open=bool(breaker and circuit_is_open(breaker, now)),
        last_reconciliation=last_run,
        webhooks_last_day=webhooks["last_day"],
        webhooks_failed=webhooks["failed"],
        webhooks_waiting=webhooks["waiting"],
        oldest_unprocessed=oldest_unprocessed,
        reports_near_edge=outbox["near_edge"],
        pairs_failed=pairs_failed,
        onboarding_waiting=onboarding_waiting,
        links={
            "onboarding_waiting": _changelist("tenants_tenant", onboarding=StripeOnboardingFilter.WAITING),
            "pairs_failed": _changelist("stripe_sync_reportingbalance", failed="yes"),
            "pending": _changelist("stripe_sync_usagereport", status__exact=pending),
            "failed": _changelist("stripe_sync_usagereport", status__exact=failed),
            "breakers": _changelist("stripe_sync_circuitbreaker"),
            "reconciliations": _changelist("stripe_sync_reconciliationrun"),
            "webhooks": _changelist("stripe_sync_webhookevent"),
            "webhooks_failed": _changelist(
                "stripe_sync_webhookevent", status__exact=WebhookEvent.Status.FAILED
            ),
            "webhooks_waiting": _changelist(
                "stripe_sync_webhookevent",
                status__in=f"{WebhookEvent.Status.RECEIVED.value},{WebhookEvent.Status.PROCESSING.value}",
            ),
        },
    )


# --- Costs ----------------------------------------------------------------------------------------


@dataclass
class BudgetLine:
    budget: Budget
    amount: Money
    actual: Money
    forecast: Money
    forecast_method: str
    actual_percent: Decimal
    forecast_percent: Decimal
    url: str

    @property
    def over(self) -> bool:
        return self.forecast.amount >= self.budget.amount


@dataclass
class MarginLine:
    row: MarginRow
    cost: Money
    revenue: Money
    margin: Money
    url: str


@dataclass
class CostsPanel:
    month: date
    currency: str
    config_error: str = ""
    month_to_date: Money | None = None
    unattributed: Money | None = None
    unknown_tags: Money | None = None
    budgets: list[BudgetLine] = field(default_factory=list)
    alerts_sent: int = 0
    alerts_failed: int = 0
    top_margin: list[MarginLine] = field(default_factory=list)
    bottom_margin: list[MarginLine] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)


def _percent(part: Decimal, whole: Decimal) -> Decimal:
    return percent(part, whole) or Decimal(0)


def costs_panel(*, now: datetime | None = None) -> CostsPanel:
    """Month-to-date AWS cost against budgets, alerts, margin per tenant; about eight queries.

    Margin and unattributed cost are costwatch's own `margin_table` (a constant number of queries);
    the budgets' month-to-date spend is one conditional SUM per budget in a single query, with the
    scope rules of `costwatch.costs.budget_scope_q`; the forecast is the latest check's for the month,
    or costwatch's linear forecast when the check has not judged the budget this month.
    """
    now = now or timezone.now()
    month = now.astimezone(UTC).date().replace(day=1)
    month_start, _ = month_bounds(now)
    links = {
        "budgets": _changelist("costwatch_budget"),
        "daily_costs": _changelist("costwatch_dailycost"),
        "unattributed": _changelist("costwatch_dailycost", tag_value__isempty=1),
        "alerts_sent": _changelist("costwatch_alert", status__exact=Alert.Status.SENT),
        "alerts_failed": _changelist("costwatch_alert", status__exact=Alert.Status.FAILED),
        "margin": _changelist("costwatch_tenantmargin"),
    }
    try:
        config = costwatch_config()
    except CostwatchConfigError as error:
        return CostsPanel(month=month, currency="", config_error=str(error), links=links)
    currency = config.currency

    alerts = Alert.objects.order_by().aggregate(
        sent=Count("id", filter=Q(status=Alert.Status.SENT, sent_at__gte=month_start)),
        failed=Count("id", filter=Q(status=Alert.Status.FAILED)),
    )

    budgets = list(Budget.objects.filter(active=True).order_by("name"))
    lines = []
    if budgets:
        sums = DailyCost.objects.filter(
            metric=config.metric, day__gte=month, day__lt=next_month(month)
        ).aggregate(
            last_day=Max("day"),
            **{
                f"budget_{budget.pk}": Sum(
                    "amount", filter=budget_scope_q(budget) & Q(currency=budget.currency)
                )
                for budget in budgets
            },
        )
        latest: dict[int, BudgetEvaluation] = {}
        for evaluation in BudgetEvaluation.objects.filter(month=month, budget__in=budgets).order_by(
            "-run__started_at", "-pk"
        ):
            latest.setdefault(evaluation.budget_id, evaluation)
        for budget in budgets:
            actual = sums[f"budget_{budget.pk}"] or Decimal(0)
            evaluation = latest.get(budget.pk)
            if evaluation is not None:
                # The check's forecast may come from Cost Explorer; costs restated since then can only
                # raise the floor of the month, never leave the forecast under what is already spent.
                forecast, method = max(evaluation.forecast, actual), evaluation.get_forecast_method_display()
            elif sums["last_day"]:
                forecast, method = (
                    linear_forecast(actual=actual, day=sums["last_day"]),
                    "linear, not checked yet",
                )
            else:
                forecast, method = actual, "no costs yet"
            lines.append(
                BudgetLine(
                    budget=budget,
                    amount=Money(budget.amount, budget.currency),
                    actual=Money(actual, budget.currency),
                    forecast=Money(forecast, budget.currency),
                    forecast_method=method,
                    actual_percent=_percent(actual, budget.amount),
                    forecast_percent=_percent(forecast, budget.amount),
                    url=_change("costwatch_budget", budget.pk),
                )
            )

    table = margin_table(month=month, config=config)
    # Tenants with neither cost nor revenue this month say nothing about margin.
    rows = [row for row in table.rows if row.cost or row.revenue]
    by_margin = sorted(rows, key=lambda row: (-row.margin, row.tenant.name))

    def line(row: MarginRow) -> MarginLine:
        return MarginLine(
            row=row,
            cost=Money(row.cost, currency),
            revenue=Money(row.revenue, currency),
            margin=Money(row.margin, currency),
            url=_change("tenants_tenant", row.tenant.pk),
        )

    # Up to 2 x TOP_COUNT tenants fit in one table, highest margin first; beyond, the highest and the
    # lowest TOP_COUNT, which then never share a tenant.
    top, bottom = by_margin, []
    if len(by_margin) > 2 * TOP_COUNT:
        top, bottom = by_margin[:TOP_COUNT], list(reversed(by_margin[-TOP_COUNT:]))

    return CostsPanel(
        month=month,
        currency=currency,
        month_to_date=Money(table.cost_total, currency),
        unattributed=Money(table.unattributed, currency),
        unknown_tags=Money(sum((amount for _, amount in table.unknown_tags), Decimal(0)), currency),
        budgets=lines,
        alerts_sent=alerts["sent"],
        alerts_failed=alerts["failed"],
        top_margin=[line(row) for row in top],
        bottom_margin=[line(row) for row in bottom],
        links=links,
    )


# --- Jobs -----------------------------------------------------------------------------------------


@dataclass
class RunSummary:
    started_at: datetime
    finished_at: datetime | None
    duration: timedelta | None
    status: str
    status_label: str
    error: str
    url: str

    @property
    def duration_seconds(self) -> str:
        duration = self.duration
        return "-" if duration is None else f"{duration.total_seconds():.1f} s"


@dataclass
class JobLine:
    task: PeriodicTask
    schedule: str
    last_run: RunSummary | None
    runs_url: str
    url: str


@dataclass
class JobsPanel:
    jobs: list[JobLine]
    last_aggregation_success: datetime | None
    last_cost_check_success: datetime | None
    warnings: list[str]
    links: dict[str, str]


# The platform's own record of each periodic task's runs: (model, admin label, what the job is called,
# the statuses that count as the job having done its work).
_RUN_MODELS = {
    AGGREGATION_TASK: (
        AggregationRun,
        "metering_aggregationrun",
        "usage aggregation",
        [AggregationRun.Status.SUCCEEDED],
    ),
    COST_CHECK_TASK: (
        CostCheckRun,
        "costwatch_costcheckrun",
        "AWS cost check",
        # "Completed with errors" still stored the costs and judged the budgets it could.
        [CostCheckRun.Status.SUCCEEDED, CostCheckRun.Status.PARTIAL],
    ),
    RECONCILIATION_TASK: (
        ReconciliationRun,
        "stripe_sync_reconciliationrun",
        "reconciliation with Stripe",
        [ReconciliationRun.Status.SUCCEEDED],
    ),
}


def _run_summary(run, label: str) -> RunSummary | None:
    if run is None:
        return None
    return RunSummary(
        started_at=run.started_at,
        finished_at=run.finished_at,
        duration=run.duration,
        status=run.status,
        status_label=run.get_status_display(),
        error=run.error,
        url=_change(label, run.pk),
    )


def _schedule_text(task: PeriodicTask) -> str:
    if task.crontab is not None:
        return task.crontab.human_readable
    schedule = task.interval or task.solar or task.clocked
    return str(schedule) if schedule is not None else "no schedule"


def _age(moment: datetime, now: datetime) -> str:
    hours = (now - moment).total_seconds() / 3600
    return f"{hours:.1f} hours" if hours < 48 else f"{hours / 24:.1f} days"


def jobs_panel(*, now: datetime | None = None) -> JobsPanel:
    """Every periodic task with its platform run, and what is overdue; seven queries."""
    now = now or timezone.now()
    latest: dict[str, RunSummary | None] = {}
    last_success: dict[str, datetime | None] = {}
    for task_name, (model, label, _, done) in _RUN_MODELS.items():
        latest[task_name] = _run_summary(model.objects.order_by("-started_at", "-id").first(), label)
        last_success[task_name] = (
            model.objects.filter(status__in=done)
            .order_by()
            .aggregate(at=Max(Coalesce("finished_at", "started_at")))["at"]
        )

    jobs, warnings = [], []
    for task in PeriodicTask.objects.select_related("crontab", "interval", "solar", "clocked").order_by(
        "name"
    ):
        model_entry = _RUN_MODELS.get(task.task)
        jobs.append(
            JobLine(
                task=task,
                schedule=_schedule_text(task),
                last_run=latest.get(task.task),
                runs_url=_changelist(model_entry[1]) if model_entry else "",
                url=_change("django_celery_beat_periodictask", task.pk),
            )
        )
        if not task.enabled and not task.one_off:
            warnings.append(f"Periodic task “{task.name}” is disabled: it will not run until enabled.")

    # One warning per job: a failed last run says so and when the job last succeeded; a job that is
    # late (or never ran) without a failure says that.
    aggregated = last_success[AGGREGATION_TASK]
    checked = last_success[COST_CHECK_TASK]
    failed = {
        task_name: run for task_name, run in latest.items() if run is not None and run.status == "failed"
    }
    for task_name, run in failed.items():
        first_line = run.error.strip().splitlines()[0] if run.error.strip() else "no error recorded"
        succeeded = last_success.get(task_name)
        since = (
            f"last success {_age(succeeded, now)} ago ({succeeded:%Y-%m-%d %H:%M} UTC)"
            if succeeded
            else "it has never completed"
        )
        warnings.append(
            f"The last {_RUN_MODELS[task_name][2]} run ({run.started_at:%Y-%m-%d %H:%M} UTC) failed: "
            f"{first_line[:200]} ({since})."
        )
    lateness = (
        (
            AGGREGATION_TASK,
            aggregated,
            AGGREGATION_MAX_AGE,
            "Usage aggregation has never completed successfully.",
            "Usage aggregation last succeeded {age} ago ({at} UTC); it should run every hour.",
        ),
        (
            COST_CHECK_TASK,
            checked,
            COST_CHECK_MAX_AGE,
            "The AWS cost check has never completed.",
            "The AWS cost check last completed {age} ago ({at} UTC); it should run every day.",
        ),
    )
    for task_name, succeeded, max_age, never, late in lateness:
        if task_name in failed:
            continue  # its failure's warning says when it last succeeded
        if succeeded is None:
            warnings.append(never)
        elif now - succeeded > max_age:
            warnings.append(late.format(age=_age(succeeded, now), at=f"{succeeded:%Y-%m-%d %H:%M}"))

    return JobsPanel(
        jobs=jobs,
        last_aggregation_success=aggregated,
        last_cost_check_success=checked,
        warnings=warnings,
        links={"periodic_tasks": _changelist("django_celery_beat_periodictask")},
    )


# --- The whole page -------------------------------------------------------------------------------


@dataclass
class Dashboard:
    now: datetime
    usage: UsagePanel
    billing: BillingPanel
    costs: CostsPanel | None  # None: the viewer may not see money
    jobs: JobsPanel
    warnings: list[str]


def dashboard(*, now: datetime | None = None, money: bool = True) -> Dashboard:
    """Every panel, read at one moment, and the warnings an operator should act on first.

    `money`: also revenue, AWS costs, budgets and margin; False (a user without the revenue permission,
    core.permissions) neither reads nor returns them: the revenue ranking and the costs
    panel are None.
    """
    now = now or timezone.now()
    billing = billing_panel(now=now)
    jobs = jobs_panel(now=now)
    warnings = list(jobs.warnings)
    if billing.breaker_open:
        warnings.insert(
            0,
            f"The circuit breaker around Stripe is open until {billing.breaker.open_until:%Y-%m-%d %H:%M:%S} "
            f"UTC: usage reports wait until it closes.",
        )
    if billing.reports_failed:
        warnings.append(f"{billing.reports_failed} usage report(s) to Stripe failed and need an operator.")
    if billing.pairs_failed:
        warnings.append(
            f"Usage reports of {billing.pairs_failed} tenant/meter pair(s) could not be prepared "
            "(Stripe sync → Reporting balances): they are not reported until fixed."
        )
    if billing.reports_near_edge:
        warnings.append(
            f"{billing.reports_near_edge} unsent usage report(s) are close to Stripe's 35-day window: "
            "send or fix them now."
        )
    return Dashboard(
        now=now,
        usage=usage_panel(now=now, money=money),
        billing=billing,
        costs=costs_panel(now=now) if money else None,
        jobs=jobs,
        warnings=warnings,
    )
