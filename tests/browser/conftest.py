"""A real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright's sync API) against the
live server, and the operator console's data: `seed_demo` plus a few rows for every dashboard panel.

The browser is started once for this package and each test gets a new context (its own cookies), so
tests stay independent and cheap. Without the system browser the tests skip, except in CI (CI=true),
where a missing browser is a failure: scripts/browser.sh installs it for `make test`.
"""

import importlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

CHROMIUM = Path(os.environ.get("BROWSER_TEST_CHROMIUM", "/usr/bin/chromium"))
# Without the background-networking flags Chromium keeps dialling Google's hosts, which this closed
# network refuses; no sandbox because CI runs as root.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "browser-test-password"  # a test value
TIMEOUT_MS = 15_000


def _unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; in CI the browser tests must run (scripts/browser.sh installs chromium)")
    pytest.skip(f"{reason} (scripts/browser.sh or `apt-get install chromium` installs it)")


@pytest.fixture(scope="package")
def browser():
    """One Chromium for every test in this package, closed when the package is done.

    Playwright's sync API keeps an asyncio loop marked as running in this thread while it is started,
    which Django's ORM takes for an async context and refuses (SynchronousOnlyOperation). The tests'
    ORM calls are plain synchronous code, so Django's check is turned off for exactly the browser's
    lifetime (this package), not for the rest of the suite.
    """
    if not CHROMIUM.exists():
        _unavailable(f"no system Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright's Python package is not installed (requirements/dev.txt)")

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


class Snapshots:
    """Full-page screenshots named after the test and the page: test-output/screenshots/<test>--<page>.png."""

    def __init__(self, test_name: str):
        self.test_name = test_name
        self.saved: list[Path] = []

    def __call__(self, page, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{self.test_name}--{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.saved.append(path)
        return path

    def element(self, locator, name: str) -> Path:
        """One element alone (e.g. a chart), at its own size, for a closer look."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{self.test_name}--{name}.png"
        locator.screenshot(path=str(path))
        self.saved.append(path)
        return path


@pytest.fixture
def screenshot(request):
    return Snapshots(request.node.name)


@dataclass
class PageProblems:
    errors: list[str]  # uncaught JavaScript errors
    failed: list[str]  # same-origin responses of 400 and over, and requests that failed


@pytest.fixture
def page(browser, live_server):
    """A fresh browser context (no cookies) and page on the live server; records the page's problems."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    problems = PageProblems(errors=[], failed=[])
    page.on("pageerror", lambda error: problems.errors.append(str(error)))
    page.on(
        "response",
        lambda response: (
            problems.failed.append(f"{response.status} {response.url}")
            if response.status >= 400
            and response.url.startswith(live_server.url)
            and not response.url.endswith("/favicon.ico")
            else None
        ),
    )
    page.on("requestfailed", lambda req: problems.failed.append(f"failed {req.url}: {req.failure}"))
    page.problems = problems
    yield page
    context.close()


@pytest.fixture
def login(page):
    """Log in through the admin login form, as an operator would; lands on `next_path`."""

    def login(*, next_path: str = "/admin/", username: str = ADMIN_USER, password: str = ADMIN_PASSWORD):
        page.goto(f"/admin/login/?next={next_path}")
        page.fill("#id_username", username)
        page.fill("#id_password", password)
        page.click("input[type=submit]")
        page.wait_for_url(f"**{next_path}")

    return login


# --- Data -----------------------------------------------------------------------------------------


def _ensure_periodic_tasks() -> None:
    """The Beat schedules that data migrations create; a transactional test before this one may have
    flushed them from a reused test database, and each migration's function is idempotent."""
    from django.apps import apps
    from django.db.migrations.loader import MigrationLoader

    migrations = MigrationLoader(None, ignore_no_migrations=True).disk_migrations
    for key in sorted(migrations):
        module = importlib.import_module(type(migrations[key]).__module__)
        if callable(getattr(module, "create_schedule", None)):
            module.create_schedule(apps, None)


def _billing_rows(now: datetime) -> None:
    from metering.models import Meter
    from stripe_sync.models import ReconciliationRun, UsageReport, WebhookEvent
    from stripe_sync.tests.factories import (
        CircuitBreakerFactory,
        ReconciliationRunFactory,
        UsageReportFactory,
        WebhookEventFactory,
    )
    from tenants.models import Tenant

    acme, globex = Tenant.objects.get(slug="acme"), Tenant.objects.get(slug="globex")
    api_calls = Meter.objects.get(code="api_calls")
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    for n, (tenant, status, error) in enumerate(
        [
            (acme, UsageReport.Status.PENDING, ""),
            (globex, UsageReport.Status.FAILED, "No such customer: 'cus_browser_gone'"),
            (acme, UsageReport.Status.SENT, ""),
        ]
    ):
        UsageReportFactory(
            tenant=tenant,
            meter=api_calls,
            hour=hour - timedelta(hours=n),
            revision=1,
            identifier=f"browser-report-{n}",
            quantity=Decimal(12),
            value=12,
            customer_id=f"cus_browser_{tenant.slug}",
            event_name=api_calls.code,
            timestamp=hour - timedelta(hours=n),
            status=status,
            error_code="resource_missing" if error else "",
            error_message=error,
        )
    CircuitBreakerFactory(name="stripe", failures=1, open_until=now - timedelta(minutes=30))
    ReconciliationRunFactory(
        started_at=now - timedelta(hours=1),
        finished_at=now - timedelta(hours=1) + timedelta(seconds=20),
        trigger="test",
        status=ReconciliationRun.Status.SUCCEEDED,
        window_start=now - timedelta(days=35),
        window_end=now - timedelta(hours=1),
        hours_checked=504,
        differences=2,
        resent=2,
    )
    for n, status, error in [
        (1, WebhookEvent.Status.PROCESSED, ""),
        (2, WebhookEvent.Status.FAILED, "KeyError: 'customer'"),
        (3, WebhookEvent.Status.RECEIVED, ""),
    ]:
        WebhookEventFactory(
            stripe_id=f"evt_browser_{n}",
            type="invoice.paid",
            payload={"id": f"evt_browser_{n}"},
            status=status,
            error=error,
        )


def _cost_rows(now: datetime) -> None:
    from costwatch.models import Alert, CostCheckRun
    from costwatch.tests.factories import AlertFactory, BudgetFactory, CostCheckRunFactory, DailyCostFactory

    today = now.astimezone(UTC).date()
    first = today.replace(day=1)
    days = sorted({first, today - timedelta(days=1) if today > first else today, today})
    for day in days:
        for tag, amount in [("acme", "31.40"), ("globex", "12.05"), ("", "4.55")]:
            DailyCostFactory(
                metric="UnblendedCost",
                day=day,
                service="Amazon EC2",
                tag_value=tag,
                amount=Decimal(amount),
                currency="USD",
            )
    budget = BudgetFactory(name="Whole account", amount=Decimal("500.00"))
    run = CostCheckRunFactory(
        trigger="test",
        checked_date=today - timedelta(days=1),
        started_at=now - timedelta(hours=3),
        finished_at=now - timedelta(hours=3) + timedelta(seconds=30),
        status=CostCheckRun.Status.SUCCEEDED,
    )
    AlertFactory(
        budget=budget,
        kind=Alert.Kind.ACTUAL,
        month=first,
        threshold=Decimal("50"),
        actual=Decimal("260"),
        run=run,
        subject="Whole account over 50%",
        message="Month-to-date cost passed 50% of the budget.",
        status=Alert.Status.SENT,
        sent_at=now - timedelta(hours=3),
    )


@dataclass
class ConsoleData:
    now: datetime  # when the data was seeded
    username: str


@pytest.fixture
def console_data(settings, monkeypatch, tmp_path):
    """The demo's data from the project's own `seed_demo` (an admin login, three tenants with keys,
    three meters with prices, a week of usage aggregated), then a late batch of events aggregated by a
    run of its own, and rows for the billing, costs and jobs panels."""
    from core.schedules import periodic_tasks_sync
    from metering.aggregation import usage_aggregate
    from metering.ingest import usage_events_record, usage_events_validate
    from tenants.models import Tenant

    settings.BASE_DIR = tmp_path  # seed_demo keeps nothing under the checkout's var/
    settings.DEBUG = True  # seed_demo refuses to run otherwise (it creates a superuser)
    monkeypatch.setenv("DEMO_ADMIN_USER", ADMIN_USER)
    monkeypatch.setenv("DEMO_ADMIN_PASSWORD", ADMIN_PASSWORD)
    # The schedules migrate declares (core/schedules.py): a transactional test before this one may
    # have flushed them from the reused test database.
    periodic_tasks_sync()
    out = StringIO()
    call_command("seed_demo", stdout=out)
    settings.DEBUG = False
    assert f"admin login: {ADMIN_USER} / {ADMIN_PASSWORD}" in out.getvalue()

    now = timezone.now()
    # Late events for three days ago: the aggregation run below picks them up.
    late = (now - timedelta(days=3)).replace(minute=15, second=0, microsecond=0)
    events = [
        {"id": f"browser-late-{n}", "meter": "api_calls", "timestamp": late.isoformat()} for n in range(40)
    ]
    valid = usage_events_validate(payload={"events": events}, now=now)
    usage_events_record(tenant=Tenant.objects.get(slug="globex"), events=valid, now=now)
    run = usage_aggregate(trigger="test")
    assert run.hours_aggregated >= 1

    _ensure_periodic_tasks()
    _billing_rows(now)
    _cost_rows(now)
    return ConsoleData(now=now, username=ADMIN_USER)
