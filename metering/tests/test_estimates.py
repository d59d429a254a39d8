from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from freezegun import freeze_time

from metering.estimates import MeterEstimate, tenant_month_estimate, tenant_month_total_minor
from metering.models import Meter, Price
from metering.tests.factories import HourlyAggregateFactory, MeterFactory, PriceFactory
from tenants.models import Tenant
from tenants.tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

D = Decimal
MARCH = date(2026, 3, 1)


def hour(day: int, at: int, *, month: int = 3, year: int = 2026) -> datetime:
    return datetime(year, month, day, at, tzinfo=UTC)


def record(tenant: Tenant, meter: Meter, at: datetime, value: str) -> None:
    HourlyAggregateFactory(tenant=tenant, meter=meter, hour=at, value=D(value), event_count=1)


def by_code(estimates: list[MeterEstimate]) -> dict[str, MeterEstimate]:
    return {estimate.meter.code: estimate for estimate in estimates}


def test_free_tenant_pays_only_beyond_the_allowance():
    tenant = TenantFactory(plan=Tenant.Plan.FREE, monthly_free_allowance=D(100))
    calls = MeterFactory(code="api.calls", aggregation="sum")
    PriceFactory(meter=calls, plan=Tenant.Plan.FREE, unit_amount=D("2"))
    record(tenant, calls, hour(3, 10), "60")
    record(tenant, calls, hour(17, 22), "70.5")

    [estimate] = tenant_month_estimate(tenant=tenant, month=MARCH)

    assert estimate.usage == D("130.5")
    assert estimate.free_allowance_applied == D(100)
    assert estimate.billable == D("30.5")
    assert estimate.charge.amount_minor == 61
    assert estimate.currency == "usd"


def test_free_tenant_under_the_allowance_is_charged_nothing():
    tenant = TenantFactory(plan=Tenant.Plan.FREE, monthly_free_allowance=D(100))
    calls = MeterFactory(code="api.calls", aggregation="sum")
    PriceFactory(meter=calls, plan=Tenant.Plan.FREE, unit_amount=D("2"))
    record(tenant, calls, hour(3, 10), "40")

    [estimate] = tenant_month_estimate(tenant=tenant, month=MARCH)

    assert (estimate.usage, estimate.free_allowance_applied, estimate.billable) == (D(40), D(40), D(0))
    assert estimate.charge.amount_minor == 0


def test_metered_tenant_pays_all_usage_and_its_plans_price():
    tenant = TenantFactory(plan=Tenant.Plan.METERED, monthly_free_allowance=D(100))
    calls = MeterFactory(code="api.calls", aggregation="sum")
    PriceFactory(meter=calls, plan=Tenant.Plan.FREE, unit_amount=D("1000"))
    PriceFactory(meter=calls, plan=Tenant.Plan.METERED, unit_amount=D("0.5"))
    record(tenant, calls, hour(3, 10), "130")

    [estimate] = tenant_month_estimate(tenant=tenant, month=MARCH)

    assert estimate.free_allowance_applied == D(0)
    assert estimate.billable == D(130)
    assert estimate.charge.amount_minor == 65


def test_only_hours_inside_the_utc_month_count():
    tenant = TenantFactory()
    calls = MeterFactory(code="api.calls", aggregation="sum")
    PriceFactory(meter=calls, plan=tenant.plan, unit_amount=D("1"))
    record(tenant, calls, hour(28, 23, month=2), "1000")  # last hour of February
    record(tenant, calls, hour(1, 0), "1")  # first hour of March
    record(tenant, calls, hour(31, 23), "2")  # last hour of March
    record(tenant, calls, hour(1, 0, month=4), "1000")  # first hour of April

    [estimate] = tenant_month_estimate(tenant=tenant, month=date(2026, 3, 31))

    assert estimate.usage == D(3)
    assert estimate.charge.amount_minor == 3


def test_december_ends_at_the_new_year():
    tenant = TenantFactory()
    calls = MeterFactory(code="api.calls", aggregation="sum")
    record(tenant, calls, hour(31, 23, month=12, year=2025), "5")
    record(tenant, calls, hour(1, 0, month=1, year=2026), "1000")

    [estimate] = tenant_month_estimate(tenant=tenant, month=date(2025, 12, 1))

    assert estimate.usage == D(5)


def test_other_tenants_usage_does_not_count():
    tenant, other = TenantFactory(), TenantFactory()
    calls = MeterFactory(code="api.calls", aggregation="sum")
    record(tenant, calls, hour(2, 8), "4")
    record(other, calls, hour(2, 8), "1000")

    [estimate] = tenant_month_estimate(tenant=tenant, month=MARCH)

    assert estimate.usage == D(4)


def test_meter_without_a_price_on_the_plan_has_no_charge():
    tenant = TenantFactory(plan=Tenant.Plan.METERED)
    storage = MeterFactory(code="storage.gb", aggregation="sum")
    # another plan's price does not apply
    PriceFactory(meter=storage, plan=Tenant.Plan.FREE, unit_amount=D("2"))
    record(tenant, storage, hour(5, 5), "12")

    [estimate] = tenant_month_estimate(tenant=tenant, month=MARCH)

    assert estimate.usage == D(12)
    assert estimate.charge is None
    assert estimate.currency is None


def test_every_meter_is_listed_even_without_usage():
    tenant = TenantFactory()
    calls = MeterFactory(code="api.calls", aggregation="sum")
    PriceFactory(meter=calls, plan=tenant.plan, unit_amount=D("2"))
    MeterFactory(code="storage.gb", aggregation="sum")

    estimates = by_code(tenant_month_estimate(tenant=tenant, month=MARCH))

    assert estimates.keys() == {"api.calls", "storage.gb"}
    assert estimates["api.calls"].usage == D(0)
    assert estimates["api.calls"].charge.amount_minor == 0
    assert estimates["storage.gb"].charge is None


def test_tiered_price_gets_the_months_total_not_each_hour():
    tenant = TenantFactory()
    calls = MeterFactory(code="api.calls", aggregation="sum")
    PriceFactory(
        meter=calls,
        plan=tenant.plan,
        model=Price.Model.GRADUATED,
        tiers=[
            {"up_to": 100, "unit_amount": "1", "flat_amount": "0"},
            {"up_to": None, "unit_amount": "0.5", "flat_amount": "0"},
        ],
    )
    for at in range(3):
        record(tenant, calls, hour(4, at), "60")

    [estimate] = tenant_month_estimate(tenant=tenant, month=MARCH)

    assert estimate.charge.amount_exact == D(140)  # 100 x 1 + 80 x 0.5


@freeze_time("2026-03-31T23:30:00Z")
def test_month_defaults_to_the_current_utc_month():
    tenant = TenantFactory()
    calls = MeterFactory(code="api.calls", aggregation="sum")
    record(tenant, calls, hour(31, 23), "7")
    record(tenant, calls, hour(28, 23, month=2), "1000")

    [estimate] = tenant_month_estimate(tenant=tenant)

    assert estimate.usage == D(7)


@pytest.mark.parametrize("meters", [1, 12])
def test_query_count_does_not_grow_with_meters(meters, django_assert_max_num_queries):
    tenant = TenantFactory()
    for number in range(meters):
        meter = MeterFactory(code=f"meter-{number}", aggregation="sum")
        PriceFactory(meter=meter, plan=tenant.plan, unit_amount=D("2"))
        record(tenant, meter, hour(2, 3), "5")
        record(tenant, meter, hour(2, 4), "5")

    # The meters, one grouped SUM, the plan's prices.
    with django_assert_max_num_queries(3):
        estimates = tenant_month_estimate(tenant=tenant, month=MARCH)

    assert len(estimates) == meters
    assert all(estimate.charge.amount_minor == 20 for estimate in estimates)


def test_totals_are_per_currency_of_rounded_charges():
    tenant = TenantFactory()
    for code, currency in [("a", "usd"), ("b", "usd"), ("c", "eur")]:
        meter = MeterFactory(code=code, aggregation="sum")
        PriceFactory(meter=meter, plan=tenant.plan, currency=currency, unit_amount=D("0.5"))
        record(tenant, meter, hour(2, 3), "3")  # 1.5 -> 2 minor units each
    record(tenant, MeterFactory(code="unpriced", aggregation="sum"), hour(2, 3), "1000")

    estimates = tenant_month_estimate(tenant=tenant, month=MARCH)

    assert tenant_month_total_minor(estimates) == {"usd": 4, "eur": 2}


def test_total_of_nothing_is_empty():
    assert tenant_month_total_minor([]) == {}
