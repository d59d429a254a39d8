"""The tenant page's overview: plan and status history, this period's allowances and limits, keys,
Stripe, usage, estimate, invoices and credit grants, AWS cost and margin, alerts, operator jobs.

A fixed number of queries whatever the number of meters, invoices, keys or history rows (grouped
reads, bounded lists, one lookup for every Stripe event named in the history), so the page stays
fast for a tenant with years of history. Everything is UTC; money is Decimal, shown with its currency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

from django.db.models import Count, Q, Sum
from django.urls import reverse
from django.utils import timezone
from djstripe.models import Invoice

from console.models import OperatorJob
from core.money import Money
from costwatch.conf import CostwatchConfigError, costwatch_config
from costwatch.costs import next_month
from costwatch.margin import MarginRow, invoice_revenue_minor, month_invoices
from costwatch.models import Alert, Budget, DailyCost
from metering.charts import MeterUsageChart, meter_usage_chart
from metering.entitlements import Entitlements, tenant_entitlements
from metering.estimates import EstimateSummary, estimate_summary, tenant_month_estimate
from metering.models import Meter
from metering.selectors import daily_usage, last_days
from stripe_sync.credits import tenant_credit_grants
from stripe_sync.models import CreditGrant, TenantSubscription, WebhookEvent
from tenants.models import Tenant, TenantAPIKey, TenantChange

CHART_DAYS = 30
HISTORY_LIMIT = 50
INVOICE_LIMIT = 12
CREDIT_GRANT_LIMIT = 10
ALERT_LIMIT = 10
JOB_LIMIT = 10
STRIPE_EVENT_PREFIX = "evt_"


def _change_url(model_label: str, pk) -> str:
    return reverse(f"admin:{model_label}_change", args=[pk])


# --- History --------------------------------------------------------------------------------------


@dataclass
class HistoryLine:
    change: TenantChange
    cause: str  # "operator admin (via admin)", "Stripe event evt_... (invoice.payment_failed)", ...
    cause_url: str  # the WebhookEvent or the user in admin; "" when there is none


@dataclass
class History:
    lines: list[HistoryLine]
    more: bool  # there are older rows than the ones shown


def tenant_history(*, tenant: Tenant) -> History:
    """The latest plan/status changes with what caused each: two queries.

    A change made by a Stripe event has the event's id as its source; the stored WebhookEvent rows
    are found in one query (an event may be gone from the inbox: then the id is shown unlinked).
    """
    rows = list(
        TenantChange.objects.filter(tenant=tenant)
        .select_related("actor", "platform_key")
        .order_by("-created_at", "-id")[: HISTORY_LIMIT + 1]
    )
    more = len(rows) > HISTORY_LIMIT
    rows = rows[:HISTORY_LIMIT]
    event_ids = {row.source for row in rows if row.source.startswith(STRIPE_EVENT_PREFIX)}
    events = (
        {
            event.stripe_id: event
            for event in WebhookEvent.objects.filter(stripe_id__in=event_ids).only("id", "stripe_id", "type")
        }
        if event_ids
        else {}
    )
    lines = []
    for row in rows:
        event = events.get(row.source)
        if event is not None:
            cause, url = (
                f"Stripe event {event.stripe_id} ({event.type})",
                _change_url("stripe_sync_webhookevent", event.pk),
            )
        elif row.source.startswith(STRIPE_EVENT_PREFIX):
            cause, url = f"Stripe event {row.source} (not in the webhook inbox)", ""
        elif row.actor is not None:
            cause, url = f"operator {row.actor.get_username()} (via {row.source})", ""
        elif row.platform_key is not None:
            cause, url = (
                f"platform key {row.platform_key.name} ({row.platform_key.prefix}…, via {row.source})",
                _change_url("tenants_platformapikey", row.platform_key_id),
            )
        else:
            cause, url = row.source or "unknown", ""
        lines.append(HistoryLine(change=row, cause=cause, cause_url=url))
    return History(lines=lines, more=more)


# --- Keys -----------------------------------------------------------------------------------------


@dataclass
class KeyLine:
    key: TenantAPIKey
    state: str  # active / expired / revoked
    url: str


def tenant_keys(*, tenant: Tenant) -> list[KeyLine]:
    """Every key of the tenant, newest first (keys are few: one query)."""
    lines = []
    for key in TenantAPIKey.objects.filter(tenant=tenant).order_by("-created", "-id"):
        state = "revoked" if key.revoked else "expired" if key.has_expired else "active"
        lines.append(KeyLine(key=key, state=state, url=_change_url("tenants_tenantapikey", key.pk)))
    return lines


# --- Stripe ---------------------------------------------------------------------------------------


@dataclass
class StripeLinks:
    customer_id: str
    customer_url: str
    subscription_id: str
    subscription_status: str
    subscription_url: str
    subscription_canceled_at: datetime | None


def tenant_stripe_links(*, tenant: Tenant) -> StripeLinks:
    """The mirrored dj-stripe customer and metered subscription; no query when the admin's queryset
    already joined them (it does), else two."""
    customer = tenant.stripe_customer
    try:
        record = tenant.stripe_subscription
    except TenantSubscription.DoesNotExist:
        record = None
    subscription = record.subscription if record is not None else None
    return StripeLinks(
        customer_id=customer.id if customer else "",
        customer_url=_change_url("djstripe_customer", customer.pk) if customer else "",
        subscription_id=subscription.id if subscription else "",
        subscription_status=(subscription.stripe_data or {}).get("status", "") if subscription else "",
        subscription_url=_change_url("djstripe_subscription", subscription.pk) if subscription else "",
        subscription_canceled_at=record.canceled_at if record is not None else None,
    )


# --- Usage charts ---------------------------------------------------------------------------------


@dataclass
class MeterChart:
    meter: Meter
    usage: MeterUsageChart


@dataclass
class UsageCharts:
    charts: list[MeterChart]
    unused: list[Meter]  # meters without usage in the window
    first_day: date
    last_day: date


def tenant_usage_charts(*, tenant: Tenant, meters: list[Meter], now: datetime) -> UsageCharts:
    """One chart per meter with usage in the last 30 UTC days: one grouped query for all meters."""
    days = last_days(now=now, count=CHART_DAYS)
    daily = daily_usage(tenant=tenant, days=days)
    charts, unused = [], []
    for meter in meters:
        if meter.code in daily:
            usage = meter_usage_chart(
                code=meter.code,
                unit=meter.unit,
                daily=daily[meter.code],
                days=days,
                testid="tenant-usage-chart",
                bar_testid="tenant-usage-bar",
                data={"meter": meter.code},
            )
            charts.append(MeterChart(meter=meter, usage=usage))
        else:
            unused.append(meter)
    return UsageCharts(charts=charts, unused=unused, first_day=days[0], last_day=days[-1])


# --- Invoices -------------------------------------------------------------------------------------


@dataclass
class InvoiceLine:
    invoice: Invoice
    number: str
    status: str
    total: Money | None
    amount_paid: Money | None
    period_start: datetime | None
    url: str


@dataclass
class Invoices:
    lines: list[InvoiceLine]
    count: int
    list_url: str


def _stripe_time(value) -> datetime | None:
    return datetime.fromtimestamp(int(value), tz=UTC) if isinstance(value, int | float) else None


def tenant_invoices(*, tenant: Tenant) -> Invoices:
    """The latest mirrored invoices of the tenant's customer: two queries (a page and the count)."""
    list_url = reverse("admin:djstripe_invoice_changelist")
    if not tenant.stripe_customer_id:
        return Invoices(lines=[], count=0, list_url=list_url)
    invoices = Invoice.objects.filter(customer_id=tenant.stripe_customer_id)
    lines = []
    for invoice in invoices.only("djstripe_id", "id", "created", "stripe_data").order_by("-created", "-pk")[
        :INVOICE_LIMIT
    ]:
        data = invoice.stripe_data or {}
        currency = data.get("currency") or ""
        total, paid = data.get("total"), data.get("amount_paid")
        lines.append(
            InvoiceLine(
                invoice=invoice,
                number=data.get("number") or invoice.id,
                status=data.get("status") or "",
                total=Money.from_minor(total, currency) if currency and total is not None else None,
                amount_paid=Money.from_minor(paid, currency) if currency and paid is not None else None,
                period_start=_stripe_time(data.get("period_start")),
                url=_change_url("djstripe_invoice", invoice.pk),
            )
        )
    return Invoices(
        lines=lines,
        count=invoices.count(),
        list_url=f"{list_url}?customer__id__exact={tenant.stripe_customer_id}",
    )


# --- Credit grants --------------------------------------------------------------------------------


@dataclass
class CreditGrants:
    grants: list[CreditGrant]  # the latest CREDIT_GRANT_LIMIT
    count: int
    list_url: str
    add_url: str


def tenant_credit_grant_lines(*, tenant: Tenant) -> CreditGrants:
    """The tenant's latest credit grants (the audit rows; Stripe is not asked here): two queries."""
    grants = tenant_credit_grants(tenant=tenant)
    return CreditGrants(
        grants=list(grants[:CREDIT_GRANT_LIMIT]),
        count=grants.count(),
        list_url=reverse("admin:stripe_sync_creditgrant_changelist") + f"?tenant__id__exact={tenant.pk}",
        add_url=reverse("admin:stripe_sync_creditgrant_add") + f"?tenant={tenant.pk}",
    )


# --- Cost and margin ------------------------------------------------------------------------------


@dataclass
class CostMargin:
    month: date
    currency: str = ""
    config_error: str = ""
    row: MarginRow | None = None
    cost: Money | None = None
    revenue: Money | None = None
    margin: Money | None = None
    costs_url: str = ""
    margin_url: str = ""


def tenant_cost_margin(*, tenant: Tenant, month: date, estimate: EstimateSummary) -> CostMargin:
    """This month's AWS cost attributed to the tenant (its tag value is its slug) and the margin.

    The rules of costwatch's margin page (`costwatch.margin.margin_table`) for one tenant, in two
    queries instead of the whole table: cost is the month's DailyCost of the tenant's tag value in the
    configured metric and currency; revenue is the month's paid and open invoices in that currency
    (excluding tax), or, for the current month without one, the pricing preview.
    """
    result = CostMargin(
        month=month,
        costs_url=reverse("admin:costwatch_dailycost_changelist") + f"?tag_value={tenant.slug}",
        margin_url=reverse("admin:costwatch_tenantmargin_changelist"),
    )
    try:
        config = costwatch_config()
    except CostwatchConfigError as error:
        result.config_error = str(error)
        return result
    currency = config.currency
    cost = DailyCost.objects.filter(
        metric=config.metric,
        currency=currency,
        tag_value=tenant.slug,
        day__gte=month,
        day__lt=next_month(month),
    ).aggregate(total=Sum("amount"))["total"] or Decimal(0)

    revenue_minor, invoice_count = 0, 0
    if tenant.stripe_customer_id:
        invoiced = (
            month_invoices(month=month, currency=currency)
            .filter(customer_id=tenant.stripe_customer_id)
            .aggregate(total=Sum(invoice_revenue_minor()), count=Count("pk"))
        )
        revenue_minor, invoice_count = invoiced["total"] or 0, invoiced["count"]
    if invoice_count:
        source = "invoices"
    elif month == timezone.now().astimezone(UTC).date().replace(day=1):
        revenue_minor, source = estimate.total_minor.get(currency.lower(), 0), "estimate"
    else:
        source = "none"
    revenue = Money.from_minor(revenue_minor, currency).amount
    row = MarginRow(tenant=tenant, cost=cost, revenue=revenue, revenue_source=source)
    result.currency = currency
    result.row = row
    result.cost = Money(row.cost, currency)
    result.revenue = Money(row.revenue, currency)
    result.margin = Money(row.margin, currency)
    return result


# --- Alerts ---------------------------------------------------------------------------------------


@dataclass
class AlertLine:
    alert: Alert
    url: str
    budget_url: str


@dataclass
class Alerts:
    lines: list[AlertLine]
    budgets: list[Budget]
    list_url: str


def tenant_alerts(*, tenant: Tenant) -> Alerts:
    """The latest alerts of the tenant's budgets (linked to it, or on its tag value): two queries."""
    scope = Q(tenant=tenant) | Q(scope=Budget.Scope.TAG, tag_value=tenant.slug)
    budgets = list(Budget.objects.filter(scope).order_by("name"))
    alerts = (
        list(
            Alert.objects.filter(budget__in=[budget.pk for budget in budgets])
            .select_related("budget")
            .order_by("-created_at", "-id")[:ALERT_LIMIT]
        )
        if budgets
        else []
    )
    return Alerts(
        lines=[
            AlertLine(
                alert=alert,
                url=_change_url("costwatch_alert", alert.pk),
                budget_url=_change_url("costwatch_budget", alert.budget_id),
            )
            for alert in alerts
        ],
        budgets=budgets,
        list_url=reverse("admin:costwatch_alert_changelist"),
    )


# --- Jobs -----------------------------------------------------------------------------------------


def tenant_jobs(*, tenant_id: int) -> list[OperatorJob]:
    return list(
        OperatorJob.objects.filter(tenant_id=tenant_id)
        .select_related("requested_by")
        .order_by("-created_at", "-id")[:JOB_LIMIT]
    )


# --- The whole overview ---------------------------------------------------------------------------


@dataclass
class TenantOverview:
    tenant: Tenant
    now: datetime
    history: History
    keys: list[KeyLine]
    stripe: StripeLinks
    entitlements: Entitlements  # this period's usage, allowance and limit per meter (fresh)
    usage: UsageCharts
    # Money: None for a user without the revenue permission (core.permissions).
    estimate: EstimateSummary | None
    invoices: Invoices | None
    credits: CreditGrants | None
    cost: CostMargin | None
    alerts: Alerts | None
    jobs: list[OperatorJob]
    links: dict[str, str] = field(default_factory=dict)

    @property
    def jobs_running(self) -> bool:
        return any(not job.is_finished for job in self.jobs)


def tenant_overview(*, tenant: Tenant, now: datetime | None = None, money: bool = True) -> TenantOverview:
    """Everything the tenant page shows above its form, read at one moment.

    `money`: also the estimate, invoices, credit grants, cost and margin and budget alerts; False (a
    user without the revenue permission) leaves them None, and reads none of them.
    """
    now = now or timezone.now()
    month = now.astimezone(UTC).date().replace(day=1)
    meters = list(Meter.objects.order_by("code"))
    estimate = (
        estimate_summary(
            estimates=tenant_month_estimate(tenant=tenant, month=month), month=month, used_only=True
        )
        if money
        else None
    )
    return TenantOverview(
        tenant=tenant,
        now=now,
        history=tenant_history(tenant=tenant),
        keys=tenant_keys(tenant=tenant),
        stripe=tenant_stripe_links(tenant=tenant),
        entitlements=tenant_entitlements(tenant=tenant, meters=meters, now=now),
        usage=tenant_usage_charts(tenant=tenant, meters=meters, now=now),
        estimate=estimate,
        invoices=tenant_invoices(tenant=tenant) if money else None,
        credits=tenant_credit_grant_lines(tenant=tenant) if money else None,
        cost=tenant_cost_margin(tenant=tenant, month=month, estimate=estimate) if money else None,
        alerts=tenant_alerts(tenant=tenant) if money else None,
        jobs=tenant_jobs(tenant_id=tenant.pk),
        links={
            "aggregates": reverse("admin:metering_hourlyaggregate_changelist")
            + f"?tenant__id__exact={tenant.pk}",
            "usage_chart": reverse("admin:metering_hourlyaggregate_usage_chart", args=[tenant.pk]),
            "estimate": reverse("admin:metering_hourlyaggregate_estimate", args=[tenant.pk]),
            "history": reverse("admin:tenants_tenant_history", args=[tenant.pk]),
        },
    )
