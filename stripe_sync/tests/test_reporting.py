"""The reporting outbox and its sender against the local Stripe server."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from metering.tests.factories import MeterFactory
from stripe_sync.circuit import circuit_get
from stripe_sync.models import ReportedHour, ReportingBalance, UsageReport
from stripe_sync.reporting import usage_report_retry, usage_reports_mark_rejected, usage_reports_prepare
from stripe_sync.sender import usage_reports_send
from stripe_sync.tests.support import hour_ago, ingest, link_customer, link_meter, local_total, stripe_total
from tenants.models import Tenant
from tenants.services import tenant_change_plan

pytestmark = pytest.mark.django_db


def no_sleep(seconds):
    return None


def test_each_changed_hour_becomes_one_row_with_a_deterministic_identifier(metered, api_calls):
    h = hour_ago(3)
    ingest(metered, api_calls, h, [1, 1, 1])
    assert usage_reports_prepare().reports == 1
    row = UsageReport.objects.get()
    assert row.identifier == f"bp-{metered.pk}-{api_calls.pk}-{h:%Y%m%d%H}-r1"
    assert (row.value, row.quantity, row.status) == (3, Decimal(3), "pending")
    assert row.customer_id == metered.stripe_customer_id
    assert row.event_name == "api_calls"
    assert row.timestamp == h

    assert usage_reports_prepare().reports == 0  # nothing changed: nothing written twice
    ingest(metered, api_calls, h, [1, 1], prefix="late")  # late events: revision 2, only the difference
    usage_reports_prepare()
    late = UsageReport.objects.order_by("id").last()
    assert (late.identifier[-3:], late.value, late.quantity) == ("-r2", 2, Decimal(2))
    assert ReportedHour.objects.get().revision == 2


def test_decimal_quantities_go_out_in_whole_units_and_the_fraction_is_carried(metered):
    storage = MeterFactory(code="storage_gb", name="Storage", unit="GB", aggregation="sum")
    link_meter(storage)
    for hours_ago, quantity in [(5, "0.4"), (4, "0.4"), (3, "0.4"), (2, "1.9")]:
        ingest(metered, storage, hour_ago(hours_ago), [quantity])
    usage_reports_prepare()
    rows = list(UsageReport.objects.order_by("hour").values_list("quantity", "value", "status"))
    assert rows == [
        (Decimal("0.4"), 0, "nothing"),
        (Decimal("0.4"), 0, "nothing"),
        (Decimal("0.4"), 1, "pending"),  # 1.2 reported: 1 unit out, 0.2 carried
        (Decimal("1.9"), 2, "pending"),  # 3.1 reported: 3 units in all, 0.1 carried
    ]
    balance = ReportingBalance.objects.get(meter=storage)
    assert (balance.quantity, balance.units) == (Decimal("3.1"), 3)


def test_a_lower_recompute_after_a_day_sends_nothing_and_is_offset_against_later_usage(metered, api_calls):
    h = hour_ago(4)
    ingest(metered, api_calls, h, [1] * 5)
    usage_reports_prepare()
    # Sent more than a day ago: Stripe no longer cancels it (within a day, see test_reporting_trust).
    UsageReport.objects.update(status="sent", sent_at=timezone.now() - timedelta(hours=25))
    # A recompute lowered the hour (e.g. a meter filter changed): 5 -> 3.
    from metering.models import HourlyAggregate

    HourlyAggregate.objects.filter(hour=h).update(value=3, revision=2)
    usage_reports_prepare()
    lowered = UsageReport.objects.order_by("id").last()
    assert (lowered.quantity, lowered.value, lowered.status) == (Decimal(-2), 0, "nothing")
    ingest(metered, api_calls, hour_ago(2), [1] * 4)
    usage_reports_prepare()
    # 3 + 4 = 7 used, 5 already billed: 2 more units, never a negative event.
    assert UsageReport.objects.order_by("id").last().value == 2
    assert ReportingBalance.objects.get().units == 7


def test_free_plan_hours_are_covered_but_not_reported(local_stripe, tenant, api_calls):
    link_meter(api_calls)
    link_customer(tenant, plan=Tenant.Plan.FREE)
    h = hour_ago(3)
    ingest(tenant, api_calls, h, [1, 1])
    result = usage_reports_prepare()
    assert (result.reports, result.free_hours) == (0, 1)
    assert not UsageReport.objects.exists()
    assert ReportedHour.objects.get().billed is False
    # After an upgrade, usage of an hour that was free stays free (test_reporting_trust has more).
    tenant_change_plan(tenant=tenant, plan=Tenant.Plan.METERED, source="test")
    ingest(tenant, api_calls, h, [1], prefix="after-upgrade")
    assert usage_reports_prepare().free_hours == 1
    assert not UsageReport.objects.exists()


def test_metered_tenant_without_customer_waits_and_is_reported_once_linked(local_stripe, tenant, api_calls):
    link_meter(api_calls)
    tenant.plan = Tenant.Plan.METERED
    tenant.save()
    ingest(tenant, api_calls, hour_ago(2), [1, 1, 1])
    assert usage_reports_prepare().waiting_pairs == 1
    assert not ReportedHour.objects.exists()
    link_customer(tenant)
    assert usage_reports_prepare().units == 3


def test_sent_reports_reach_stripe_exactly(metered, api_calls, local_stripe):
    for hours_ago in range(1, 6):
        ingest(metered, api_calls, hour_ago(hours_ago), [1] * hours_ago)
    usage_reports_prepare()
    result = usage_reports_send(sleep=no_sleep)
    assert (result.sent, result.failed, result.deferred) == (5, 0, 0)
    assert set(UsageReport.objects.values_list("status", flat=True)) == {"sent"}
    assert (
        stripe_total(local_stripe, metered.stripe_customer_id, "api_calls")
        == local_total(metered, api_calls)
        == 15
    )
    # per hour, as Stripe's hourly buckets hold them
    per_hour = local_stripe.meter_totals(event_name="api_calls")
    assert sorted(per_hour.values()) == [1, 2, 3, 4, 5]
    assert usage_reports_send(sleep=no_sleep).calls == 0  # nothing left


def test_a_response_lost_after_stripe_stored_the_events_is_retried_harmlessly(
    metered, api_calls, local_stripe
):
    ingest(metered, api_calls, hour_ago(2), [1] * 7)
    usage_reports_prepare()
    local_stripe.fail_next(1, status=500, path="/v2/billing/meter_event_stream", when="after")
    result = usage_reports_send(sleep=no_sleep)
    assert result.sent == 1
    assert result.server_errors == 1
    stream_calls = local_stripe.requests_to("/v2/billing/meter_event_stream")
    assert len(stream_calls) == 2  # the same identifier twice; Stripe kept one
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 7


def test_429_waits_for_retry_after_and_everything_arrives(
    metered, api_calls, local_stripe, settings, monkeypatch
):
    settings.STRIPE_MAX_REQUESTS_PER_SECOND = 1000  # faster than Stripe allows: its 429s pace us
    local_stripe.set_rate_limit(2, scope="stream", retry_after=1)
    waits = []
    for tenant_hour in range(1, 4):
        ingest(metered, api_calls, hour_ago(tenant_hour), [1] * 3)
    usage_reports_prepare()
    from stripe_sync import sender

    monkeypatch.setattr(sender, "STREAM_MAX_EVENTS", 1)
    result = usage_reports_send(sleep=waits.append)
    assert result.sent == 3
    assert result.rate_limited >= 1
    assert 1.0 in waits  # waited exactly Retry-After
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 9


def test_5xx_storm_opens_the_circuit_breaker_and_nothing_is_lost(metered, api_calls, local_stripe, settings):
    settings.STRIPE_CIRCUIT_FAILURES = 3
    ingest(metered, api_calls, hour_ago(2), [1, 1])
    usage_reports_prepare()
    local_stripe.fail_next(10, status=503)
    result = usage_reports_send(sleep=no_sleep)
    assert result.circuit_open
    assert result.sent == 0
    breaker = circuit_get()
    assert breaker.failures == 3
    assert breaker.open_until > timezone.now()
    assert UsageReport.objects.get().status == "pending"
    # While open, a run makes no call at all.
    calls_before = len(local_stripe.requests)
    assert usage_reports_send(sleep=no_sleep).circuit_open
    assert len(local_stripe.requests) == calls_before
    # After the open period, a trial call goes through and closes it.
    local_stripe.clear_faults()
    type(breaker).objects.update(open_until=timezone.now() - timedelta(seconds=1))
    result = usage_reports_send(sleep=no_sleep)
    assert result.sent == 1
    assert circuit_get().failures == 0
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 2


def test_timeouts_retry_with_backoff_then_defer(metered, api_calls, local_stripe, settings):
    settings.STRIPE_TIMEOUT = 0.3
    settings.STRIPE_CIRCUIT_FAILURES = 100
    ingest(metered, api_calls, hour_ago(2), [1])
    usage_reports_prepare()
    local_stripe.delay_next(4, 1.0, path="/v2/billing/meter_event_stream")
    waits = []
    result = usage_reports_send(sleep=waits.append)
    assert result.deferred == 1
    assert result.server_errors == 4
    assert len(waits) == 3
    assert all(0 <= w <= 30 for w in waits)  # backoff between the 4 tries
    row = UsageReport.objects.get()
    assert row.status == "pending"
    assert row.next_attempt_at > timezone.now()
    assert row.attempts == 1
    UsageReport.objects.update(next_attempt_at=None)
    assert usage_reports_send(sleep=no_sleep).sent == 1


def test_a_refused_event_is_failed_with_stripes_message_and_not_retried(
    metered, api_calls, local_stripe, tenant
):
    local_stripe.configure(stream_validation="sync")
    ingest(metered, api_calls, hour_ago(3), [1, 1])
    ingest(metered, api_calls, hour_ago(2), [1])
    usage_reports_prepare()
    bad = UsageReport.objects.order_by("hour").first()
    UsageReport.objects.filter(pk=bad.pk).update(customer_id="cus_doesnotexist")
    result = usage_reports_send(sleep=no_sleep)
    assert (result.sent, result.failed) == (1, 1)
    bad.refresh_from_db()
    assert bad.status == "failed"
    assert "cus_doesnotexist" in bad.error_message
    calls_made = len(local_stripe.requests)
    assert usage_reports_send(sleep=no_sleep).calls == 0
    assert len(local_stripe.requests) == calls_made
    # An operator fixes it and puts it back: same identifier, same value.
    UsageReport.objects.filter(pk=bad.pk).update(customer_id=metered.stripe_customer_id)
    assert usage_report_retry(report=bad)
    assert usage_reports_send(sleep=no_sleep).sent == 1
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 3


def test_async_error_reports_mark_rows_failed(metered, api_calls):
    ingest(metered, api_calls, hour_ago(2), [1])
    usage_reports_prepare()
    row = UsageReport.objects.get()
    marked = usage_reports_mark_rejected(
        errors={row.identifier: ("meter_event_customer_not_found", "No customer"), "other": ("x", "y")},
        source_event="evt_123",
    )
    assert marked == 1
    row.refresh_from_db()
    assert row.status == "failed"
    assert row.error_message == "No customer (Stripe error report evt_123)"


# PostgreSQL: concurrent senders rely on row locks (SKIP LOCKED); the suite's in-memory SQLite
# answers threads with "database table is locked" instead.
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_senders_at_once_send_each_report_once_and_one_call_at_a_time_per_pair(
    metered, api_calls, local_stripe, other_tenant
):
    from conftest import run_at_once

    link_customer(other_tenant)
    for tenant in (metered, other_tenant):
        for hours_ago in range(1, 30):
            ingest(tenant, api_calls, hour_ago(hours_ago), [1, 1])
    usage_reports_prepare()
    results = run_at_once(lambda: usage_reports_send(sleep=no_sleep), 3)
    assert sum(r.sent for r in results) == 58
    assert local_stripe.concurrent_meter_event_calls == []
    for tenant in (metered, other_tenant):
        assert stripe_total(local_stripe, tenant.stripe_customer_id, "api_calls") == 58


def test_report_usage_command(metered, api_calls, local_stripe):
    ingest(metered, api_calls, hour_ago(2), [1, 1])
    from tenants.tests.support import run_command

    lines = run_command("report_usage")
    assert lines[0].startswith("prepared: 1 reports (2 units)")
    assert lines[1].startswith("sent: 1, failed: 0, deferred: 0")


def test_report_usage_without_stripe_key_says_so(metered, api_calls, settings):
    settings.STRIPE_API_KEY = ""
    ingest(metered, api_calls, hour_ago(2), [1])
    with pytest.raises(CommandError, match="STRIPE_API_KEY is not set"):
        call_command("report_usage")
    assert UsageReport.objects.get().status == "pending"  # written, waiting for a key


def test_pacing_keeps_calls_under_stripes_rate_limit(metered, api_calls, local_stripe, settings, monkeypatch):
    from stripe_sync import sender

    settings.STRIPE_MAX_REQUESTS_PER_SECOND = 10
    local_stripe.set_rate_limit(10, scope="stream")
    local_stripe.set_rate_limit(10, scope="api")
    monkeypatch.setattr(sender, "STREAM_MAX_EVENTS", 1)  # one call per report: 15 calls in a burst
    for hours_ago in range(1, 16):
        ingest(metered, api_calls, hour_ago(hours_ago), [1])
    usage_reports_prepare()
    result = usage_reports_send(sleep=no_sleep)
    assert result.sent == 15
    assert result.rate_limited == 0
    assert [r.status for r in local_stripe.requests if r.status == 429] == []


def test_the_hourly_task_without_a_stripe_key_keeps_reports_pending(metered, api_calls, settings):
    from stripe_sync.tasks.reporting import report_usage

    settings.STRIPE_API_KEY = ""
    ingest(metered, api_calls, hour_ago(2), [1])
    result = report_usage.apply().get()
    assert result["sent"] is None
    assert "STRIPE_API_KEY is not set" in result["reason"]
    assert UsageReport.objects.get().status == "pending"
