"""A tenant's month so far, priced: usage, free allowance, billable quantity and charge per meter."""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, localcontext

from django.db.models import Sum
from django.utils import timezone

from metering.models import HourlyAggregate, Meter, Price
from metering.pricing import Charge, billable_quantity, price_charge_for
from tenants.models import Tenant


@dataclass(frozen=True)
class MeterEstimate:
    meter: Meter
    usage: Decimal  # sum of the month's hourly values
    free_allowance_applied: Decimal  # how much of the usage the free allowance covered
    billable: Decimal  # usage - free_allowance_applied
    charge: Charge | None  # None: the meter has no price on the tenant's plan
    currency: str | None  # the price's currency; None without a price


def _month_bounds(month: date) -> tuple[datetime, datetime]:
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    if month.month == 12:
        return start, datetime(month.year + 1, 1, 1, tzinfo=UTC)
    return start, datetime(month.year, month.month + 1, 1, tzinfo=UTC)


def tenant_month_estimate(*, tenant: Tenant, month: date | None = None) -> list[MeterEstimate]:
    """Estimate every meter's charge for `tenant` in the UTC calendar month containing `month`.

    Defaults to the current UTC month. Three queries whatever the number of meters: the meters,
    one grouped SUM over the month's hourly aggregates, and the prices of the tenant's plan.
    """
    start, end = _month_bounds(month or timezone.now().date())
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

    estimates = []
    for meter in Meter.objects.all():
        usage = usage_by_meter.get(meter.pk) or Decimal(0)
        billable = billable_quantity(tenant=tenant, usage=usage)
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
