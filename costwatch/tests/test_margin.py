from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from freezegun import freeze_time

from costwatch.conf import costwatch_config
from costwatch.margin import margin_table
from costwatch.tests.conftest import stripe_customer_for
from costwatch.tests.factories import BudgetFactory, DailyCostFactory
from metering.estimates import tenant_month_estimate, tenant_month_total_minor
from metering.tests.factories import HourlyAggregateFactory, MeterFactory, PriceFactory
from stripe_sync.tests.factories import mirrored_invoice as invoice
from tenants.tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

NOV = date(2026, 11, 1)


def epoch(*args) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


def cost(day: date, tag: str, amount: str, service: str = "Amazon EC2", currency: str = "USD"):
    return DailyCostFactory(
        metric="UnblendedCost",
        day=day,
        service=service,
        tag_value=tag,
        amount=Decimal(amount),
        currency=currency,
    )


@pytest.fixture
def november():
    """The hand-computed example.

    acme: cost 40.25 + 9.75 = 50.00; revenue 120.00 (paid, excluding tax) + 30.00 (open) = 150.00;
          margin 100.00, 66.7%. A draft, an October and a EUR invoice do not count.
    beta: cost 30.10, no invoice: revenue 0, margin -30.10, no percent.
    unattributed 5.00; tag value "ghost" (no tenant) 2.00; total cost 87.10, margin 62.90.
    """
    acme = TenantFactory(slug="acme", name="Acme")
    beta = TenantFactory(slug="beta", name="Beta")
    customer = stripe_customer_for(acme, "cus_acme")
    invoice(
        customer,
        "in_paid",
        status="paid",
        period_start=epoch(2026, 11, 1),
        total=12600,
        total_excluding_tax=12000,
    )
    invoice(customer, "in_open", status="open", period_start=epoch(2026, 11, 15), total=3000)
    invoice(customer, "in_draft", status="draft", period_start=epoch(2026, 11, 1), total=99999)
    invoice(customer, "in_oct", status="paid", period_start=epoch(2026, 10, 31, 23, 59), total=50000)
    invoice(customer, "in_eur", status="paid", period_start=epoch(2026, 11, 1), total=7000, currency="eur")
    cost(date(2026, 11, 1), "acme", "40.25")
    cost(date(2026, 11, 30), "acme", "9.75", service="Amazon S3")
    cost(date(2026, 10, 31), "acme", "100")
    cost(date(2026, 11, 2), "beta", "30.10")
    cost(date(2026, 11, 3), "", "5.00")
    cost(date(2026, 11, 3), "ghost", "2.00")
    return acme, beta


@freeze_time("2026-12-10 12:00:00")
def test_margin_figures_match_the_hand_computed_example(november):
    table = margin_table(month=NOV, config=costwatch_config())

    rows = {row.tenant.slug: row for row in table.rows}
    acme, beta = rows["acme"], rows["beta"]
    assert (acme.cost, acme.revenue, acme.revenue_source, acme.margin, acme.margin_percent) == (
        Decimal("50.00"),
        Decimal("150.00"),
        "invoices",
        Decimal("100.00"),
        Decimal("66.7"),
    )
    assert (beta.cost, beta.revenue, beta.revenue_source, beta.margin, beta.margin_percent) == (
        Decimal("30.10"),
        Decimal("0"),
        "none",
        Decimal("-30.10"),
        None,
    )
    assert table.unattributed == Decimal("5.00")
    assert table.unknown_tags == [("ghost", Decimal("2.00"))]
    assert (table.cost_total, table.revenue_total, table.margin_total) == (
        Decimal("87.10"),
        Decimal("150.00"),
        Decimal("62.90"),
    )


@freeze_time("2026-11-20 12:00:00")
def test_the_current_month_without_invoices_uses_the_pricing_preview(db):
    gamma = TenantFactory(slug="gamma", name="Gamma", plan="metered")
    delta = TenantFactory(slug="delta", name="Delta", plan="free", monthly_free_allowance=Decimal("100"))
    calls = MeterFactory(code="api_calls", name="API calls", unit="call", aggregation="count")
    storage = MeterFactory(code="storage_gb", name="Storage", unit="GB", aggregation="sum")
    for plan in ("metered", "free"):
        PriceFactory(meter=calls, plan=plan, currency="usd", unit_amount=Decimal("0.5"))
        PriceFactory(
            meter=storage,
            plan=plan,
            currency="usd",
            model="graduated",
            tiers=[
                {"up_to": 10, "unit_amount": "0", "flat_amount": "100"},
                {"up_to": None, "unit_amount": "3", "flat_amount": "0"},
            ],
        )
    for tenant, value in ((gamma, "1001"), (delta, "250")):
        HourlyAggregateFactory(
            tenant=tenant,
            meter=calls,
            hour=datetime(2026, 11, 5, 10, tzinfo=UTC),
            value=Decimal(value),
            event_count=1,
        )
    cost(date(2026, 11, 5), "gamma", "1.50")

    table = margin_table(month=NOV, config=costwatch_config())

    rows = {row.tenant.slug: row for row in table.rows}
    for tenant in (gamma, delta):
        expected = tenant_month_total_minor(tenant_month_estimate(tenant=tenant))["usd"]
        assert rows[tenant.slug].revenue == Decimal(expected) / 100
        assert rows[tenant.slug].revenue_source == "estimate"
    # gamma: 1001 calls x 0.5 = 500.5 -> 501 cents, storage's first tier flat 100: 6.01
    assert rows["gamma"].revenue == Decimal("6.01")
    assert rows["gamma"].margin == Decimal("4.51")


@freeze_time("2026-11-20 12:00:00")
def test_a_subscriptions_empty_opening_invoice_is_not_the_months_revenue(db):
    """Stripe opens a metered subscription with a $0 invoice whose period is empty; usage is billed
    on later invoices. The month's revenue is then the estimate, not that zero."""
    gamma = TenantFactory(slug="gamma", name="Gamma", plan="metered")
    calls = MeterFactory(code="api_calls", name="API calls", unit="call", aggregation="count")
    PriceFactory(meter=calls, plan="metered", currency="usd", unit_amount=Decimal("2"))
    HourlyAggregateFactory(
        tenant=gamma, meter=calls, hour=datetime(2026, 11, 5, 10, tzinfo=UTC), value=Decimal("300")
    )
    customer = stripe_customer_for(gamma, "cus_gamma")
    opened = epoch(2026, 11, 3, 9)
    invoice(customer, "in_opening", status="paid", period_start=opened, period_end=opened, total=0)

    row = {row.tenant.slug: row for row in margin_table(month=NOV, config=costwatch_config()).rows}["gamma"]

    assert (row.revenue, row.revenue_source) == (Decimal("6.00"), "estimate")


def test_the_margin_page_asks_the_same_queries_for_2_or_20_tenants(admin_client, admin_user, november):
    BudgetFactory(name="Account", amount=Decimal("80"))
    with freeze_time("2026-11-20 12:00:00"):  # the current month: the pricing preview is queried too
        admin_client.force_login(admin_user)
        with CaptureQueriesContext(connection) as few:
            assert admin_client.get("/admin/costwatch/tenantmargin/").status_code == 200
        for n in range(18):
            tenant = TenantFactory(slug=f"t{n}", name=f"T{n}")
            cost(date(2026, 11, 4), tenant.slug, "1")
        with CaptureQueriesContext(connection) as many:
            response = admin_client.get("/admin/costwatch/tenantmargin/")

    assert response.content.count(b'class="margin-row"') == 20
    assert len(many) == len(few) <= 12


@freeze_time("2026-12-10 12:00:00")
def test_the_margin_page_shows_the_table_and_the_chart(
    admin_client, admin_user, november, django_assert_max_num_queries
):
    admin_client.force_login(admin_user)  # in the frozen time, so the session has not expired
    BudgetFactory(name="Account", amount=Decimal("80"))

    with django_assert_max_num_queries(12):
        response = admin_client.get("/admin/costwatch/tenantmargin/?month=2026-11")

    html = response.content.decode()
    assert response.status_code == 200
    assert "Tenant cost and margin, November 2026" in html
    assert '<tr class="margin-row" data-tenant="acme">' in html
    for figure in ("50.00", "150.00", "100.00", "66.7%", "-30.10", "87.10", "62.90"):
        assert figure in html
    assert "Unattributed" in html
    assert "ghost" in html
    assert '<svg id="cost-chart"' in html
    assert 'class="budget-line"' in html
    assert html.count('<rect class="bar"') == 4  # Nov 1, 2, 3 and 30
    assert "Spent 87.10 USD" in html


@freeze_time("2026-12-10 12:00:00")
def test_the_margin_table_downloads_as_csv(admin_client, admin_user, november):
    admin_client.force_login(admin_user)
    response = admin_client.get("/admin/costwatch/tenantmargin/csv/?month=2026-11")

    assert response["Content-Type"] == "text/csv"
    assert 'filename="tenant-margin-2026-11.csv"' in response["Content-Disposition"]
    lines = response.content.decode().splitlines()
    assert (
        lines[0] == "month,tenant,tenant_name,currency,aws_cost,revenue,revenue_source,margin,margin_percent"
    )
    assert "2026-11,acme,Acme,USD,50.0000000000,150.00,invoices,100.0000000000,66.7" in lines
    assert "2026-11,beta,Beta,USD,30.1000000000,0,none,-30.1000000000," in lines
    assert "2026-11,(unattributed),cost with no tenant tag,USD,5.0000000000,,,," in lines
    assert lines[-1] == "2026-11,(total),,USD,87.1000000000,150.00,,62.9000000000,"


@freeze_time("2026-11-21 12:00:00")
def test_the_chart_shows_a_budget_forecast_line_within_the_month(admin_client, admin_user):
    admin_client.force_login(admin_user)
    budget = BudgetFactory(name="S3", scope="service", service="Amazon S3", amount=Decimal("100"))
    for day in range(1, 11):
        cost(date(2026, 11, day), "", "4", service="Amazon S3")

    response = admin_client.get(f"/admin/costwatch/tenantmargin/?budget={budget.pk}")

    html = response.content.decode()
    assert 'class="forecast-line"' in html
    assert "month-end forecast 120.00 USD" in html
    assert "(Linear from month to date)" in html
