"""Reconciliation: what was sent vs Stripe's meter event summaries vs local aggregates."""

from decimal import Decimal

import pytest
from django.core import mail

from stripe_sync.client import stripe_client
from stripe_sync.models import ReconciliationItem, UsageReport
from stripe_sync.reconciliation import usage_reconcile
from stripe_sync.reporting import usage_reports_prepare
from stripe_sync.sender import usage_reports_send
from stripe_sync.tests.support import hour_ago, ingest, stripe_total

pytestmark = pytest.mark.django_db


def report_all():
    usage_reports_prepare()
    return usage_reports_send(sleep=lambda s: None)


def test_everything_in_step_has_no_differences(metered, api_calls, local_stripe):
    for hours_ago in (2, 3, 4):
        ingest(metered, api_calls, hour_ago(hours_ago), [1] * hours_ago)
    report_all()
    run = usage_reconcile(trigger="test")
    assert run.status == "succeeded"
    assert run.hours_checked == 3
    assert run.differences == 0
    assert run.stripe_calls >= 2  # error reports + one summaries page
    assert not mail.outbox


def test_sent_but_missing_at_stripe_is_re_sent_and_alerted(metered, api_calls, local_stripe, settings):
    settings.OPERATOR_EMAILS = ["ops@example.com"]
    ingest(metered, api_calls, hour_ago(3), [1] * 4)
    ingest(metered, api_calls, hour_ago(2), [1] * 2)
    usage_reports_prepare()
    lost = UsageReport.objects.get(hour=hour_ago(3))
    # The row was marked sent but Stripe never got it (e.g. a proxy answered 200 for Stripe).
    UsageReport.objects.filter(pk=lost.pk).update(status="sent")
    usage_reports_send(sleep=lambda s: None)
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 2

    run = usage_reconcile(trigger="test")
    item = run.items.get()
    assert item.kind == ReconciliationItem.Kind.STRIPE_MISSING
    assert (item.sent_value, item.stripe_value, item.local_quantity) == (4, Decimal(0), Decimal(4))
    assert item.resolution == "re-sent 1 report(s): 1 accepted, 0 refused"
    assert run.resent == 1
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 6
    assert "1 difference" in mail.outbox[0].subject
    # The next run finds Stripe in step.
    assert usage_reconcile(trigger="test").differences == 0


def test_extra_usage_at_stripe_is_listed_for_an_operator(metered, api_calls, local_stripe):
    ingest(metered, api_calls, hour_ago(2), [1])
    report_all()
    stripe_client().v1.billing.meter_events.create(
        params={
            "event_name": "api_calls",
            "payload": {"stripe_customer_id": metered.stripe_customer_id, "value": "5"},
            "timestamp": int(hour_ago(2).timestamp()) + 60,
        }
    )
    item = usage_reconcile(trigger="test").items.get()
    assert item.kind == ReconciliationItem.Kind.STRIPE_EXTRA
    assert (item.sent_value, item.stripe_value) == (1, Decimal(6))


def test_failed_reports_show_as_local_usage_not_sent(metered, api_calls, local_stripe):
    ingest(metered, api_calls, hour_ago(2), [1, 1, 1])
    usage_reports_prepare()
    UsageReport.objects.update(status="failed", error_message="No such customer")
    item = usage_reconcile(trigger="test").items.get()
    assert item.kind == ReconciliationItem.Kind.NOT_SENT
    assert item.local_quantity == 3
    assert item.resolution == "1 failed"


def test_async_error_reports_are_fetched_and_mark_rows_failed(metered, api_calls, local_stripe):
    # Stripe accepts the stream call, then refuses one event (its customer was deleted meanwhile).
    ingest(metered, api_calls, hour_ago(2), [1, 1])
    usage_reports_prepare()
    UsageReport.objects.update(customer_id="cus_gone")
    report_all()
    assert UsageReport.objects.get().status == "sent"
    run = usage_reconcile(trigger="test")
    row = UsageReport.objects.get()
    assert row.status == "failed"
    assert row.error_code == "meter_event_customer_not_found"
    assert run.status == "succeeded"


def test_a_stripe_outage_fails_the_run_with_the_reason(metered, api_calls, local_stripe, settings):
    settings.STRIPE_CIRCUIT_FAILURES = 2
    ingest(metered, api_calls, hour_ago(2), [1])
    report_all()
    local_stripe.fail_next(20, status=500)
    run = usage_reconcile(trigger="test")
    assert run.status == "failed"
    assert "paused until" in run.error


def test_a_wrong_report_is_canceled_at_stripe_within_24_hours(metered, api_calls, local_stripe):
    from stripe_sync.models import ReportingBalance
    from stripe_sync.reporting import ReportError, usage_report_cancel

    ingest(metered, api_calls, hour_ago(2), [1] * 3)
    report_all()
    report = UsageReport.objects.get()
    usage_report_cancel(report=report)
    assert report.status == "canceled"
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 0
    balance = ReportingBalance.objects.get()
    assert (balance.units, balance.quantity) == (0, Decimal(0))
    with pytest.raises(ReportError, match="only a sent report"):
        usage_report_cancel(report=report)
    item = usage_reconcile(trigger="test").items.get()
    assert item.kind == ReconciliationItem.Kind.NOT_SENT
    assert item.resolution == "1 canceled"


def test_a_report_older_than_24_hours_cannot_be_canceled(metered, api_calls, local_stripe):
    from datetime import timedelta

    from django.utils import timezone

    from stripe_sync.reporting import ReportError, usage_report_cancel

    ingest(metered, api_calls, hour_ago(2), [1])
    report_all()
    UsageReport.objects.update(sent_at=timezone.now() - timedelta(hours=25))
    with pytest.raises(ReportError, match="only within 24 hours"):
        usage_report_cancel(report=UsageReport.objects.get())
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 1


def test_reconcile_usage_command_lists_differences(metered, api_calls, local_stripe):
    from tenants.tests.support import run_command

    ingest(metered, api_calls, hour_ago(2), [1, 1])
    usage_reports_prepare()
    UsageReport.objects.update(status="failed")
    lines = run_command("reconcile_usage", "--no-resend")
    assert "succeeded, 1 hours checked, 1 differences, 0 reports re-sent" in lines[0]
    assert "tenant-a api_calls: Local usage not (fully) sent (local 2, sent 0, Stripe 0) 1 failed" in lines[1]


def test_reconcile_usage_command_rejects_a_bad_date(db):
    from django.core.management import CommandError, call_command

    with pytest.raises(
        CommandError, match="argument --since: must be a date such as 2026-11-20, got 'yesterday'"
    ):
        call_command("reconcile_usage", "--since", "yesterday")
