"""The tenant page's overview: history with causes, keys, Stripe links, usage charts, estimate,
invoices, cost and margin, alerts, and a query count that does not grow with meters or invoices."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from djstripe.models import Customer, Invoice, Subscription
from freezegun import freeze_time

from console.tests.page_support import Element, parse
from costwatch.conf import costwatch_config
from costwatch.margin import margin_table
from costwatch.tests.factories import AlertFactory, BudgetFactory, DailyCostFactory
from metering.models import HourlyAggregate
from metering.tests.factories import HourlyAggregateFactory, MeterFactory, PriceFactory
from stripe_sync.tests.factories import (
    CustomerFactory,
    SubscriptionFactory,
    TenantSubscriptionFactory,
    WebhookEventFactory,
    mirrored_invoice,
)
from tenants.models import Tenant
from tenants.services import api_key_issue, api_key_revoke, tenant_change_plan, tenant_suspend
from tenants.tests.factories import TenantChangeFactory, TenantFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 12, 30, tzinfo=UTC)
NOV = date(2026, 11, 1)


def epoch(*args) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


def page_url(tenant) -> str:
    return reverse("admin:tenants_tenant_change", args=[tenant.pk])


def customer_for(tenant, customer_id: str = "cus_page") -> Customer:
    customer = CustomerFactory(id=customer_id)
    tenant.stripe_customer = customer
    tenant.save(update_fields=["stripe_customer"])
    return customer


def invoice(customer, invoice_id: str, *, status: str, period_start: int, total: int, **extra) -> Invoice:
    paid = status == "paid"
    return mirrored_invoice(
        customer,
        invoice_id,
        status=status,
        period_start=period_start,
        total=total,
        amount_paid=total if paid else 0,
        paid=paid,  # dj-stripe's invoice list shows it
        **extra,
    )


def aggregate(tenant, meter, hour: datetime, value: str, events: int = 1) -> HourlyAggregate:
    return HourlyAggregateFactory(
        tenant=tenant, meter=meter, hour=hour, value=Decimal(value), event_count=events
    )


@pytest.fixture
def acme(db, admin_user, costwatch_settings):
    """A tenant with a bit of everything, on 2026-11-20 (frozen by the tests).

    api_calls: 3 + 4 events on Nov 18 (7), 10 on Nov 20; storage_gb: 2.5 on Nov 19. Prices on the
    metered plan: api_calls 2 cents per call, storage 100 cents per GB (the free allowance is the free
    plan's only): estimate 17 x 0.02 + 2.5 x 1.00 = 2.84 USD. Cost: 40.25 + 9.75 = 50.00 USD;
    invoices this month: paid 120.00 + open 30.00 = 150.00 USD (a draft does not count); margin
    100.00 (66.7%).
    """
    with freeze_time(NOW - timedelta(days=3)):
        acme = TenantFactory(slug="acme", name="Acme", plan=Tenant.Plan.FREE)
        acme.monthly_free_allowance = Decimal(5)
        acme.save()
        TenantChangeFactory(
            tenant=acme, field="created", old_value="", new_value="free/active", source="command"
        )
    customer = customer_for(acme)
    subscription = SubscriptionFactory(
        id="sub_page", customer=customer, livemode=False, stripe_data={"id": "sub_page", "status": "active"}
    )
    TenantSubscriptionFactory(tenant=acme, subscription=subscription, generation=1)
    event = WebhookEventFactory(
        stripe_id="evt_card_attached", type="payment_method.attached", payload={}, status="processed"
    )
    with freeze_time(NOW - timedelta(days=2)):
        tenant_change_plan(
            tenant=acme, plan=Tenant.Plan.METERED, source=event.stripe_id, reason="card attached"
        )
    with freeze_time(NOW - timedelta(days=1)):
        tenant_suspend(tenant=acme, actor=admin_user, source="admin", reason="abuse report")
    # A Stripe event the inbox no longer has.
    TenantChangeFactory(
        tenant=acme, field="plan", old_value="metered", new_value="metered", source="evt_pruned"
    )

    live = api_key_issue(tenant=acme, name="production").api_key
    old = api_key_issue(tenant=acme, name="old laptop").api_key
    api_key_revoke(api_key=old)

    api_calls = MeterFactory(code="api_calls", name="API calls", unit="call", aggregation="count")
    storage = MeterFactory(code="storage_gb", name="Storage", unit="GB", aggregation="sum")
    MeterFactory(code="unused", name="Unused", unit="thing", aggregation="count")
    aggregate(acme, api_calls, datetime(2026, 11, 18, 3, tzinfo=UTC), "3", 3)
    aggregate(acme, api_calls, datetime(2026, 11, 18, 4, tzinfo=UTC), "4", 4)
    aggregate(acme, api_calls, datetime(2026, 11, 20, 9, tzinfo=UTC), "10", 10)
    aggregate(acme, storage, datetime(2026, 11, 19, 0, tzinfo=UTC), "2.5", 1)
    other = TenantFactory(slug="other", name="Other")
    aggregate(other, api_calls, datetime(2026, 11, 18, 3, tzinfo=UTC), "1000", 1000)
    PriceFactory(meter=api_calls, plan="metered", unit_amount=Decimal(2))
    PriceFactory(meter=storage, plan="metered", unit_amount=Decimal(100))

    invoice(
        customer,
        "in_paid",
        status="paid",
        period_start=epoch(2026, 11, 1),
        total=12600,
        total_excluding_tax=12000,
        number="ACME-0001",
    )
    invoice(customer, "in_open", status="open", period_start=epoch(2026, 11, 15), total=3000)
    invoice(customer, "in_draft", status="draft", period_start=epoch(2026, 11, 16), total=99999)

    for day, amount in (
        (date(2026, 11, 1), "40.25"),
        (date(2026, 11, 19), "9.75"),
        (date(2026, 10, 31), "100"),
    ):
        DailyCostFactory(
            metric="UnblendedCost",
            day=day,
            service="Amazon EC2",
            tag_value="acme",
            amount=Decimal(amount),
            currency="USD",
        )
    budget = BudgetFactory(name="Acme budget", scope="tag", tag_value="acme", tenant=acme, amount=Decimal(60))
    AlertFactory(
        budget=budget,
        kind="actual",
        month=NOV,
        threshold=Decimal(80),
        actual=Decimal(50),
        subject="Acme budget: 80% of 60.00 USD reached",
        message="...",
        status="sent",
    )
    other_budget = BudgetFactory(name="Account", amount=Decimal(1000))
    AlertFactory(
        budget=other_budget,
        kind="actual",
        month=NOV,
        threshold=Decimal(50),
        actual=Decimal(500),
        subject="Account: 50% reached",
        message="...",
        status="sent",
    )
    acme.refresh_from_db()
    acme.keys = {"live": live, "old": old}
    acme.event = event
    return acme


def tenant_page(client, tenant) -> Element:
    with freeze_time(NOW):
        response = client.get(page_url(tenant))
    assert response.status_code == 200
    return parse(response.content)


def test_history_shows_each_change_with_its_cause(admin_client, acme):
    page = tenant_page(admin_client, acme)

    rows = page.all("history-row")
    assert [(r.attr("data-field"), r.attr("data-source")) for r in rows] == [
        ("plan", "evt_pruned"),
        ("status", "admin"),
        ("plan", "evt_card_attached"),
        ("created", "command"),
    ]
    causes = [r.one("history-cause").text for r in rows]
    assert causes[0] == "Stripe event evt_pruned (not in the webhook inbox)"
    assert causes[1] == "operator admin (via admin)"
    assert causes[2] == "Stripe event evt_card_attached (payment_method.attached)"
    assert causes[3] == "command"
    link = page.one("history-cause-link")
    assert link.attr("href") == reverse("admin:stripe_sync_webhookevent_change", args=[acme.event.pk])
    assert "card attached" in rows[2].text
    assert "abuse report" in rows[1].text
    assert page.one("tenant-plan").text == "Metered"
    assert page.one("tenant-status").text == "Suspended"


def test_keys_and_stripe_links(admin_client, acme):
    page = tenant_page(admin_client, acme)

    keys = {r.attr("data-prefix"): r.attr("data-state") for r in page.all("api-key-row")}
    assert keys == {acme.keys["live"].prefix: "active", acme.keys["old"].prefix: "revoked"}
    rotate = page.one("action-rotate-key")  # revoked keys are not rotated
    assert rotate.attr("href") == reverse(
        "admin:tenants_tenant_rotate_key", args=[acme.pk, acme.keys["live"].pk]
    )

    customer = page.one("stripe-customer-link")
    assert customer.text == "cus_page"
    assert customer.attr("href") == reverse("admin:djstripe_customer_change", args=[acme.stripe_customer.pk])
    subscription = page.one("stripe-subscription-link")
    assert subscription.text == "sub_page"
    assert subscription.attr("href") == reverse(
        "admin:djstripe_subscription_change", args=[Subscription.objects.get(id="sub_page").pk]
    )
    assert "(active)" in page.one("stripe-subscription").text
    # The linked pages exist.
    assert admin_client.get(customer.attr("href")).status_code == 200


def test_usage_chart_per_meter_has_a_bar_per_day_with_its_value(admin_client, acme):
    page = tenant_page(admin_client, acme)

    charts = page.all("tenant-usage-chart")
    assert [c.attr("data-meter") for c in charts] == ["api_calls", "storage_gb"]  # not "unused"
    bars = charts[0].all("tenant-usage-bar")
    assert len(bars) == 30
    values = {b.attr("data-day"): b.attr("data-value") for b in bars}
    assert values["2026-11-18"] == "7"
    assert values["2026-11-20"] == "10"
    assert values["2026-11-19"] == "0"
    assert min(values) == "2026-10-22"
    heights = {b.attr("data-day"): int(b.attr("height")) for b in bars}
    assert heights["2026-11-20"] > heights["2026-11-18"] > 0 == heights["2026-11-19"]
    storage = {b.attr("data-day"): b.attr("data-value") for b in charts[1].all("tenant-usage-bar")}
    assert storage["2026-11-19"] == "2.5"
    assert "No usage of unused" in page.one("panel-usage").text


def test_estimate_invoices_cost_margin_and_alerts(admin_client, acme):
    page = tenant_page(admin_client, acme)

    assert page.one("estimate-total").text == "2.84 USD"
    estimate_rows = {r.attr("data-meter"): r.text for r in page.all("estimate-row")}
    assert set(estimate_rows) == {"api_calls", "storage_gb"}

    invoices = page.all("invoice-row")
    assert {r.attr("data-invoice") for r in invoices} == {"in_draft", "in_open", "in_paid"}
    paid = page.one("invoice-row", data_invoice="in_paid")
    assert "ACME-0001" in paid.text
    assert paid.one("invoice-total").text == "126.00 USD"
    assert paid.all(tag="a")[0].attr("href") == reverse(
        "admin:djstripe_invoice_change", args=[Invoice.objects.get(id="in_paid").pk]
    )

    assert page.one("tenant-cost").text == "50.00 USD"
    assert page.one("tenant-revenue").text.startswith("150.00 USD (paid and open invoices)")
    assert page.one("tenant-margin").text == "100.00 USD (66.7%)"
    # The same figures as costwatch's margin page.
    with freeze_time(NOW):
        [row] = [r for r in margin_table(month=NOV, config=costwatch_config()).rows if r.tenant.pk == acme.pk]
    assert (row.cost, row.revenue, row.margin) == (Decimal("50.00"), Decimal("150.00"), Decimal("100.00"))

    [alert] = page.all("alert-row")  # the account budget's alert is not this tenant's
    assert "Acme budget: 80% of 60.00 USD reached" in alert.text


def test_margin_falls_back_to_the_estimate_without_an_invoice(admin_client, acme):
    Invoice.objects.all().delete()
    page = tenant_page(admin_client, acme)

    assert page.one("tenant-revenue").text.startswith("2.84 USD (pricing preview")
    assert page.one("tenant-margin").text == "-47.16 USD (-1660.6%)"
    assert page.all("invoice-row") == []


def test_an_empty_opening_invoice_leaves_the_margin_on_the_estimate(admin_client, acme):
    """Stripe opens a metered subscription with a $0 invoice whose period is empty; the page counts
    the invoices the margin page counts (costwatch.margin.month_invoices), so not that one."""
    Invoice.objects.all().delete()
    opened = epoch(2026, 11, 3, 9)
    invoice(
        acme.stripe_customer, "in_opening", status="paid", period_start=opened, period_end=opened, total=0
    )
    page = tenant_page(admin_client, acme)

    assert page.one("tenant-revenue").text.startswith("2.84 USD (pricing preview")
    assert len(page.all("invoice-row")) == 1  # still listed among the invoices


def test_a_tenant_without_stripe_usage_or_costs(admin_client, costwatch_settings):
    bare = TenantFactory(slug="bare", name="Bare")
    page = tenant_page(admin_client, bare)

    assert "not onboarded" in page.one("stripe-customer").text
    assert len(page.all("action-onboard")) == 1
    assert page.all("action-resync") == []
    assert len(page.all("usage-none")) == 1
    assert page.one("estimate-total").text == "0.00"
    assert page.one("tenant-cost").text == "0.00 USD"


def test_costwatch_misconfigured_shows_the_error_not_a_500(admin_client, acme, settings):
    settings.COSTWATCH_CURRENCY = "dollars"
    page = tenant_page(admin_client, acme)
    assert "COSTWATCH_CURRENCY" in page.one("cost-config-error").text


def test_the_form_still_saves(admin_client, acme):
    response = admin_client.post(
        page_url(acme),
        {
            "name": "Acme Corp",
            "slug": "acme",
            "plan": "metered",
            "monthly_free_allowance": "5",
            "stripe_customer": "cus_page",
        },
    )
    assert response.status_code == 302, response.content.decode()[-3000:]
    acme.refresh_from_db()
    assert acme.name == "Acme Corp"


def test_allowances_and_limits_this_month_per_meter(admin_client, acme):
    """The plan's allowance rows with this month's fresh usage; a suspended tenant has no access."""
    from metering.tests.factories import PlanMeterAllowanceFactory

    api_calls = acme_meter("api_calls")
    PlanMeterAllowanceFactory(
        plan="metered", meter=api_calls, included=Decimal(10), hard_limit=Decimal(20), at_limit="refuse"
    )
    page = tenant_page(admin_client, acme)
    rows = {
        row.attr("data-meter"): [cell.text for cell in row.all(tag="td")]
        for row in page.all("entitlement-row")
    }
    assert rows["api_calls"] == ["api_calls", "17 call", "10", "20", "refuse events", "no"]
    assert rows["storage_gb"] == ["storage_gb", "2.5 GB", "none", "none", "—", "no"]


def test_credit_grants_with_a_link_to_grant_more(admin_client, acme):
    from stripe_sync.tests.factories import CreditGrantFactory

    CreditGrantFactory(tenant=acme, amount_minor=2500, reason="Welcome credit")
    CreditGrantFactory(tenant=TenantFactory(slug="someone-else"), amount_minor=999)
    page = tenant_page(admin_client, acme)
    rows = page.all("credit-grant-row")
    assert len(rows) == 1
    assert [cell.text for cell in rows[0].all(tag="td")][1:] == [
        "25.00 USD",
        "promotional",
        "active",
        "never",
        "Welcome credit",
    ]
    link = page.one("action-grant-credit").attr("href")
    assert link.endswith(f"?tenant={acme.pk}")
    form = admin_client.get(link)
    assert (
        parse(form.content).all(tag="option", selected="")
        or f'value="{acme.pk}" selected' in form.content.decode()
    )


def acme_meter(code: str):
    from metering.models import Meter

    return Meter.objects.get(code=code)


def test_staff_without_permission_cannot_see_the_page(client, acme, django_user_model):
    staff = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    client.force_login(staff)
    assert client.get(page_url(acme)).status_code == 403


def _add_meters_and_invoices(tenant, count: int, start: int) -> None:
    customer = tenant.stripe_customer
    for n in range(start, start + count):
        meter = MeterFactory(code=f"m{n:03d}", name=f"m{n}", aggregation="sum")
        aggregate(tenant, meter, datetime(2026, 11, 1 + n % 19, tzinfo=UTC), str(n + 1))
        PriceFactory(meter=meter, plan="metered", unit_amount=Decimal(1))
        invoice(customer, f"in_{n:03d}", status="paid", period_start=epoch(2026, 11, 1), total=100 * n)
        WebhookEventFactory(stripe_id=f"evt_{n:03d}", type="invoice.paid", payload={})
        TenantChangeFactory(tenant=tenant, field="plan", new_value="metered", source=f"evt_{n:03d}")
        BudgetFactory(name=f"b{n}", scope="tag", tag_value=tenant.slug, tenant=tenant)
        api_key_issue(tenant=tenant, name=f"k{n}")


def _count_queries(client, tenant) -> int:
    with CaptureQueriesContext(connection) as queries, freeze_time(NOW):
        response = client.get(page_url(tenant))
    assert response.status_code == 200
    return len(queries)


def test_query_count_does_not_grow_with_meters_invoices_or_history(admin_client, acme):
    _add_meters_and_invoices(acme, 3, 0)
    few = _count_queries(admin_client, acme)
    _add_meters_and_invoices(acme, 20, 3)
    many = _count_queries(admin_client, acme)

    assert many == few
    assert few <= 40
    page = tenant_page(admin_client, acme)
    assert len(page.all("tenant-usage-chart")) == 2 + 23
    assert len(page.all("invoice-row")) == 12
    more = page.one("invoices-more")
    assert "The latest 12 of 26: all of them" in more.text
    assert admin_client.get(more.all(tag="a")[0].attr("href")).status_code == 200
