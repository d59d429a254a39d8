"""What an operator sees and does in admin for usage reporting."""

from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.utils import timezone

from stripe_sync.circuit import circuit_failure
from stripe_sync.models import CircuitBreaker, ReconciliationRun, UsageReport
from stripe_sync.reconciliation import usage_reconcile
from stripe_sync.reporting import usage_reports_prepare
from stripe_sync.sender import usage_reports_send
from stripe_sync.tests.support import hour_ago, ingest, stripe_total

pytestmark = pytest.mark.django_db


def test_outbox_lists_reports_with_status_and_error(admin_client, metered, api_calls):
    ingest(metered, api_calls, hour_ago(2), [1, 1])
    usage_reports_prepare()
    UsageReport.objects.update(status="failed", error_message="No such customer: 'cus_x'")
    page = admin_client.get("/admin/stripe_sync/usagereport/?status__exact=failed").content.decode()
    assert UsageReport.objects.get().identifier in page
    assert "No such customer: &#x27;cus_x&#x27;" in page


def test_resend_asks_first_then_queues_the_failed_report(admin_client, metered, api_calls, local_stripe):
    ingest(metered, api_calls, hour_ago(2), [1, 1])
    usage_reports_prepare()
    report = UsageReport.objects.get()
    UsageReport.objects.update(status="failed")
    form = {"action": "resend", "_selected_action": [report.pk]}
    page = admin_client.post("/admin/stripe_sync/usagereport/", form)
    assert page.status_code == 200
    assert "Yes, resend them" in page.content.decode()
    assert UsageReport.objects.get().status == "failed"  # nothing happened yet

    admin_client.post("/admin/stripe_sync/usagereport/", {**form, "confirmed": "yes"})
    assert UsageReport.objects.get().status == "pending"
    assert LogEntry.objects.filter(change_message="Queued again for sending to Stripe").exists()
    usage_reports_send(sleep=lambda s: None)
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 2


def test_cancel_at_stripe_from_admin(admin_client, metered, api_calls, local_stripe):
    ingest(metered, api_calls, hour_ago(2), [1, 1, 1])
    usage_reports_prepare()
    usage_reports_send(sleep=lambda s: None)
    report = UsageReport.objects.get()
    form = {"action": "cancel_at_stripe", "_selected_action": [report.pk], "confirmed": "yes"}
    page = admin_client.post("/admin/stripe_sync/usagereport/", form, follow=True).content.decode()
    assert "canceled at Stripe" in page
    assert UsageReport.objects.get().status == "canceled"
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 0
    # Too old to cancel: the operator is told why.
    UsageReport.objects.update(status="sent", sent_at=timezone.now() - timedelta(days=2))
    page = admin_client.post("/admin/stripe_sync/usagereport/", form, follow=True).content.decode()
    assert "only within 24 hours" in page


def test_open_circuit_breaker_is_shown_and_can_be_closed(admin_client, settings):
    settings.STRIPE_CIRCUIT_FAILURES = 1
    circuit_failure("APIError: Stripe is down")
    page = admin_client.get("/admin/stripe_sync/circuitbreaker/").content.decode()
    assert "OPEN until" in page
    assert "Stripe is down" in page
    breaker = CircuitBreaker.objects.get()
    admin_client.post(
        "/admin/stripe_sync/circuitbreaker/", {"action": "close", "_selected_action": [breaker.pk]}
    )
    breaker.refresh_from_db()
    assert breaker.open_until is None
    assert breaker.failures == 0


def test_reconciliation_runs_with_their_differences_and_a_run_now_button(
    admin_client, metered, api_calls, local_stripe, monkeypatch
):
    ingest(metered, api_calls, hour_ago(2), [1, 1])
    usage_reports_prepare()
    UsageReport.objects.update(status="failed")
    run = usage_reconcile(trigger="test")
    listing = admin_client.get("/admin/stripe_sync/reconciliationrun/").content.decode()
    assert "Run reconciliation now" in listing
    detail = admin_client.get(f"/admin/stripe_sync/reconciliationrun/{run.pk}/change/").content.decode()
    assert "Local usage not (fully) sent" in detail
    assert "1 failed" in detail

    queued = []
    from stripe_sync.tasks.reporting import reconcile_usage

    monkeypatch.setattr(
        reconcile_usage, "delay", lambda **kw: queued.append(kw) or type("R", (), {"id": "t-1"})
    )
    response = admin_client.post("/admin/stripe_sync/reconciliationrun/run/", follow=True)
    assert queued == [{"trigger": "admin"}]
    assert "Reconciliation queued" in response.content.decode()
    assert LogEntry.objects.filter(change_message="Queued a reconciliation run from admin").exists()
    assert ReconciliationRun.objects.count() == 1
