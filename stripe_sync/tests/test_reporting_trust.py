"""Reporting never halts and never loses usage (issue 10, part 2): one pair cannot stop the others,
the plan of the hour decides billing, every accepted hour is reportable, the 24-hour de-duplication
rule, and concurrent cancels."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from metering.ingest import BACKFILL_WINDOW
from metering.models import HourlyAggregate
from stripe_sync.models import ReconciliationItem, ReportedHour, ReportingBalance, UsageReport
from stripe_sync.reconciliation import usage_reconcile
from stripe_sync.reporting import (
    STRIPE_MAX_VALUE,
    STRIPE_PAST_WINDOW,
    usage_report_cancel,
    usage_report_retry,
    usage_reports_prepare,
)
from stripe_sync.sender import usage_reports_send
from stripe_sync.tests.support import hour_ago, ingest, link_customer, link_meter, stripe_total
from tenants.models import Tenant, TenantChange
from tenants.services import tenant_change_plan
from tenants.tests.factories import TenantChangeFactory

pytestmark = pytest.mark.django_db


def no_sleep(seconds):
    return None


def plan_history(tenant: Tenant, *changes) -> None:
    """Record the tenant's plan history: (moment, old plan, new plan), oldest first."""
    for at, old, new in changes:
        change = TenantChangeFactory(
            tenant=tenant, field=TenantChange.Field.PLAN, old_value=old, new_value=new, source="test"
        )
        TenantChange.objects.filter(pk=change.pk).update(created_at=at)
    tenant.plan = changes[-1][2]
    tenant.save()


# --- one pair cannot stop the others ------------------------------------------------------------


def test_one_pair_that_cannot_be_prepared_does_not_stop_other_tenants_reports(
    admin_client, metered, other_tenant, api_calls, local_stripe
):
    link_customer(other_tenant)
    ingest(metered, api_calls, hour_ago(3), [1, 1])
    ingest(other_tenant, api_calls, hour_ago(3), [1, 1, 1])
    # An hour of 20 integer digits (accepted before ingestion was bounded): more whole units than
    # a 64-bit column holds; it rolled back the whole chunk of pairs on every run.
    HourlyAggregate.objects.filter(tenant=metered).update(value=Decimal("10000000000000000000"))

    result = usage_reports_prepare()
    assert (result.reports, result.failed_pairs) == (1, 1)
    assert usage_reports_send(sleep=no_sleep).sent == 1
    assert stripe_total(local_stripe, other_tenant.stripe_customer_id, "api_calls") == 3
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 0

    broken = ReportingBalance.objects.get(tenant=metered)
    assert broken.failed_at is not None
    assert "more than can be recorded" in broken.error
    assert not ReportedHour.objects.filter(tenant=metered).exists()  # not lost: still to be reported
    page = admin_client.get("/admin/stripe_sync/reportingbalance/?failed=yes").content.decode()
    assert "FAILED: not reported until fixed" in page
    assert "Tenant A" in page
    assert "Tenant B" not in page
    dashboard = admin_client.get("/admin/").content.decode()
    assert "could not be prepared" in dashboard

    # Fixed (a recompute): the pair reports again and the mark clears.
    HourlyAggregate.objects.filter(tenant=metered).update(value=2, revision=2)
    assert usage_reports_prepare().failed_pairs == 0
    usage_reports_send(sleep=no_sleep)
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 2
    broken.refresh_from_db()
    assert (broken.failed_at, broken.error) == (None, "")


# PostgreSQL: SQLite (the demo) keeps decimal columns as floating point, exact to about 15 digits.
@pytest.mark.postgres
def test_an_hour_beyond_stripes_15_digits_goes_out_as_several_events_with_their_own_identifiers(
    metered, api_calls, local_stripe
):
    h = hour_ago(3)
    ingest(metered, api_calls, h, [1])
    total = 2 * STRIPE_MAX_VALUE + 5  # 16 digits: more than one meter event can carry
    HourlyAggregate.objects.filter(tenant=metered).update(value=total)
    assert usage_reports_prepare().units == total
    rows = list(UsageReport.objects.order_by("id").values_list("identifier", "value"))
    base = f"bp-{metered.pk}-{api_calls.pk}-{h:%Y%m%d%H}-r1"
    assert rows == [(base, STRIPE_MAX_VALUE), (f"{base}-p2", STRIPE_MAX_VALUE), (f"{base}-p3", 5)]
    assert usage_reports_send(sleep=no_sleep).failed == 0
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == total
    assert usage_reconcile(trigger="test").differences == 0


def test_the_send_step_runs_even_when_preparing_fails(metered, api_calls, local_stripe, monkeypatch):
    from stripe_sync.tasks import reporting as tasks

    ingest(metered, api_calls, hour_ago(2), [1, 1])
    usage_reports_prepare()  # a row waits in the outbox

    def broken_prepare(**kwargs):
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(tasks, "usage_reports_prepare", broken_prepare)
    result = tasks.report_usage.apply().get()
    assert result["prepared"] == {"error": "RuntimeError: database hiccup"}
    assert result["sent"]["sent"] == 1
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 2


def test_report_usage_command_sends_even_when_preparing_fails_and_then_says_so(
    metered, api_calls, local_stripe, monkeypatch
):
    from django.core.management import CommandError, call_command

    from stripe_sync.management.commands import report_usage

    ingest(metered, api_calls, hour_ago(2), [1, 1, 1])
    usage_reports_prepare()
    monkeypatch.setattr(report_usage, "usage_reports_prepare", lambda: 1 / 0)
    with pytest.raises(CommandError, match="preparing failed: ZeroDivisionError"):
        call_command("report_usage")
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 3


# --- the plan of the hour -----------------------------------------------------------------------


def test_late_events_of_an_hour_billed_metered_are_reported_after_a_downgrade(
    metered, api_calls, local_stripe
):
    now = timezone.now()
    h = hour_ago(5)
    plan_history(
        metered,
        (now - timedelta(days=2), Tenant.Plan.FREE, Tenant.Plan.METERED),
        (hour_ago(2), Tenant.Plan.METERED, Tenant.Plan.FREE),  # a failed payment: moved to free
    )
    ingest(metered, api_calls, h, [1, 1, 1])
    ingest(metered, api_calls, hour_ago(1), [1] * 5)  # after the downgrade: free
    result = usage_reports_prepare()
    assert (result.units, result.free_hours) == (3, 1)
    ingest(metered, api_calls, h, [1, 1], prefix="late")  # late events of the metered hour
    assert usage_reports_prepare().units == 2
    usage_reports_send(sleep=no_sleep)
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 5
    assert dict(ReportedHour.objects.values_list("hour", "billed")) == {h: True, hour_ago(1): False}
    # Reconciliation judges by the plan of the hour too: nothing to report.
    assert usage_reconcile(trigger="test").differences == 0


def test_late_events_of_a_free_hour_are_not_billed_after_an_upgrade(local_stripe, tenant, api_calls):
    link_meter(api_calls)
    link_customer(tenant, plan=Tenant.Plan.FREE)
    h = hour_ago(3)
    ingest(tenant, api_calls, h, [1, 1])
    assert usage_reports_prepare().free_hours == 1
    tenant_change_plan(tenant=tenant, plan=Tenant.Plan.METERED, source="test")  # now, after hour h
    ingest(tenant, api_calls, h, [1], prefix="after-upgrade")
    ingest(tenant, api_calls, hour_ago(0), [1, 1, 1, 1], prefix="metered")
    result = usage_reports_prepare()
    assert (result.units, result.free_hours) == (4, 1)
    assert list(UsageReport.objects.values_list("hour", "value")) == [(hour_ago(0), 4)]
    assert ReportedHour.objects.get(hour=h).billed is False


def test_an_hour_during_which_the_plan_changed_is_billed_whole(metered, api_calls, local_stripe):
    h = hour_ago(4)
    plan_history(metered, (h + timedelta(minutes=30), Tenant.Plan.FREE, Tenant.Plan.METERED))
    ingest(metered, api_calls, h, [1, 1])
    ingest(metered, api_calls, hour_ago(5), [1])  # before the upgrade: free
    result = usage_reports_prepare()
    assert (result.units, result.free_hours) == (2, 1)


def test_an_hour_covered_as_free_is_billed_whole_once_the_tenant_upgrades_within_it(
    local_stripe, tenant, api_calls
):
    link_meter(api_calls)
    link_customer(tenant, plan=Tenant.Plan.FREE)
    h = hour_ago(0)
    ingest(tenant, api_calls, h, [1] * 4)
    assert usage_reports_prepare().free_hours == 1
    tenant_change_plan(tenant=tenant, plan=Tenant.Plan.METERED, source="test")  # within hour h
    assert usage_reports_prepare().units == 4  # same revision: prepared again because of the upgrade
    ingest(tenant, api_calls, h, [1] * 3, prefix="late")
    assert usage_reports_prepare().units == 3
    usage_reports_send(sleep=no_sleep)
    assert stripe_total(local_stripe, tenant.stripe_customer_id, "api_calls") == 7
    assert ReportedHour.objects.get().billed is True


def test_plan_history_reads_every_tenants_plan_of_any_hour_in_one_query(
    tenant, other_tenant, django_assert_num_queries
):
    from tenants.selectors import PlanHistory

    base = hour_ago(10)
    plan_history(
        tenant,
        (base + timedelta(hours=2), Tenant.Plan.FREE, Tenant.Plan.METERED),
        (base + timedelta(hours=5, minutes=59), Tenant.Plan.METERED, Tenant.Plan.FREE),
    )
    with django_assert_num_queries(1):
        plans = PlanHistory([tenant, other_tenant])
    billed = [
        plans.metered_during(tenant.pk, base + timedelta(hours=i), base + timedelta(hours=i + 1))
        for i in range(8)
    ]
    assert billed == [False, False, True, True, True, True, False, False]
    assert plans.plan_at(tenant.pk, base) == Tenant.Plan.FREE
    assert plans.plan_at(tenant.pk, base + timedelta(hours=3)) == Tenant.Plan.METERED
    assert plans.plan_at(other_tenant.pk, base) == other_tenant.plan  # no history: its plan


# --- window edges -------------------------------------------------------------------------------


def test_oldest_accepted_hour_is_reported(metered, api_calls, local_stripe):
    now = timezone.now()
    oldest = now - BACKFILL_WINDOW + timedelta(minutes=1)  # ingestion still accepts it
    from metering.aggregation import usage_aggregate
    from metering.ingest import usage_events_record, usage_events_validate

    events = [
        {"id": f"oldest-{i}", "meter": "api_calls", "timestamp": (oldest + timedelta(seconds=i)).isoformat()}
        for i in range(4)
    ]
    usage_events_record(
        tenant=metered, events=usage_events_validate(payload={"events": events}, now=now), now=now
    )
    usage_aggregate(trigger="test")
    # Reporting runs an hour and ten minutes later (aggregation at :02, reporting at :10).
    assert usage_reports_prepare(now=now + timedelta(minutes=70)).units == 4
    result = usage_reports_send(sleep=no_sleep)
    assert (result.sent, result.failed) == (1, 0)
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 4
    (event,) = local_stripe.meter_events(event_name="api_calls")
    assert event.timestamp >= int((timezone.now() - STRIPE_PAST_WINDOW).timestamp())
    # Reconciliation covers it too, by the hour Stripe holds it in: in step.
    assert usage_reconcile(trigger="test").differences == 0


def _stale_edge_row(metered, api_calls, *, status: str) -> UsageReport:
    """A row prepared two hours ago for an hour at Stripe's edge: its timestamp was clamped then."""
    ingest(metered, api_calls, hour_ago(3), [1] * 6)
    usage_reports_prepare()
    then = timezone.now() - timedelta(hours=2)
    hour = (then - STRIPE_PAST_WINDOW).replace(minute=0, second=0, microsecond=0)
    UsageReport.objects.update(
        hour=hour, timestamp=then - STRIPE_PAST_WINDOW + timedelta(minutes=10), status=status, sent_at=then
    )
    HourlyAggregate.objects.update(hour=hour)
    ReportedHour.objects.update(hour=hour)
    return UsageReport.objects.get()


def test_resend_reclamps_the_timestamp(metered, api_calls, local_stripe):
    report = _stale_edge_row(metered, api_calls, status=UsageReport.Status.FAILED)
    assert usage_report_retry(report=report)
    result = usage_reports_send(sleep=no_sleep)
    assert (result.sent, result.failed) == (1, 0)
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 6
    report.refresh_from_db()
    assert report.timestamp > timezone.now() - STRIPE_PAST_WINDOW


def test_reconciliation_resend_reclamps_the_timestamp(metered, api_calls, local_stripe):
    _stale_edge_row(metered, api_calls, status=UsageReport.Status.SENT)  # "sent", but Stripe has nothing
    item = usage_reconcile(trigger="test").items.get()
    assert item.kind == ReconciliationItem.Kind.STRIPE_MISSING
    assert item.resolution == "re-sent 1 report(s): 1 accepted, 0 refused"
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 6
    assert usage_reconcile(trigger="test").differences == 0


def test_unsent_usage_near_stripes_window_is_alerted_and_shown(
    admin_client, metered, api_calls, local_stripe, settings
):
    from django.core import mail

    settings.OPERATOR_EMAILS = ["ops@example.com"]
    ingest(metered, api_calls, hour_ago(3), [1])
    usage_reports_prepare()
    UsageReport.objects.update(hour=timezone.now() - timedelta(days=33), status="failed")
    run = usage_reconcile(trigger="test", resend=False)
    assert run.at_risk == 1
    assert "close to Stripe's 35-day window" in run.error
    assert "1 unsent hour(s) near Stripe's 35-day window" in mail.outbox[0].subject
    page = admin_client.get("/admin/").content.decode()
    assert "1 unsent usage report(s) are close to Stripe&#x27;s 35-day window" in page


# --- Stripe de-duplicates identifiers for about 24 hours ----------------------------------------


def _ambiguous_send(metered, api_calls, local_stripe, *, when: str) -> UsageReport:
    """Every try of the stream call fails with a 500 (`after`: Stripe stored the event anyway);
    then a day passes, so Stripe no longer recognizes the identifier."""
    ingest(metered, api_calls, hour_ago(3), [1] * 7)
    usage_reports_prepare()
    local_stripe.fail_next(4, status=500, path="/v2/billing/meter_event_stream", when=when)
    assert usage_reports_send(sleep=no_sleep).deferred == 1
    row = UsageReport.objects.get()
    assert (row.status, row.outcome_unknown) == ("pending", True)
    UsageReport.objects.update(first_attempt_at=timezone.now() - timedelta(hours=24), next_attempt_at=None)
    local_stripe.configure(identifier_window=0)  # past Stripe's ~24 hours
    local_stripe.clear_requests()
    return row


def test_ambiguous_row_pending_past_23_hours_is_checked_against_stripe_before_resend(
    metered, api_calls, local_stripe, settings
):
    settings.STRIPE_CIRCUIT_FAILURES = 100
    row = _ambiguous_send(metered, api_calls, local_stripe, when="after")
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 7
    usage_reports_send(sleep=no_sleep)
    assert local_stripe.requests_to(f"/v1/billing/meters/{api_calls.stripe.stripe_meter_id}/event_summaries")
    assert local_stripe.requests_to("/v2/billing/meter_event_stream") == []  # nothing sent blindly
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 7  # not 14
    row.refresh_from_db()
    assert (row.status, row.outcome_unknown, row.identifier) == ("sent", False, row.identifier)
    assert row.stripe_response["api"] == "summary check"


def test_ambiguous_row_that_never_reached_stripe_is_sent_under_a_new_identifier_after_the_check(
    metered, api_calls, local_stripe, settings
):
    settings.STRIPE_CIRCUIT_FAILURES = 100
    row = _ambiguous_send(metered, api_calls, local_stripe, when="before")
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 0
    usage_reports_send(sleep=no_sleep)
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 7
    sent = UsageReport.objects.get()
    assert (sent.status, sent.identifier) == ("sent", f"{row.identifier}-m")
    assert [e.identifier for e in local_stripe.meter_events(event_name="api_calls")] == [sent.identifier]
    assert usage_reconcile(trigger="test").differences == 0


def test_ambiguous_row_is_not_resent_while_stripes_summaries_cannot_be_read(
    metered, api_calls, local_stripe, settings
):
    settings.STRIPE_CIRCUIT_FAILURES = 100
    row = _ambiguous_send(metered, api_calls, local_stripe, when="after")
    local_stripe.fail_next(4, status=500, path="/v1/billing/meters/")
    result = usage_reports_send(sleep=no_sleep)
    assert result.deferred == 1
    assert local_stripe.requests_to("/v2/billing/meter_event_stream") == []
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 7
    row.refresh_from_db()
    assert (row.status, row.outcome_unknown, row.identifier) == ("pending", True, row.identifier)


def test_a_429_is_not_an_ambiguous_outcome(metered, api_calls, local_stripe):
    ingest(metered, api_calls, hour_ago(3), [1])
    usage_reports_prepare()
    local_stripe.fail_next(
        1, status=429, path="/v2/billing/meter_event_stream", headers={"Retry-After": "999"}
    )
    assert usage_reports_send(sleep=no_sleep).deferred == 1
    row = UsageReport.objects.get()
    assert row.outcome_unknown is False
    assert row.first_attempt_at is not None


# --- concurrency --------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_concurrent_cancels_adjust_stripe_once(metered, api_calls, local_stripe):
    from conftest import run_at_once
    from stripe_sync.reporting import ReportError

    ingest(metered, api_calls, hour_ago(2), [1] * 10)
    usage_reports_prepare()
    usage_reports_send(sleep=no_sleep)
    pk = UsageReport.objects.get().pk
    local_stripe.delay_next(2, 0.5, path="/v1/billing/meter_event_adjustments")

    def cancel():
        try:
            usage_report_cancel(report=UsageReport.objects.get(pk=pk))
        except ReportError as error:
            return str(error)
        return "canceled"

    outcomes = run_at_once(cancel, 2)
    assert sorted(outcomes)[0] == "canceled"
    assert "only a sent report can be canceled" in sorted(outcomes)[1]
    assert len(local_stripe.requests_to("/v1/billing/meter_event_adjustments")) == 1
    balance = ReportingBalance.objects.get()
    assert (balance.units, balance.quantity) == (0, Decimal(0))  # not -10
    assert UsageReport.objects.get().status == "canceled"


# --- a lowered hour is corrected at Stripe within a day, offset after -----------------------------

ADJUSTMENTS = "/v1/billing/meter_event_adjustments"


def _lower(tenant, meter, hour, value) -> None:
    """What a recompute that lowers the hour writes (e.g. a narrowed filter): a new revision."""
    from django.db.models import F

    HourlyAggregate.objects.filter(tenant=tenant, meter=meter, hour=hour).update(
        value=Decimal(value), revision=F("revision") + 1
    )


def _stripe_hour(server, tenant, hour) -> Decimal:
    totals = server.meter_totals(event_name="api_calls", customer=tenant.stripe_customer_id)
    return totals.get((tenant.stripe_customer_id, "api_calls", int(hour.timestamp())), Decimal(0))


def _reported_five_then_lowered_to_three(metered, api_calls, local_stripe):
    hour = hour_ago(2)
    ingest(metered, api_calls, hour, [1] * 5)
    usage_reports_prepare()
    usage_reports_send(sleep=no_sleep)
    assert _stripe_hour(local_stripe, metered, hour) == 5
    _lower(metered, api_calls, hour, 3)
    return hour


def test_an_hour_lowered_within_a_day_is_corrected_at_stripe(metered, api_calls, local_stripe):
    hour = _reported_five_then_lowered_to_three(metered, api_calls, local_stripe)
    assert usage_reports_prepare().corrected == 1
    assert usage_reports_send(sleep=no_sleep).sent == 1

    assert _stripe_hour(local_stripe, metered, hour) == 3
    assert len(local_stripe.requests_to(ADJUSTMENTS)) == 1
    rows = {r.identifier: (r.status, r.value, r.quantity) for r in UsageReport.objects.all()}
    first, second = sorted(rows)
    assert rows[first] == ("canceled", 5, Decimal(5))
    assert rows[second] == ("sent", 3, Decimal(3))
    balance = ReportingBalance.objects.get()
    assert (balance.units, balance.quantity) == (3, Decimal(3))
    # Later usage of the pair is billed in full (nothing is offset against it).
    ingest(metered, api_calls, hour_ago(1), [1, 1])
    usage_reports_prepare()
    usage_reports_send(sleep=no_sleep)
    assert _stripe_hour(local_stripe, metered, hour_ago(1)) == 2
    run = usage_reconcile(trigger="test")
    assert run.differences == 0, list(ReconciliationItem.objects.values("kind", "hour"))


def test_a_crash_between_cancel_and_resend_is_recovered_without_double_counting(
    metered, api_calls, local_stripe
):
    from stripe_sync.client import stripe_client

    hour = _reported_five_then_lowered_to_three(metered, api_calls, local_stripe)
    usage_reports_prepare()
    old = UsageReport.objects.get(status="correcting")
    # The sender canceled it at Stripe and died before recording it: the row is still correcting.
    stripe_client().v1.billing.meter_event_adjustments.create(
        params={"event_name": "api_calls", "type": "cancel", "cancel": {"identifier": old.identifier}}
    )
    assert _stripe_hour(local_stripe, metered, hour) == 0
    assert UsageReport.objects.get(pk=old.pk).status == "correcting"

    assert usage_reports_send(sleep=no_sleep).sent == 1  # cancels again (no change), then resends
    assert _stripe_hour(local_stripe, metered, hour) == 3
    # The resend reached Stripe but the row was not updated: sent again, Stripe drops the copy.
    UsageReport.objects.filter(replaces_hour=True).update(status="pending", outcome_unknown=True)
    usage_reports_send(sleep=no_sleep)
    assert _stripe_hour(local_stripe, metered, hour) == 3
    assert UsageReport.objects.get(pk=old.pk).status == "canceled"
    assert UsageReport.objects.get(replaces_hour=True).status == "sent"
    usage_reports_prepare()
    usage_reports_send(sleep=no_sleep)
    assert _stripe_hour(local_stripe, metered, hour) == 3
    balance = ReportingBalance.objects.get()
    assert (balance.units, balance.quantity) == (3, Decimal(3))


def test_an_hour_lowered_after_a_day_is_offset_and_shown_by_reconciliation(metered, api_calls, local_stripe):
    hour = _reported_five_then_lowered_to_three(metered, api_calls, local_stripe)
    UsageReport.objects.update(sent_at=timezone.now() - timedelta(hours=25))
    result = usage_reports_prepare()
    assert (result.corrected, result.carried) == (0, 1)
    usage_reports_send(sleep=no_sleep)
    assert local_stripe.requests_to(ADJUSTMENTS) == []
    assert _stripe_hour(local_stripe, metered, hour) == 5  # Stripe keeps it: too old to cancel
    run = usage_reconcile(trigger="test")
    assert run.differences == 1
    item = ReconciliationItem.objects.get()
    assert (item.hour, item.kind, item.local_quantity, item.sent_value) == (hour, "offset", Decimal(3), 5)
    assert "offset against later usage" in item.resolution
    # The 2 units too many are offset against later usage of the pair.
    ingest(metered, api_calls, hour_ago(1), [1, 1, 1])
    usage_reports_prepare()
    usage_reports_send(sleep=no_sleep)
    assert _stripe_hour(local_stripe, metered, hour_ago(1)) == 1
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 6


def test_a_cancel_stripe_refuses_as_too_old_falls_back_to_the_offset_and_is_shown(
    metered, api_calls, local_stripe
):
    hour = _reported_five_then_lowered_to_three(metered, api_calls, local_stripe)
    assert usage_reports_prepare().corrected == 1
    local_stripe.advance_time(25 * 3600)  # the send comes after Stripe's 24 hours
    try:
        assert usage_reports_send(sleep=no_sleep).sent == 0
    finally:
        local_stripe.advance_time(-25 * 3600)
    assert len(local_stripe.requests_to(ADJUSTMENTS)) == 1
    assert _stripe_hour(local_stripe, metered, hour) == 5
    old = UsageReport.objects.get(replaces_hour=False)
    assert old.status == "sent"
    assert "not canceled at Stripe" in old.error_message
    offset = UsageReport.objects.get(replaces_hour=True)
    assert (offset.status, offset.value, offset.quantity) == ("nothing", 0, Decimal(-2))
    balance = ReportingBalance.objects.get()
    assert (balance.units, balance.quantity) == (5, Decimal(3))
    run = usage_reconcile(trigger="test")
    assert run.differences == 1
    item = ReconciliationItem.objects.get()
    assert (item.hour, item.kind, item.stripe_value, item.sent_value) == (hour, "offset", Decimal(5), 5)
