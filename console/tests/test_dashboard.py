"""The operator dashboard on the admin index: figures from seeded rows, warnings, the chart, query count."""

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django_celery_beat.models import PeriodicTask
from freezegun import freeze_time

from console.tests.page_support import parse
from core.tests.factories import CrontabScheduleFactory, PeriodicTaskFactory
from costwatch.models import CostCheckRun, DailyCost
from costwatch.tests.factories import AlertFactory, BudgetFactory, CostCheckRunFactory, DailyCostFactory
from metering.models import AggregationRun, HourlyAggregate, Meter, UsageEvent
from metering.tests.factories import (
    AggregationRunFactory,
    HourlyAggregateFactory,
    PriceFactory,
    UsageEventFactory,
)
from stripe_sync.models import UsageReport, WebhookEvent
from stripe_sync.tests.factories import (
    CircuitBreakerFactory,
    ReconciliationRunFactory,
    UsageReportFactory,
    WebhookEventFactory,
)
from tenants.models import Tenant
from tenants.tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 12, 30, tzinfo=UTC)
INDEX = "/admin/"


def elements(html: str, testid: str) -> list[dict]:
    """Every element with this data-testid: its tag, attributes and text (nested elements' included)."""
    return [{"tag": found.tag, "attrs": found.attrs, "text": found.text} for found in parse(html).all(testid)]


def text_of(html: str, testid: str) -> str:
    found = elements(html, testid)
    assert len(found) == 1, f"{len(found)} elements with data-testid={testid}"
    return found[0]["text"]


def page(client) -> str:
    response = client.get(INDEX)
    assert response.status_code == 200
    return response.content.decode()


@pytest.fixture
def no_periodic_tasks(db):
    # The schedules that data migrations create are not part of these tests' seeded rows.
    PeriodicTask.objects.all().delete()


def event(tenant, meter, n: int, *, received_at: datetime) -> UsageEvent:
    return UsageEventFactory(
        tenant=tenant,
        meter=meter,
        event_id=f"{meter.code}-{received_at:%Y%m%d%H%M}-{n}",
        timestamp=received_at,
        received_at=received_at,
    )


def aggregate(tenant, meter, hour: datetime, *, events: int, value: str | None = None) -> HourlyAggregate:
    return HourlyAggregateFactory(
        tenant=tenant,
        meter=meter,
        hour=hour,
        event_count=events,
        value=Decimal(value if value is not None else events),
    )


def report(tenant, meter, n: int, *, status: str, created_at: datetime, error: str = "") -> UsageReport:
    row = UsageReportFactory(
        tenant=tenant,
        meter=meter,
        hour=datetime(2026, 11, 19, n % 24, tzinfo=UTC),
        revision=1,
        identifier=f"report-{tenant.pk}-{meter.pk}-{n}",
        quantity=Decimal(5),
        value=5,
        customer_id="cus_test",
        event_name=meter.code,
        timestamp=datetime(2026, 11, 19, n % 24, tzinfo=UTC),
        status=status,
        error_code="invalid_request_error" if error else "",
        error_message=error,
    )
    UsageReport.objects.filter(pk=row.pk).update(created_at=created_at)  # auto_now_add ignores a value
    return row


def webhook(n: int, *, status: str, received_at: datetime, error: str = "") -> WebhookEvent:
    row = WebhookEventFactory(
        stripe_id=f"evt_{n}", type="invoice.paid", payload={"id": f"evt_{n}"}, status=status, error=error
    )
    WebhookEvent.objects.filter(pk=row.pk).update(received_at=received_at)
    return row


def daily_cost(day: date, tag: str, amount: str, service: str = "Amazon EC2") -> DailyCost:
    return DailyCostFactory(
        metric="UnblendedCost",
        day=day,
        service=service,
        tag_value=tag,
        amount=Decimal(amount),
        currency="USD",
    )


def succeeded_runs(*, aggregation_at: datetime, cost_check_at: datetime) -> None:
    AggregationRunFactory(
        started_at=aggregation_at - timedelta(seconds=12),
        finished_at=aggregation_at,
        status=AggregationRun.Status.SUCCEEDED,
        trigger="beat",
    )
    CostCheckRunFactory(
        trigger="beat",
        checked_date=cost_check_at.date() - timedelta(days=1),
        started_at=cost_check_at - timedelta(seconds=30),
        finished_at=cost_check_at,
        status=CostCheckRun.Status.SUCCEEDED,
    )


# --- Usage ----------------------------------------------------------------------------------------


@freeze_time(NOW)
def test_it_counts_events_per_meter_for_the_last_hour_day_and_30_days(admin_client, api_calls, storage):
    tenant = TenantFactory()
    for n in range(2):
        event(tenant, api_calls, n, received_at=NOW - timedelta(minutes=10))
    for n in range(3):
        event(tenant, api_calls, n, received_at=NOW - timedelta(hours=5))
    event(tenant, api_calls, 0, received_at=NOW - timedelta(days=3))  # older than a day
    event(tenant, storage, 0, received_at=NOW - timedelta(minutes=59))
    aggregate(tenant, api_calls, datetime(2026, 11, 1, 3, tzinfo=UTC), events=400)
    aggregate(tenant, api_calls, datetime(2026, 10, 25, 7, tzinfo=UTC), events=20)
    aggregate(tenant, api_calls, datetime(2026, 10, 21, 23, tzinfo=UTC), events=9000)  # before the 30 days
    aggregate(tenant, storage, datetime(2026, 11, 20, 11, tzinfo=UTC), events=7, value="3.5")

    html = page(admin_client)

    rows = {row["attrs"]["data-meter"]: row["text"] for row in elements(html, "usage-meter")}
    assert rows == {"api_calls": "api_calls 2 5 420", "storage_gb": "storage_gb 1 1 7"}
    assert text_of(html, "usage-total") == "All meters 3 6 427"
    assert "since 2026-10-22 00:00 UTC" in html


@freeze_time(NOW)
def test_it_ranks_tenants_by_events_and_by_estimated_revenue_this_month(admin_client, api_calls, storage):
    acme = TenantFactory(name="Acme", slug="acme")
    beta = TenantFactory(name="Beta", slug="beta")
    free = TenantFactory(name="Freebie", slug="freebie", plan=Tenant.Plan.FREE)
    PriceFactory(meter=api_calls, plan="metered", unit_amount=Decimal("0.5"))  # half a cent a call
    PriceFactory(meter=storage, plan="metered", unit_amount=Decimal("10"))  # 10 cents a GB
    aggregate(acme, api_calls, datetime(2026, 11, 2, tzinfo=UTC), events=1000)  # 5.00
    aggregate(beta, api_calls, datetime(2026, 11, 3, tzinfo=UTC), events=3000)  # 15.00
    aggregate(beta, storage, datetime(2026, 11, 3, tzinfo=UTC), events=2, value="250")  # 25.00
    aggregate(acme, storage, datetime(2026, 10, 31, 23, tzinfo=UTC), events=9999, value="9999")  # October
    aggregate(free, api_calls, datetime(2026, 11, 4, tzinfo=UTC), events=50)

    html = page(admin_client)

    assert [row["text"] for row in elements(html, "top-usage-row")] == [
        "Beta 3002",
        "Acme 1000",
        "Freebie 50",
    ]
    revenue = [row["text"] for row in elements(html, "top-revenue-row")]
    # Freebie's plan has no price: it has no estimate at all.
    assert revenue == ["Beta 40.00 USD", "Acme 5.00 USD"]


@freeze_time(NOW)
def test_the_chart_has_one_bar_per_day_with_its_value_in_the_title(admin_client, api_calls, storage):
    tenant = TenantFactory()
    aggregate(tenant, api_calls, datetime(2026, 11, 18, 0, tzinfo=UTC), events=30)
    aggregate(tenant, api_calls, datetime(2026, 11, 18, 23, tzinfo=UTC), events=12)
    aggregate(tenant, storage, datetime(2026, 11, 18, 5, tzinfo=UTC), events=8)
    aggregate(tenant, api_calls, datetime(2026, 10, 22, 0, tzinfo=UTC), events=5)  # the first day
    aggregate(tenant, api_calls, datetime(2026, 10, 21, 23, tzinfo=UTC), events=777)  # outside

    html = page(admin_client)

    bars = elements(html, "usage-bar")
    assert len(bars) == 30
    days = [bar["attrs"]["data-day"] for bar in bars]
    assert days[0] == "2026-10-22"
    assert days[-1] == "2026-11-20"
    by_day = {bar["attrs"]["data-day"]: bar for bar in bars}
    assert by_day["2026-11-18"]["text"] == "2026-11-18: 50 events"
    assert by_day["2026-11-18"]["attrs"]["data-value"] == "50"
    assert by_day["2026-10-22"]["text"] == "2026-10-22: 5 events"
    assert by_day["2026-11-19"]["text"] == "2026-11-19: 0 events"
    # The y axis goes 0, 10, ... 50: the tallest day fills the 160-pixel plot; an empty day has no height.
    assert by_day["2026-11-18"]["attrs"]["height"] == "160"
    assert by_day["2026-10-22"]["attrs"]["height"] == "16"
    assert int(by_day["2026-11-18"]["attrs"]["height"]) > int(by_day["2026-10-22"]["attrs"]["height"]) > 0
    assert by_day["2026-11-19"]["attrs"]["height"] == "0"
    chart = elements(html, "usage-chart")[0]
    assert chart["text"].startswith("Events per day (UTC), last 30 days: 55 in all")
    assert "Day (UTC)" in chart["text"]


# --- Billing health -------------------------------------------------------------------------------


@freeze_time(NOW)
def test_it_shows_the_outbox_the_breaker_reconciliation_and_webhooks(admin_client, api_calls):
    tenant = TenantFactory(name="Acme")
    report(tenant, api_calls, 1, status="pending", created_at=NOW - timedelta(hours=3, minutes=5))
    report(tenant, api_calls, 2, status="pending", created_at=NOW - timedelta(minutes=5))
    report(tenant, api_calls, 3, status="failed", created_at=NOW, error="No such customer: 'cus_gone'")
    report(tenant, api_calls, 4, status="failed", created_at=NOW, error="a later failure")
    report(tenant, api_calls, 5, status="sent", created_at=NOW)
    CircuitBreakerFactory(
        name="stripe", failures=5, open_until=NOW + timedelta(minutes=4), last_error="503 from Stripe"
    )
    ReconciliationRunFactory(
        started_at=NOW - timedelta(hours=9),
        finished_at=NOW - timedelta(hours=9) + timedelta(seconds=40),
        trigger="beat",
        status="succeeded",
        window_start=NOW - timedelta(days=35),
        window_end=NOW,
        hours_checked=840,
        differences=3,
        resent=2,
    )
    ReconciliationRunFactory(
        started_at=NOW - timedelta(days=2),
        trigger="beat",
        status="succeeded",
        window_start=NOW - timedelta(days=37),
        window_end=NOW - timedelta(days=2),
        differences=99,
    )
    webhook(1, status="processed", received_at=NOW - timedelta(hours=1))
    webhook(2, status="failed", received_at=NOW - timedelta(hours=2), error="KeyError: 'customer'")
    webhook(3, status="received", received_at=NOW - timedelta(minutes=1))
    webhook(4, status="received", received_at=NOW - timedelta(days=2))  # waiting, not in the 24 h

    html = page(admin_client)

    assert text_of(html, "reports-pending") == "2"
    assert text_of(html, "reports-failed") == "2"
    assert text_of(html, "reports-oldest-pending") == "3 h 05 min old (since 2026-11-20 09:25 UTC)"
    first_error = text_of(html, "reports-first-error")
    assert "No such customer: 'cus_gone'" in first_error
    assert "a later failure" not in html
    assert text_of(html, "circuit-breaker").startswith("Open until 2026-11-20 12:34:00 UTC after 5 failures")
    warnings = [item["text"] for item in elements(html, "dashboard-warning")]
    assert warnings[0] == (
        "The circuit breaker around Stripe is open until 2026-11-20 12:34:00 UTC: "
        "usage reports wait until it closes."
    )
    assert "2 usage report(s) to Stripe failed and need an operator." in warnings
    assert text_of(html, "reconciliation-differences") == "3 (840 hours checked, 2 re-sent)"
    assert "2026-11-20 03:30 UTC" in text_of(html, "last-reconciliation")
    assert text_of(html, "webhooks-received") == "3"
    assert text_of(html, "webhooks-failed") == "1"
    assert text_of(html, "webhooks-waiting") == "2"
    assert text_of(html, "webhooks-oldest").startswith(
        "invoice.paid evt_4 (received), received 2026-11-18 12:30 UTC"
    )
    # Each figure links to the filtered changelist where an operator acts.
    assert f"{reverse('admin:stripe_sync_usagereport_changelist')}?status__exact=failed" in html
    assert f"{reverse('admin:stripe_sync_webhookevent_changelist')}?status__exact=failed" in html


@freeze_time(NOW)
def test_a_closed_breaker_is_no_warning(admin_client):
    CircuitBreakerFactory(name="stripe", failures=0, open_until=NOW - timedelta(minutes=1))

    html = page(admin_client)

    assert text_of(html, "circuit-breaker") == "Closed"
    assert "circuit breaker around Stripe is open" not in html


@freeze_time(NOW)
def test_it_counts_metered_tenants_waiting_for_onboarding_and_links_to_them(admin_client):
    from django.utils import timezone

    from stripe_sync.tests.factories import CustomerFactory, TenantSubscriptionFactory

    assert text_of(page(admin_client), "onboarding-waiting") == "0"

    TenantFactory(slug="no-customer", plan=Tenant.Plan.METERED)
    TenantFactory(slug="no-subscription", plan=Tenant.Plan.METERED, stripe_customer=CustomerFactory())
    billed = TenantFactory(slug="billed", plan=Tenant.Plan.METERED, stripe_customer=CustomerFactory())
    TenantSubscriptionFactory(tenant=billed)
    canceled = TenantFactory(slug="canceled", plan=Tenant.Plan.METERED, stripe_customer=CustomerFactory())
    TenantSubscriptionFactory(tenant=canceled, canceled_at=timezone.now())
    TenantFactory(slug="free", plan=Tenant.Plan.FREE)
    TenantFactory(slug="suspended", plan=Tenant.Plan.METERED, status=Tenant.Status.SUSPENDED)

    html = page(admin_client)

    assert text_of(html, "onboarding-waiting").startswith("3 (no Stripe customer or no subscription")
    [link] = parse(html).one("onboarding-waiting").all(tag="a")
    response = admin_client.get(link.attr("href"))
    assert response.status_code == 200
    listed = {tenant.slug for tenant in response.context["cl"].result_list}
    assert listed == {"no-customer", "no-subscription", "canceled"}


# --- Costs ----------------------------------------------------------------------------------------


@freeze_time(NOW)
def test_it_shows_costs_against_budgets_alerts_and_margin(admin_client, costwatch_settings, api_calls):
    acme = TenantFactory(name="Acme", slug="acme")
    TenantFactory(name="Beta", slug="beta")
    TenantFactory(name="Idle", slug="idle")  # no cost, no revenue: not in the margin lists
    PriceFactory(meter=api_calls, plan="metered", unit_amount=Decimal("1"))
    aggregate(acme, api_calls, datetime(2026, 11, 2, tzinfo=UTC), events=12000)  # 120.00 USD estimated
    daily_cost(date(2026, 11, 1), "acme", "40.25")
    daily_cost(date(2026, 11, 19), "acme", "9.75")
    daily_cost(date(2026, 11, 19), "beta", "30.10", service="Amazon S3")
    daily_cost(date(2026, 11, 19), "", "19.90")  # unattributed
    daily_cost(date(2026, 10, 31), "acme", "500")  # last month
    account = BudgetFactory(name="Account", amount=Decimal("100.00"))
    BudgetFactory(name="S3", scope="service", service="Amazon S3", amount=Decimal("20.00"))
    BudgetFactory(name="Retired", active=False)
    AlertFactory(
        budget=account,
        kind="actual",
        month=date(2026, 11, 1),
        threshold=Decimal("80"),
        actual=Decimal("90"),
        subject="Account over 80%",
        message="...",
        status="sent",
        sent_at=NOW - timedelta(days=1),
    )
    AlertFactory(
        budget=account,
        kind="actual",
        month=date(2026, 10, 1),
        threshold=Decimal("50"),
        actual=Decimal("60"),
        subject="October",
        message="...",
        status="sent",
        sent_at=datetime(2026, 10, 20, tzinfo=UTC),
    )

    html = page(admin_client)

    assert text_of(html, "costs-month-to-date") == "100.00 USD"
    assert text_of(html, "costs-unattributed").startswith("19.90 USD (no tenant tag)")
    assert text_of(html, "alerts-sent") == "1"
    budgets = {row["attrs"]["data-budget"]: row["text"] for row in elements(html, "budget-row")}
    assert set(budgets) == {"Account", "S3"}
    # 100.00 spent through the 19th: linear forecast 100 / 19 x 30 = 157.89.
    assert budgets["Account"] == (
        "Account whole account 100.00 USD 100.0% 157.89 USD 157.9%, linear, not checked yet 100.00 USD"
    )
    assert budgets["S3"].startswith("S3 service Amazon S3 30.10 USD 150.5% 47.53 USD")
    top = [row["text"] for row in elements(html, "margin-top-row")]
    bottom = [row["text"] for row in elements(html, "margin-bottom-row")]
    assert top == ["Acme 120.00 USD 50.00 USD 70.00 USD", "Beta 0.00 USD 30.10 USD -30.10 USD"]
    # Two tenants fit in one table: no "lowest margin" table listing them again.
    assert bottom == []


@freeze_time(NOW)
def test_a_bad_costwatch_setting_is_shown_not_raised(admin_client, settings):
    settings.COSTWATCH_CURRENCY = "dollars"

    html = page(admin_client)

    assert "COSTWATCH_CURRENCY must be a 3-letter code" in text_of(html, "costs-config-error")


# --- Jobs -----------------------------------------------------------------------------------------


@pytest.fixture
def schedules(no_periodic_tasks):
    hourly = CrontabScheduleFactory(minute="2", hour="*", timezone="UTC")
    daily = CrontabScheduleFactory(minute="0", hour="6", timezone="UTC")
    return {
        "aggregate": PeriodicTaskFactory(
            name="Aggregate usage (hourly)",
            task="metering.aggregate_usage",
            crontab=hourly,
            last_run_at=NOW - timedelta(minutes=28),
        ),
        "costs": PeriodicTaskFactory(
            name="Check AWS costs (daily)", task="costwatch.check_costs", crontab=daily
        ),
    }


def test_it_lists_periodic_tasks_with_their_last_platform_run(admin_client, schedules):
    with freeze_time(NOW):
        succeeded_runs(
            aggregation_at=NOW - timedelta(minutes=28), cost_check_at=NOW - timedelta(hours=6, minutes=30)
        )
        html = page(admin_client)

    jobs = {row["attrs"]["data-task"]: row["text"] for row in elements(html, "job-row")}
    assert jobs["metering.aggregate_usage"] == (
        "Aggregate usage (hourly) At 2 minutes past the hour UTC 2026-11-20 12:02 UTC "
        "2026-11-20 12:01 UTC, succeeded, 12.0 s"
    )
    assert jobs["costwatch.check_costs"].endswith("never 2026-11-20 05:59 UTC, succeeded, 30.0 s")
    assert text_of(html, "aggregation-last-success") == "2026-11-20 12:02 UTC"
    assert not elements(html, "dashboard-warning")


def test_a_failed_late_aggregation_is_one_warning_with_its_last_success(admin_client, schedules):
    with freeze_time(NOW):
        succeeded_runs(aggregation_at=NOW, cost_check_at=NOW)
    AggregationRunFactory(
        started_at=NOW + timedelta(hours=1),
        status=AggregationRun.Status.FAILED,
        trigger="beat",
        error="boom\ntrace",
    )

    with freeze_time(NOW + timedelta(hours=1, minutes=59)):
        html = page(admin_client)
        assert not any("aggregation last succeeded" in w["text"] for w in elements(html, "dashboard-warning"))

    with freeze_time(NOW + timedelta(hours=2, minutes=30)):
        warnings = [item["text"] for item in elements(page(admin_client), "dashboard-warning")]

    # One warning for the one failing job: its failure, with how long ago it last succeeded.
    assert [warning for warning in warnings if "aggregation" in warning] == [
        "The last usage aggregation run (2026-11-20 13:30 UTC) failed: boom "
        "(last success 2.5 hours ago (2026-11-20 12:30 UTC))."
    ]
    assert not any("cost check" in warning for warning in warnings)


def test_it_warns_when_the_cost_check_is_more_than_26_hours_old(admin_client, schedules):
    with freeze_time(NOW):
        succeeded_runs(aggregation_at=NOW + timedelta(hours=27), cost_check_at=NOW)

    with freeze_time(NOW + timedelta(hours=27)):
        warnings = [item["text"] for item in elements(page(admin_client), "dashboard-warning")]

    assert warnings == [
        "The AWS cost check last completed 27.0 hours ago (2026-11-20 12:30 UTC); it should run every day."
    ]


@freeze_time(NOW)
def test_it_warns_about_a_disabled_periodic_task(admin_client, schedules):
    succeeded_runs(aggregation_at=NOW, cost_check_at=NOW)
    PeriodicTask.objects.filter(pk=schedules["costs"].pk).update(enabled=False)

    html = page(admin_client)

    assert [item["text"] for item in elements(html, "dashboard-warning")] == [
        "Periodic task “Check AWS costs (daily)” is disabled: it will not run until enabled."
    ]
    jobs = {row["attrs"]["data-task"]: row["text"] for row in elements(html, "job-row")}
    assert "(disabled)" in jobs["costwatch.check_costs"]
    assert "(disabled)" not in jobs["metering.aggregate_usage"]


# --- The page as a whole --------------------------------------------------------------------------


@freeze_time(NOW)
def test_an_empty_database_renders_zeros_and_never(admin_client, no_periodic_tasks, costwatch_settings):
    html = page(admin_client)

    for testid in ("panel-usage", "panel-billing", "panel-costs", "panel-jobs"):
        assert len(elements(html, testid)) == 1
    assert text_of(html, "usage-total") == "All meters 0 0 0"
    assert len(elements(html, "usage-bar")) == 30
    assert {bar["attrs"]["data-value"] for bar in elements(html, "usage-bar")} == {"0"}
    assert text_of(html, "reports-pending") == "0"
    assert text_of(html, "reports-oldest-pending") == "none"
    assert text_of(html, "circuit-breaker") == "Closed"
    assert text_of(html, "last-reconciliation").startswith("Last run never Differences 0")
    assert text_of(html, "webhooks-oldest") == "none"
    assert text_of(html, "costs-month-to-date") == "0.00 USD"
    assert text_of(html, "alerts-sent") == "0"
    assert text_of(html, "aggregation-last-success") == "never"
    assert text_of(html, "cost-check-last-success") == "never"
    assert [item["text"] for item in elements(html, "dashboard-warning")] == [
        "Usage aggregation has never completed successfully.",
        "The AWS cost check has never completed.",
    ]
    # Django's app list is still there, under the dashboard.
    assert html.index('data-testid="operator-dashboard"') < html.index('id="content-main"')
    assert reverse("admin:metering_meter_changelist") in html


def test_only_staff_see_the_dashboard(client, django_user_model):
    user = django_user_model.objects.create_user(username="plain", password="pw-123456")
    client.force_login(user)

    response = client.get(INDEX)

    assert response.status_code == 302
    assert "operator-dashboard" not in response.content.decode()


def _seed_tenants(count: int, start: int, meters: list[Meter]) -> None:
    """Tenants with everything the dashboard reads per tenant: events, aggregates, reports, costs, hooks."""
    for n in range(start, start + count):
        tenant = TenantFactory(slug=f"load-{n}", name=f"Load {n}")
        for meter in meters:
            event(tenant, meter, n, received_at=NOW - timedelta(minutes=n % 50 + 1))
            aggregate(tenant, meter, datetime(2026, 11, 1 + n % 19, n % 24, tzinfo=UTC), events=n + 1)
            report(tenant, meter, n, status="failed" if n % 3 else "pending", created_at=NOW, error="refused")
        daily_cost(date(2026, 11, 1 + n % 19), tenant.slug, f"{n}.50")
        webhook(n, status="failed" if n % 2 else "received", received_at=NOW - timedelta(hours=n % 30))
        BudgetFactory(name=f"Tenant budget {n}", scope="tag", tag_value=tenant.slug, tenant=tenant)


@freeze_time(NOW)
def test_the_query_count_does_not_grow_with_tenants(
    admin_client, api_calls, storage, costwatch_settings, django_assert_max_num_queries
):
    PriceFactory(meter=api_calls, plan="metered", unit_amount=Decimal("0.5"))
    PriceFactory(
        meter=storage,
        plan="metered",
        model="graduated",
        tiers=[{"up_to": 10, "unit_amount": "2"}, {"up_to": None, "unit_amount": "1", "flat_amount": "5"}],
    )
    succeeded_runs(aggregation_at=NOW, cost_check_at=NOW)
    _seed_tenants(3, 0, [api_calls, storage])
    admin_client.get(INDEX)  # the session and the content types are cached after a first request

    with CaptureQueriesContext(connection) as three:
        page(admin_client)
    _seed_tenants(27, 3, [api_calls, storage])
    with django_assert_max_num_queries(40), CaptureQueriesContext(connection) as thirty:
        html = page(admin_client)

    assert len(thirty) == len(three), "\n".join(q["sql"][:200] for q in thirty.captured_queries)
    assert len(elements(html, "top-usage-row")) == 5
    assert len(elements(html, "margin-top-row")) == 5
    assert len(elements(html, "budget-row")) == 30
    assert re.search(r"Load \d+", text_of(html, "reports-first-error"))


def dashboard_links(html: str) -> list[str]:
    """The href of every link inside the operator dashboard."""
    return [link.attr("href") for link in parse(html).one("operator-dashboard").all(tag="a")]


@freeze_time(NOW)
def test_every_link_of_the_dashboard_opens_an_admin_page(
    admin_client, api_calls, costwatch_settings, schedules
):
    tenant = TenantFactory(slug="acme")
    aggregate(tenant, api_calls, datetime(2026, 11, 2, tzinfo=UTC), events=10)
    report(tenant, api_calls, 1, status="failed", created_at=NOW, error="refused")
    webhook(1, status="received", received_at=NOW)
    daily_cost(date(2026, 11, 2), "acme", "3")
    BudgetFactory(name="Account")
    succeeded_runs(aggregation_at=NOW, cost_check_at=NOW)
    ReconciliationRunFactory(
        started_at=NOW, trigger="beat", status="succeeded", window_start=NOW, window_end=NOW
    )
    hrefs = dashboard_links(page(admin_client))

    assert len(hrefs) > 25
    for href in sorted(set(hrefs)):
        response = admin_client.get(href)
        # A filter the changelist does not accept redirects to "?e=1"; a wrong id answers 302 or 404.
        assert response.status_code == 200, href
    waiting = reverse("admin:stripe_sync_webhookevent_changelist") + "?status__in=received,processing"
    assert waiting in hrefs
