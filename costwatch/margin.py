"""Per-tenant cost and margin for a month, and the month's cost chart: what the admin page shows.

A constant number of queries whatever the number of tenants: one for tenants with their cost and
invoiced revenue (subqueries), one for tag values no tenant has, and for the current month two more
for the pricing preview of every tenant at once (`metering.estimates.revenue_estimates`).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.db.models import (
    BigIntegerField,
    CharField,
    Count,
    DecimalField,
    F,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone
from djstripe.models import Invoice

from core.charts import Chart, daily_chart
from core.money import percent, round_minor, to_major
from costwatch.budgets import linear_forecast
from costwatch.conf import CostwatchConfig
from costwatch.costs import budget_scope_q, month_end, next_month, scope_daily_totals
from costwatch.models import COST_DIGITS, COST_PLACES, Budget, BudgetEvaluation, DailyCost
from metering.estimates import month_bounds, revenue_estimates
from metering.models import Price
from tenants.models import Tenant

REVENUE_STATUSES = ("paid", "open")


def day_epoch(day: date) -> int:
    """`day`'s first second (UTC) as a Unix time, as Stripe stamps an invoice's period."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def invoice_revenue_minor():
    """A mirrored invoice's revenue in minor units: its total excluding tax, else its total."""
    return Coalesce(
        Cast(KT("stripe_data__total_excluding_tax"), BigIntegerField()),
        Cast(KT("stripe_data__total"), BigIntegerField()),
    )


@dataclass
class MarginRow:
    tenant: Tenant
    cost: Decimal
    revenue: Decimal
    revenue_source: str  # "invoices", "estimate" or "none"
    margin: Decimal = field(init=False)
    margin_percent: Decimal | None = field(init=False)

    def __post_init__(self):
        self.margin = self.revenue - self.cost
        self.margin_percent = percent(self.margin, self.revenue)


@dataclass
class MarginTable:
    month: date
    currency: str
    rows: list[MarginRow]
    unattributed: Decimal  # cost with no tenant tag
    unknown_tags: list[tuple[str, Decimal]]  # tag values that name no tenant
    cost_total: Decimal
    revenue_total: Decimal
    margin_total: Decimal


def month_invoices(*, month: date, currency: str):
    """The invoices that are `month`'s revenue in `currency`: paid or open, whose usage period starts
    in the month. An invoice with an empty period (period_end == period_start: the opening invoice
    Stripe writes when a metered subscription is created, $0) bills no usage and is left out, so a
    tenant's first month falls back to the estimate instead of showing a revenue of zero. The margin
    page and the tenant page both count these."""
    period_start = Cast(KT("stripe_data__period_start"), BigIntegerField())
    return (
        Invoice.objects.annotate(
            period_start_epoch=period_start,
            period_end_epoch=Cast(KT("stripe_data__period_end"), BigIntegerField()),
            # Cast to text: compared as JSON key transforms, SQLite parses the right-hand side
            # ('usd', 'paid') as JSON and fails with "malformed JSON".
            status_text=Cast(KT("stripe_data__status"), CharField()),
            currency_text=Cast(KT("stripe_data__currency"), CharField()),
        )
        .filter(
            status_text__in=REVENUE_STATUSES,
            currency_text=currency.lower(),
            period_start_epoch__gte=day_epoch(month),
            period_start_epoch__lt=day_epoch(next_month(month)),
        )
        .filter(Q(period_end_epoch__isnull=True) | Q(period_end_epoch__gt=F("period_start_epoch")))
    )


def _invoices_of_month(*, month: date, currency: str):
    return (
        month_invoices(month=month, currency=currency)
        .filter(customer_id=OuterRef("stripe_customer_id"))
        .order_by()
        .values("customer")
    )


def _estimates_minor(*, tenants: list[Tenant], month: date, currency: str) -> dict[int, int]:
    """The pricing preview's month total (minor units of `currency`) of each tenant, in two queries."""
    start, end = month_bounds(datetime(month.year, month.month, 1, tzinfo=UTC))
    totals = dict.fromkeys((tenant.pk for tenant in tenants), 0)
    for estimate in revenue_estimates(
        start=start, end=end, tenants=tenants, prices=Price.objects.filter(currency=currency.lower())
    ):
        totals[estimate.tenant.pk] += estimate.amount_minor
    return totals


def margin_table(*, month: date, config: CostwatchConfig) -> MarginTable:
    month = month.replace(day=1)
    currency = config.currency
    costs = DailyCost.objects.filter(
        metric=config.metric, currency=currency, day__gte=month, day__lt=next_month(month)
    )
    cost_of_tenant = (
        costs.filter(tag_value=OuterRef("slug")).order_by().values("tag_value").annotate(total=Sum("amount"))
    )
    invoices = _invoices_of_month(month=month, currency=currency)
    tenants = list(
        Tenant.objects.annotate(
            cost=Coalesce(
                Subquery(cost_of_tenant.values("total")),
                Value(Decimal(0)),
                output_field=DecimalField(max_digits=COST_DIGITS, decimal_places=COST_PLACES),
            ),
            revenue_minor=Subquery(
                invoices.annotate(total=Sum(invoice_revenue_minor())).values("total"),
                output_field=BigIntegerField(),
            ),
            invoice_count=Subquery(invoices.annotate(n=Count("pk")).values("n")),
        ).order_by("name")
    )
    is_current = month == timezone.now().date().replace(day=1)
    estimate_for = [t for t in tenants if not t.invoice_count] if is_current else []
    estimates = _estimates_minor(tenants=estimate_for, month=month, currency=currency) if estimate_for else {}

    rows = []
    for tenant in tenants:
        if tenant.invoice_count:
            revenue, source = to_major(tenant.revenue_minor or 0, currency), "invoices"
        elif tenant.pk in estimates:
            revenue, source = to_major(estimates[tenant.pk], currency), "estimate"
        else:
            revenue, source = Decimal(0), "none"
        rows.append(MarginRow(tenant=tenant, cost=tenant.cost, revenue=revenue, revenue_source=source))

    unknown = dict(
        costs.exclude(tag_value__in=Tenant.objects.values("slug"))
        .order_by()
        .values("tag_value")
        .annotate(total=Sum("amount"))
        .values_list("tag_value", "total")
    )
    unattributed = unknown.pop("", Decimal(0))
    unknown_tags = sorted(unknown.items())
    cost_total = (
        sum((row.cost for row in rows), Decimal(0)) + unattributed + sum(unknown.values(), Decimal(0))
    )
    revenue_total = sum((row.revenue for row in rows), Decimal(0))
    return MarginTable(
        month=month,
        currency=currency,
        rows=rows,
        unattributed=unattributed,
        unknown_tags=unknown_tags,
        cost_total=cost_total,
        revenue_total=revenue_total,
        margin_total=revenue_total - cost_total,
    )


def _places(value: Decimal) -> Decimal:
    """Cost amounts at the stored precision, alike on PostgreSQL and SQLite (which drops zeros)."""
    return Decimal(value).quantize(Decimal(1).scaleb(-COST_PLACES))


def margin_csv(table: MarginTable) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "month",
            "tenant",
            "tenant_name",
            "currency",
            "aws_cost",
            "revenue",
            "revenue_source",
            "margin",
            "margin_percent",
        ]
    )
    month = f"{table.month:%Y-%m}"
    for row in table.rows:
        writer.writerow(
            [
                month,
                row.tenant.slug,
                row.tenant.name,
                table.currency,
                _places(row.cost),
                row.revenue,
                row.revenue_source,
                _places(row.margin),
                "" if row.margin_percent is None else row.margin_percent,
            ]
        )
    writer.writerow(
        [
            month,
            "(unattributed)",
            "cost with no tenant tag",
            table.currency,
            _places(table.unattributed),
            "",
            "",
            "",
            "",
        ]
    )
    for tag_value, amount in table.unknown_tags:
        writer.writerow(
            [month, tag_value, "tag value of no tenant", table.currency, _places(amount), "", "", "", ""]
        )
    writer.writerow(
        [
            month,
            "(total)",
            "",
            table.currency,
            _places(table.cost_total),
            table.revenue_total,
            "",
            _places(table.margin_total),
            "",
        ]
    )
    return out.getvalue()


# --- The chart: cumulative spend against the budget line and the forecast --------------------------


@dataclass
class MonthChart:
    chart: Chart  # daily cost bars, the spend so far, the budget level and the forecast
    currency: str
    actual: Decimal  # rounded to the currency's minor unit, as are the other amounts
    forecast: Decimal | None  # None: no cost data for the month, nothing to forecast from
    forecast_method: str
    budget_amount: Decimal | None
    rows: list[dict]  # the days with a cost: day, cost, cumulative


def month_chart(*, month: date, budget: Budget | None, config: CostwatchConfig) -> MonthChart:
    """The month's daily cost (of the budget's scope, else the whole account), spend so far, the
    budget line and the forecast (the latest check's, else linear from the last day with costs)."""
    month = month.replace(day=1)
    last = month_end(month)
    scope = budget_scope_q(budget) if budget else Q()
    currency = budget.currency if budget else config.currency
    totals = scope_daily_totals(
        metric=config.metric, scope=scope, currency=currency, start=month, end=last + timedelta(days=1)
    )
    evaluation = (
        BudgetEvaluation.objects.filter(budget=budget, month=month)
        .order_by("-run__started_at", "-pk")
        .first()
        if budget
        else None
    )
    days = [month + timedelta(days=n) for n in range(last.day)]
    last_day = max(totals) if totals else None
    cumulative, running = [], Decimal(0)
    for day in sorted(totals):
        running += totals[day]
        cumulative.append((day, running))
    actual = running
    if evaluation:
        forecast, method = evaluation.forecast, evaluation.get_forecast_method_display()
    elif last_day is None:
        # No cost at all: neither "complete" nor a forecast, only the absence of data.
        forecast, method = None, "no cost data for this month"
    elif last_day < last:
        forecast, method = linear_forecast(actual=actual, day=last_day), "Linear from month to date"
    else:
        forecast, method = actual, "Month complete"
    limit = budget.amount if budget else None
    chart = daily_chart(
        totals,
        days,
        title=f"Daily cost in {currency}, {month:%B %Y}: {round_minor(actual, currency):,} so far",
        label="Daily cost against budget and forecast",
        unit=currency,
        plot_height=220,
        slot=20,
        bar_width=12,
        every_day=False,
        cover=[value for value in (actual, forecast, limit) if value is not None],
        value_text=lambda value: f"{round_minor(value, currency):,}",
        empty_text=f"No cost data for {month:%B %Y}.",
        svg_id="cost-chart",
    )
    # The spend so far runs through every day up to the last with costs, flat over days without.
    running_by_day, running = [], Decimal(0)
    for day in days:
        if last_day is None or day > last_day:
            break
        running += totals.get(day, Decimal(0))
        running_by_day.append((day, running))
    chart.add_line("cumulative", running_by_day, title="spend so far")
    if limit is not None:
        chart.add_level(
            "budget-line",
            limit,
            title=f"budget {limit} {currency}",
            color="#ba2121",
            width="1.5",
            dash="6 4",
        )
    if forecast is not None and last_day is not None and last_day < last:
        chart.add_line(
            "forecast-line",
            [(last_day, actual), (last, forecast)],
            title=f"forecast {round_minor(forecast, currency)} {currency}",
            color="#666",
            width="1.5",
            dash="3 3",
        )
    return MonthChart(
        chart=chart,
        currency=currency,
        actual=round_minor(actual, currency),
        forecast=None if forecast is None else round_minor(forecast, currency),
        forecast_method=method,
        budget_amount=limit,
        rows=[
            {
                "day": day,
                "cost": round_minor(totals[day], currency),
                "cumulative": round_minor(total, currency),
            }
            for day, total in cumulative
        ],
    )
