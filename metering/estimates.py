"""A tenant's month so far, priced: usage, free allowance, billable quantity and charge per meter.

`tenant_month_estimate` details one tenant (every meter, its allowance applied: the plan's per-meter
allowance, else the free plan's monthly free allowance; metering.allowances); `revenue_estimates`
is the same arithmetic for many tenants at once (the dashboard, the daily report, costwatch's margin).
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, localcontext

from django.db.models import OuterRef, Subquery, Sum
from django.utils import timezone

from core.money import Money, format_quantity
from metering.allowances import allowance_resolve, plan_allowance_rows
from metering.models import HourlyAggregate, Meter, PlanMeterAllowance, Price
from metering.pricing import Charge, billable_quantity, price_charge_for
from tenants.models import Tenant


@dataclass(frozen=True)
class MeterEstimate:
    meter: Meter
    usage: Decimal  # sum of the month's hourly values
    free_allowance_applied: Decimal  # how much of the usage the (resolved per-meter) allowance covered
    billable: Decimal  # usage - free_allowance_applied
    charge: Charge | None  # None: the meter has no price on the tenant's plan
    currency: str | None  # the price's currency; None without a price


def month_bounds(moment: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month containing `moment`: [first day 00:00, next month's first day)."""
    moment = moment.astimezone(UTC)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    if moment.month == 12:
        return start, datetime(moment.year + 1, 1, 1, tzinfo=UTC)
    return start, datetime(moment.year, moment.month + 1, 1, tzinfo=UTC)


def tenant_month_estimate(*, tenant: Tenant, month: date | None = None) -> list[MeterEstimate]:
    """Estimate every meter's charge for `tenant` in the UTC calendar month containing `month`.

    Defaults to the current UTC month. Three queries whatever the number of meters: the meters (with
    their allowance row on the tenant's plan), one grouped SUM over the month's hourly aggregates,
    and the prices of the tenant's plan.
    """
    month = month or timezone.now().date()
    start, end = month_bounds(datetime(month.year, month.month, 1, tzinfo=UTC))
    # Each hour's value is that hour's billable quantity whatever the meter's aggregation (a max
    # meter's hourly max included): hours go to Stripe as meter events summed over the period.
    usage_by_meter: dict[int, Decimal] = dict(
        HourlyAggregate.objects.filter(tenant=tenant, hour__gte=start, hour__lt=end)
        .order_by()
        .values("meter")
        .annotate(total=Sum("value"))
        .values_list("meter", "total")
    )
    prices = {price.meter_id: price for price in Price.objects.filter(plan=tenant.plan)}
    # The plan's allowance row of each meter read with the meters (no query of its own).
    plan_row = PlanMeterAllowance.objects.filter(plan=tenant.plan, meter=OuterRef("pk"))
    meters = Meter.objects.annotate(_plan_included=Subquery(plan_row.values("included")[:1]))

    estimates = []
    for meter in meters:
        usage = usage_by_meter.get(meter.pk) or Decimal(0)
        rows = {}
        if meter._plan_included is not None:
            rows[(tenant.plan, meter.pk)] = PlanMeterAllowance(
                plan=tenant.plan, meter_id=meter.pk, included=meter._plan_included
            )
        included = allowance_resolve(tenant=tenant, meter_id=meter.pk, rows=rows).included
        billable = billable_quantity(usage=usage, included=included)
        # Usage has up to 38 digits: more than the default 28-digit context subtracts exactly.
        with localcontext(prec=100):
            allowance_applied = usage - billable
        price = prices.get(meter.pk)
        estimates.append(
            MeterEstimate(
                meter=meter,
                usage=usage,
                free_allowance_applied=allowance_applied,
                billable=billable,
                charge=price_charge_for(price=price, quantity=billable) if price else None,
                currency=price.currency if price else None,
            )
        )
    return estimates


def tenant_month_total_minor(estimates: Iterable[MeterEstimate]) -> dict[str, int]:
    """Total of the priced meters' charges per currency, in minor units.

    Each charge is already rounded, and summing rounded charges is what Stripe does with the line
    items of an invoice.
    """
    totals: dict[str, int] = defaultdict(int)
    for estimate in estimates:
        if estimate.charge is not None and estimate.currency is not None:
            totals[estimate.currency] += estimate.charge.amount_minor
    return dict(totals)


@dataclass(frozen=True)
class EstimateLine:
    """One meter's estimate as shown: quantities formatted, the charge as Money."""

    meter: Meter
    usage: str
    free_allowance_applied: str
    billable: str
    charge: Money | None  # None: the meter has no price on the tenant's plan


@dataclass(frozen=True)
class EstimateSummary:
    """A tenant's month estimate as the tenant page and the metering admin's estimate page show it."""

    month: date
    lines: list[EstimateLine]
    totals: list[Money]  # per currency
    total_minor: dict[str, int]  # currency (as priced) -> minor units


def estimate_summary(
    *, estimates: list[MeterEstimate], month: date, used_only: bool = False
) -> EstimateSummary:
    """`tenant_month_estimate`'s figures shaped for display. `used_only`: leave out the meters with
    neither usage nor a price."""
    lines = [
        EstimateLine(
            meter=estimate.meter,
            usage=format_quantity(estimate.usage),
            free_allowance_applied=format_quantity(estimate.free_allowance_applied),
            billable=format_quantity(estimate.billable),
            charge=Money.from_minor(estimate.charge.amount_minor, estimate.currency)
            if estimate.charge is not None and estimate.currency
            else None,
        )
        for estimate in estimates
        if not used_only or estimate.usage or estimate.charge is not None
    ]
    totals = tenant_month_total_minor(estimates)
    return EstimateSummary(
        month=month,
        lines=lines,
        totals=[Money.from_minor(amount, currency) for currency, amount in sorted(totals.items())],
        total_minor=totals,
    )


@dataclass(frozen=True)
class RevenueEstimate:
    """One tenant's pricing preview over a window, in one currency, per meter and in total."""

    tenant: Tenant
    currency: str  # upper case, e.g. "USD"
    by_meter: dict[int, int]  # meter id -> minor units (each charge rounded once, as Stripe does)

    @property
    def amount_minor(self) -> int:
        return sum(self.by_meter.values())


def revenue_estimates(
    *,
    start: datetime,
    end: datetime,
    tenants: list[Tenant] | None = None,
    prices: Iterable[Price] | None = None,
) -> list[RevenueEstimate]:
    """The pricing preview of the usage of [start, end) for many tenants at once, in four queries.

    The same arithmetic as `tenant_month_estimate` (sum of the window's hourly values per meter, the
    free allowance, the price of the tenant's plan, one rounding per meter), done for all tenants at
    once instead of three queries per tenant. Prices are monthly, so `start` is a month's first hour
    for a bill; a shorter window is a month-to-date figure.

    `tenants`: only these (no tenant query); default every tenant. `prices`: only these (a filtered
    queryset, say one currency's); default every price. A tenant with no price gets no estimate.
    """
    aggregates = HourlyAggregate.objects.filter(hour__gte=start, hour__lt=end)
    if tenants is not None:
        aggregates = aggregates.filter(tenant__in=[tenant.pk for tenant in tenants])
    usage: dict[int, dict[int, Decimal]] = defaultdict(dict)
    for tenant_id, meter_id, total in (
        aggregates.order_by()
        .values("tenant", "meter")
        .annotate(total=Sum("value"))
        .values_list("tenant", "meter", "total")
    ):
        usage[tenant_id][meter_id] = total
    prices_by_plan: dict[str, list[Price]] = defaultdict(list)
    for price in Price.objects.all() if prices is None else prices:
        prices_by_plan[price.plan].append(price)
    if not prices_by_plan:
        return []
    if tenants is None:
        tenants = Tenant.objects.only("id", "name", "slug", "plan", "monthly_free_allowance")
    rows = plan_allowance_rows()
    estimates = []
    # Every priced meter counts, used or not: a first tier's flat amount is due at zero usage.
    for tenant in tenants:
        by_currency: dict[str, dict[int, int]] = defaultdict(dict)
        for price in prices_by_plan.get(tenant.plan, []):
            used = usage[tenant.pk].get(price.meter_id) or Decimal(0)
            included = allowance_resolve(tenant=tenant, meter_id=price.meter_id, rows=rows).included
            charge = price_charge_for(price=price, quantity=billable_quantity(usage=used, included=included))
            by_currency[price.currency.upper()][price.meter_id] = charge.amount_minor
        estimates.extend(
            RevenueEstimate(tenant=tenant, currency=currency, by_meter=by_meter)
            for currency, by_meter in by_currency.items()
        )
    return estimates
