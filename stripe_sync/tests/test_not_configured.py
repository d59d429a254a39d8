"""Without STRIPE_API_KEY (a platform not connected to Stripe yet): scheduled jobs log one line and
skip, admin's Stripe buttons are disabled and say why; `check --deploy` refuses the demo's sandbox."""

import logging

import pytest
from django.test import override_settings

from stripe_sync.checks import stripe_api_base_check
from stripe_sync.models import ReconciliationRun
from stripe_sync.tasks.reporting import reconcile_usage, report_usage
from stripe_sync.tasks.sync import sync_stripe

pytestmark = pytest.mark.django_db

SKIPPED = "Stripe is not configured (STRIPE_API_KEY): skipped"


@pytest.fixture
def no_stripe(settings):
    settings.STRIPE_API_KEY = ""


@pytest.mark.parametrize("task", [reconcile_usage, sync_stripe], ids=["reconcile_usage", "sync_stripe"])
def test_a_scheduled_job_without_stripe_logs_one_line_and_skips(no_stripe, caplog, task):
    with caplog.at_level(logging.INFO):
        result = task.apply().get()
    assert result == {"skipped": "Stripe is not configured (STRIPE_API_KEY)"}
    lines = [record for record in caplog.records if record.name.startswith("stripe_sync")]
    assert [record.getMessage() for record in lines] == [SKIPPED]
    assert lines[0].exc_info is None
    assert ReconciliationRun.objects.count() == 0


def test_the_hourly_report_without_stripe_logs_one_line(no_stripe, caplog):
    with caplog.at_level(logging.INFO):
        result = report_usage.apply().get()
    assert result["sent"] is None
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert [record.getMessage() for record in warnings] == [
        "Stripe is not configured (STRIPE_API_KEY): skipped sending usage reports (the outbox keeps them)"
    ]
    assert all(record.exc_info is None for record in caplog.records)


def test_stripe_buttons_without_stripe_are_disabled_and_say_why(no_stripe, admin_client, tenant):
    page = admin_client.get(f"/admin/tenants/tenant/{tenant.pk}/change/").content.decode()
    assert 'data-testid="action-onboard" disabled title="Stripe is not configured (STRIPE_API_KEY)' in page
    assert "onboarding and resync are off until" in page
    assert 'data-testid="stripe-mode"' in page  # the header says so on every page
    runs = admin_client.get("/admin/stripe_sync/reconciliationrun/").content.decode()
    assert 'disabled title="Stripe is not configured (STRIPE_API_KEY): nothing to compare with"' in runs


def test_stripe_buttons_with_stripe_are_enabled(local_stripe, admin_client, tenant):
    page = admin_client.get(f"/admin/tenants/tenant/{tenant.pk}/change/").content.decode()
    assert 'data-testid="action-onboard">' in page
    assert "Stripe: local sandbox (demo)" in page


@pytest.mark.parametrize(
    ("base", "refused"),
    [
        ("http://127.0.0.1:12111", True),
        ("http://localhost:8000", True),
        ("https://api.stripe.com", False),
    ],
)
def test_check_deploy_refuses_a_local_stripe(base, refused):
    with override_settings(
        STRIPE_API_BASE=base, STRIPE_METER_EVENTS_API_BASE="https://meter-events.stripe.com"
    ):
        errors = stripe_api_base_check(None)
    assert [error.msg.split(" is ")[0] for error in errors] == (["STRIPE_API_BASE"] if refused else [])
    assert all(error.id == "stripe_sync.E001" for error in errors)
