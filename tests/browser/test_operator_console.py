"""The operator console end to end in a real headless Chromium: log in through the admin form, read the
dashboard's figures and chart against the database, open a tenant, suspend one with the admin action.

Each page is saved as a full-page screenshot under test-output/screenshots/ (<test>--<page>.png).
Marked `postgres`: the live server's thread needs a database that other connections see, which the
SQLite pass's in-memory test database is not.
"""

import os
from collections import defaultdict
from datetime import UTC, datetime, time, timedelta

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from core.money import Money
from costwatch.models import Alert, DailyCost
from metering.estimates import tenant_month_estimate, tenant_month_total_minor
from metering.models import AggregationRun, HourlyAggregate, Meter, UsageEvent
from tenants.models import Tenant, TenantAPIKey, TenantChange

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture says why, and fails in CI
    if os.environ.get("CI") == "true":
        raise
    pytest.skip(
        "Playwright's Python package is not installed (requirements/dev.txt)", allow_module_level=True
    )

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

BAR = '[data-testid="usage-bar"]'


def text(locator) -> str:
    return " ".join(locator.inner_text().split())


def _month_start(now: datetime) -> datetime:
    return datetime(now.year, now.month, 1, tzinfo=UTC)


def _no_problems(page) -> None:
    assert page.problems.errors == [], "JavaScript errors on the page"
    assert page.problems.failed == [], "failed requests (pages, static files)"


def test_login_and_the_dashboard_draws_the_seeded_figures(page, login, console_data, screenshot):
    page.goto("/admin/")
    expect(page.locator("#login-form")).to_be_visible()  # the admin asks for a login first
    screenshot(page, "login")
    login()
    expect(page.get_by_test_id("operator-dashboard")).to_be_visible()
    expect(page.locator("#user-tools")).to_contain_text(console_data.username)
    screenshot(page, "dashboard")

    # --- The 30-day chart: one bar per day, each with the day's events in the hourly aggregates.
    screenshot.element(page.locator('[data-testid="usage-chart"]'), "dashboard-usage-chart")
    bars = page.locator(BAR)
    expect(bars).to_have_count(30)
    drawn = bars.evaluate_all(
        """bars => bars.map(bar => ({
            day: bar.dataset.day,
            value: Number(bar.dataset.value),
            height: Number(bar.getAttribute("height")),
            title: bar.querySelector("title").textContent,
            rendered: bar.getBoundingClientRect().height,
            width: bar.getBoundingClientRect().width,
            // The chart scales to its panel through its viewBox.
            scale: bar.ownerSVGElement.getBoundingClientRect().width
                / bar.ownerSVGElement.viewBox.baseVal.width,
        }))"""
    )
    first_day = datetime.fromisoformat(drawn[0]["day"]).date()
    last_day = datetime.fromisoformat(drawn[-1]["day"]).date()
    assert (last_day - first_day).days == 29
    window = (
        datetime.combine(first_day, time.min, tzinfo=UTC),
        datetime.combine(last_day + timedelta(days=1), time.min, tzinfo=UTC),
    )
    expected = defaultdict(int)
    for day, events in (
        HourlyAggregate.objects.filter(hour__gte=window[0], hour__lt=window[1])
        .annotate(day=TruncDate("hour", tzinfo=UTC))
        .values("day")
        .annotate(events=Sum("event_count"))
        .values_list("day", "events")
    ):
        expected[day.isoformat()] = events
    assert {bar["day"]: bar["value"] for bar in drawn} == {bar["day"]: expected[bar["day"]] for bar in drawn}
    assert sum(1 for bar in drawn if bar["value"]) >= 7  # seed_demo's week of usage, and the late events
    for bar in drawn:
        assert bar["title"] == f"{bar['day']}: {bar['value']:,} events"
        # Drawn by the browser at the size the server computed (scaled to the panel): a day with
        # events is visible.
        assert abs(bar["rendered"] - bar["height"] * bar["scale"]) <= 1, bar
        assert bar["width"] > 0
        assert (bar["rendered"] > 0) == (bar["value"] > 0), bar
    by_value = sorted(drawn, key=lambda bar: bar["value"])
    assert [bar["height"] for bar in by_value] == sorted(bar["height"] for bar in by_value)
    assert by_value[-1]["height"] > by_value[0]["height"]
    total = sum(expected[bar["day"]] for bar in drawn)
    expect(page.locator('[data-testid="usage-chart"] > title')).to_have_text(
        f"Events per day (UTC), last 30 days: {total:,} in all"
    )

    # --- Events per meter: the last 24 h from raw events (by event time), 30 days from the aggregates.
    moment = timezone.now()
    last_day_counts = dict(
        UsageEvent.objects.filter(timestamp__gte=moment - timedelta(days=1), timestamp__lte=moment)
        .values("meter__code")
        .annotate(n=Count("id"))
        .values_list("meter__code", "n")
    )
    thirty_days = dict(
        HourlyAggregate.objects.filter(hour__gte=window[0], hour__lt=window[1])
        .values("meter__code")
        .annotate(n=Sum("event_count"))
        .values_list("meter__code", "n")
    )
    codes = sorted(Meter.objects.values_list("code", flat=True))
    assert codes == ["active_users", "api_calls", "storage_gb"]
    for code in codes:
        row = page.locator(f'[data-testid="usage-meter"][data-meter="{code}"]')
        expect(row.get_by_test_id("usage-last-day")).to_have_text(str(last_day_counts[code]))
        expect(row.get_by_test_id("usage-30-days")).to_have_text(str(thirty_days[code]))
    assert sum(thirty_days.values()) == total

    # --- Top tenants this month by events, as the aggregates rank them.
    now = console_data.now
    month = HourlyAggregate.objects.filter(hour__gte=_month_start(now))
    ranking = list(
        month.values("tenant__name")
        .annotate(events=Sum("event_count"))
        .order_by("-events", "tenant__name")
        .values_list("tenant__name", "events")
    )
    rows = [" ".join(cells.split()) for cells in page.get_by_test_id("top-usage-row").all_inner_texts()]
    assert rows == [f"{name} {events}" for name, events in ranking]
    # Estimated revenue this month: the pricing preview of each metered tenant, one figure per tenant.
    revenue = {
        slug: " ".join(row.split())
        for slug, row in zip(
            page.get_by_test_id("top-revenue-row").evaluate_all("rows => rows.map(r => r.dataset.tenant)"),
            page.get_by_test_id("top-revenue-row").all_inner_texts(),
            strict=True,
        )
    }
    assert revenue, "no revenue ranking on the dashboard"
    for slug, row in revenue.items():
        tenant = Tenant.objects.get(slug=slug)
        assert row == f"{tenant.name} {month_estimate(tenant, now)}", row

    # --- Billing health: the outbox, the breaker, reconciliation and webhooks seeded for it.
    expect(page.get_by_test_id("reports-pending")).to_have_text("1")
    expect(page.get_by_test_id("reports-failed")).to_have_text("1")
    expect(page.get_by_test_id("reports-first-error")).to_contain_text("No such customer: 'cus_browser_gone'")
    expect(page.get_by_test_id("circuit-breaker")).to_contain_text("Closed")
    assert text(page.get_by_test_id("reconciliation-differences")) == "2 (504 hours checked, 2 re-sent)"
    expect(page.get_by_test_id("webhooks-received")).to_have_text("3")
    expect(page.get_by_test_id("webhooks-failed")).to_have_text("1")
    expect(page.get_by_test_id("webhooks-waiting")).to_have_text("1")
    expect(page.get_by_test_id("webhooks-oldest")).to_contain_text("evt_browser_")
    warnings = [" ".join(w.split()) for w in page.get_by_test_id("dashboard-warning").all_inner_texts()]
    assert "1 usage report(s) to Stripe failed and need an operator." in warnings

    # --- Costs: month to date and unattributed from the daily costs, the budget, the alert, margins.
    costs = DailyCost.objects.filter(day__gte=now.date().replace(day=1))
    month_to_date = costs.aggregate(total=Sum("amount"))["total"]
    unattributed = costs.filter(tag_value="").aggregate(total=Sum("amount"))["total"]
    expect(page.get_by_test_id("costs-month-to-date")).to_have_text(str(Money(month_to_date, "USD")))
    assert text(page.get_by_test_id("costs-unattributed")).startswith(
        f"{Money(unattributed, 'USD')} (no tenant tag)"
    )
    # The seed's own cost check sends alerts too; the panel counts every alert sent this month.
    sent = Alert.objects.filter(status=Alert.Status.SENT, sent_at__gte=_month_start(now)).count()
    assert sent >= 1  # the console data's own alert among them
    expect(page.get_by_test_id("alerts-sent")).to_have_text(str(sent))
    budget = page.locator('[data-testid="budget-row"][data-budget="Whole account"]')
    expect(budget).to_contain_text(f"{Money(month_to_date, 'USD')}")
    expect(budget).to_contain_text("500.00 USD")
    margin_tenants = page.get_by_test_id("margin-top-row").evaluate_all(
        "rows => rows.map(r => r.dataset.tenant)"
    )
    assert {"acme", "globex"} <= set(margin_tenants)
    acme_cost = costs.filter(tag_value="acme").aggregate(total=Sum("amount"))["total"]
    expect(page.locator('[data-testid="margin-top-row"][data-tenant="acme"]')).to_contain_text(
        str(Money(acme_cost, "USD"))
    )

    # --- Jobs: every periodic task, and the last successful aggregation (this test's run).
    expect(page.get_by_test_id("job-row")).to_have_count(PeriodicTask.objects.count())
    assert PeriodicTask.objects.filter(task="metering.aggregate_usage").exists()
    last_run = AggregationRun.objects.filter(status=AggregationRun.Status.SUCCEEDED).latest("finished_at")
    assert last_run.trigger == "test"
    expect(page.get_by_test_id("aggregation-last-success")).to_have_text(
        f"{last_run.finished_at:%Y-%m-%d %H:%M} UTC"
    )
    expect(page.get_by_test_id("cost-check-last-success")).not_to_have_text("never")

    _no_problems(page)


def month_estimate(tenant: Tenant, now: datetime) -> Money:
    """The pricing preview of the tenant's month so far (metering.estimates), in its one currency."""
    ((currency, minor),) = tenant_month_total_minor(
        tenant_month_estimate(tenant=tenant, month=now.date())
    ).items()
    return Money.from_minor(minor, currency)


def _check_tenant_overview_if_present(page, tenant: Tenant, now: datetime) -> bool:
    """The richer tenant page (console/tenant_overview.py), when it is there: its estimate of
    the month must be the pricing preview's. The rest of these tests does not depend on it."""
    overview = page.get_by_test_id("tenant-overview")
    if not overview.count():
        return False
    estimate = month_estimate(tenant, now)
    total = overview.get_by_test_id("estimate-total")
    if total.count():
        expect(total.first).to_have_text(str(estimate))
    else:
        expect(overview).to_contain_text(f"{estimate.rounded:,}")
    return True


def status_shown(page):
    """The tenant's status on its page: the overview's figure when it is there, else the form's field."""
    return page.locator('[data-testid="tenant-status"], .field-status .readonly').first


def test_an_operator_opens_a_tenant_from_the_dashboard(page, login, console_data, screenshot):
    acme = Tenant.objects.get(slug="acme")
    login()
    link = page.locator('[data-testid="top-revenue-row"][data-tenant="acme"] a')
    expect(link).to_have_text(acme.name)
    link.click()
    page.wait_for_url(f"**/admin/tenants/tenant/{acme.pk}/change/")

    expect(page.locator("#id_name")).to_have_value(acme.name)
    expect(page.locator("#id_slug")).to_have_value("acme")
    expect(page.locator("#id_plan")).to_have_value(Tenant.Plan.METERED)
    expect(status_shown(page)).to_have_text("Active")
    key = TenantAPIKey.objects.get(tenant=acme)
    expect(page.get_by_text(key.prefix, exact=True).first).to_be_visible()
    created = TenantChange.objects.get(tenant=acme, field=TenantChange.Field.CREATED)
    assert created.source == "seed_demo"
    expect(page.get_by_text("seed_demo").first).to_be_visible()
    _check_tenant_overview_if_present(page, acme, console_data.now)
    screenshot(page, "tenant")
    _no_problems(page)


def test_an_operator_suspends_a_tenant_with_the_admin_action(page, login, console_data, screenshot):
    globex = Tenant.objects.get(slug="globex")
    login(next_path="/admin/tenants/tenant/")
    row = page.locator("#result_list tbody tr").filter(has=page.locator(f'input[value="{globex.pk}"]'))
    expect(row.locator("td.field-status")).to_have_text("Active")
    screenshot(page, "tenant-list")

    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "suspend")
    page.click('button[name="index"]')
    # Should the action ask for a confirmation first, confirm it as an operator would.
    expect(page.locator('ul.messagelist, [data-testid="confirm-button"]').first).to_be_visible()
    if page.get_by_test_id("confirm-button").count():
        screenshot(page, "suspend-confirm")
        page.get_by_test_id("confirm-button").click()

    expect(page.locator("ul.messagelist")).to_contain_text("Suspended 1 tenant(s).")
    row = page.locator("#result_list tbody tr").filter(has=page.locator(f'input[value="{globex.pk}"]'))
    expect(row.locator("td.field-status")).to_have_text("Suspended")
    other = page.locator("#result_list tbody tr").filter(has_text="Acme Analytics")
    expect(other.locator("td.field-status")).to_have_text("Active")
    screenshot(page, "tenant-list-suspended")

    globex.refresh_from_db()
    assert globex.status == Tenant.Status.SUSPENDED
    change = TenantChange.objects.filter(tenant=globex, field=TenantChange.Field.STATUS).latest("created_at")
    assert (change.old_value, change.new_value, change.source) == ("active", "suspended", "admin")
    assert change.actor.username == console_data.username
    assert LogEntry.objects.filter(object_id=str(globex.pk), action_flag=CHANGE, change_message="Suspended")

    # The tenant's page shows the new status and the history row naming the operator.
    row.locator("th a").click()
    page.wait_for_url(f"**/admin/tenants/tenant/{globex.pk}/change/")
    expect(status_shown(page)).to_have_text("Suspended")
    history = page.locator("tr").filter(has_text="suspended").filter(has_text=console_data.username)
    expect(history.first).to_be_visible()
    screenshot(page, "tenant-suspended")
    _no_problems(page)


def test_a_wrong_password_is_refused(page, login, django_user_model, screenshot):
    django_user_model.objects.create_superuser(username="operator", email="", password="the-right-one")
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "not-the-password")
    page.click("input[type=submit]")
    expect(page.locator(".errornote")).to_contain_text("Please enter the correct username and password")
    expect(page.get_by_test_id("operator-dashboard")).to_have_count(0)
    screenshot(page, "login-refused")
    login(username="operator", password="the-right-one")
    expect(page.get_by_test_id("operator-dashboard")).to_be_visible()
    _no_problems(page)


def test_the_whole_30_day_chart_is_in_view_without_scrolling(page, login, django_user_model):
    django_user_model.objects.create_superuser(username="operator", email="", password="the-right-one")
    login(username="operator", password="the-right-one")
    chart = page.locator(".ops-chart").first
    expect(page.locator(BAR)).to_have_count(30)
    visible_width, full_width = chart.evaluate("box => [box.clientWidth, box.scrollWidth]")
    assert full_width <= visible_width, f"the chart is {full_width} px wide in a {visible_width} px box"
