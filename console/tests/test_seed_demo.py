from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from metering.models import HourlyAggregate, Meter, Price, UsageEvent
from tenants.models import Tenant, TenantAPIKey, TenantChange
from tenants.tests.support import run_command, slug_of_key

pytestmark = pytest.mark.django_db


def _snapshot():
    return (
        sorted(Tenant.objects.values_list("slug", "plan", "status", "monthly_free_allowance")),
        sorted(TenantAPIKey.objects.values_list("tenant__slug", "prefix", "hashed_key")),
        list(get_user_model().objects.values_list("username", "password", "is_superuser")),
        TenantChange.objects.count(),
        sorted(Meter.objects.values_list("code", "aggregation")),
        Price.objects.count(),
        UsageEvent.objects.count(),
        sorted(
            HourlyAggregate.objects.values_list("tenant__slug", "meter__code", "hour", "value", "revision")
        ),
    )


def test_seed_demo_twice_leaves_the_same_rows(monkeypatch, settings, tmp_path):
    settings.BASE_DIR = tmp_path
    settings.DEBUG = True
    monkeypatch.setenv("DEMO_ADMIN_PASSWORD", "demo-password-for-tests")
    first = run_command("seed_demo")
    assert first[0] == "admin login: admin / demo-password-for-tests (created)"
    keys = [line.rsplit(" ", 1)[-1] for line in first if "new API key" in line]
    assert len(keys) == 3
    assert {slug_of_key(key) for key in keys} == {"acme", "globex", "initech"}
    assert any(line.startswith("demo usage: ") for line in first)
    before = _snapshot()
    assert before[-2] > 1000  # a week of events
    assert {code for code, _ in before[-4]} == {"api_calls", "storage_gb", "active_users"}

    second = run_command("seed_demo")
    assert second[0] == "admin login: admin / demo-password-for-tests"
    assert not any("new API key" in line for line in second)
    assert _snapshot() == before


def test_seed_demo_remembers_a_generated_password(monkeypatch, settings, tmp_path):
    settings.BASE_DIR = tmp_path
    settings.DEBUG = True
    monkeypatch.delenv("DEMO_ADMIN_PASSWORD", raising=False)
    first = run_command("seed_demo")[0]
    password = first.split(" / ")[1].removesuffix(" (created)")
    assert get_user_model().objects.get(username="admin").check_password(password)
    assert run_command("seed_demo")[0] == f"admin login: admin / {password}"


def test_seed_demo_refuses_production(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DJANGO_DEBUG=0"):
        call_command("seed_demo", stdout=StringIO())
    assert Tenant.objects.count() == 0


def _demo_rows():
    from console.models import OperatorJob
    from costwatch.models import Alert, Budget, CostCheckRun, DailyCost
    from stripe_sync.models import ReconciliationRun, UsageReport, WebhookEvent

    return {
        model.__name__: model.objects.count()
        for model in (
            OperatorJob,
            Alert,
            Budget,
            CostCheckRun,
            DailyCost,
            ReconciliationRun,
            UsageReport,
            WebhookEvent,
            TenantChange,
        )
    }


def test_seed_demo_against_the_sandbox_fills_every_dashboard_panel(
    local_stripe, monkeypatch, settings, tmp_path
):
    """The demo's seed against the local Stripe server (as make run's sandbox): every panel of the
    dashboard has something to show, and the page labels the sandbox."""
    from django.test import Client

    from console.dashboard import dashboard
    from stripe_sync.models import UsageReport, WebhookEvent

    settings.BASE_DIR = tmp_path
    settings.DEBUG = True
    monkeypatch.setenv("DEMO_ADMIN_PASSWORD", "demo-password-for-tests")
    call_command("sync_schedules", stdout=StringIO())
    lines = run_command("seed_demo")
    assert any(line.startswith("stripe: acme onboarded (customer cus_") for line in lines)
    assert any(line.startswith("stripe: initech paid at Checkout") for line in lines)
    assert any(line.startswith("aws: cost check succeeded") for line in lines)
    assert "stripe: acme granted 25.00 USD of credit (active)" in lines

    # Acme's promotional credit is at Stripe, where its balance shows it.
    from stripe_sync.credits import credit_balances

    acme = Tenant.objects.get(slug="acme")
    assert [(b.available, b.currency) for b in credit_balances(customer_id=acme.stripe_customer_id)] == [
        (2500, "usd")
    ]

    # Initech paid at Checkout: Stripe's webhooks moved it to the metered plan.
    initech = Tenant.objects.get(slug="initech")
    assert initech.plan == Tenant.Plan.METERED
    assert initech.changes.filter(field="plan", new_value="metered").exists()
    assert WebhookEvent.objects.filter(status=WebhookEvent.Status.PROCESSED).exists()
    assert UsageReport.objects.filter(status=UsageReport.Status.SENT).exists()

    board = dashboard()
    usage, billing, costs, jobs = board.usage, board.billing, board.costs, board.jobs
    assert usage.totals.last_30_days > 0
    assert not usage.chart.empty
    assert usage.top_by_events
    assert usage.top_by_revenue
    assert billing.last_reconciliation.status == "succeeded"
    assert billing.webhooks_last_day > 0
    assert costs.month_to_date.amount > 0
    assert costs.unattributed.amount > 0
    assert costs.budgets
    assert costs.alerts_sent > 0
    assert costs.top_margin
    assert jobs.jobs
    assert jobs.last_aggregation_success
    assert jobs.last_cost_check_success
    assert not board.warnings, board.warnings

    client = Client()
    client.force_login(get_user_model().objects.get(username="admin"))
    response = client.get("/admin/")
    assert response.status_code == 200
    assert "Stripe: local sandbox (demo)" in response.content.decode()

    before = _demo_rows()
    assert all(before.values()), before
    second = run_command("seed_demo")
    assert "stripe: 0 webhook event(s) delivered and processed" in second
    assert "stripe: 0 later webhook event(s) delivered and processed" in second
    assert _demo_rows() == before


def test_seed_demo_without_stripe_says_so_in_one_line(monkeypatch, settings, tmp_path):
    settings.BASE_DIR = tmp_path
    settings.DEBUG = True
    settings.STRIPE_API_KEY = ""
    monkeypatch.setenv("DEMO_ADMIN_PASSWORD", "demo-password-for-tests")
    lines = run_command("seed_demo")
    assert "Stripe is not configured (STRIPE_API_KEY): onboarding, reports and webhooks skipped" in lines
    assert any(line.startswith("aws: cost check succeeded") for line in lines)


@pytest.mark.postgres  # on SQLite (the demo's database) the command would simply migrate
def test_migrate_demo_is_for_the_demos_sqlite_only(settings):
    """Its fast path (dj-stripe's tables from its models) never touches a PostgreSQL database."""
    settings.DEBUG = True
    with pytest.raises(CommandError, match="SQLite, DJANGO_DEBUG=1"):
        call_command("migrate_demo", stdout=StringIO())
