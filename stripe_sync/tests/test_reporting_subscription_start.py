"""Usage of the hour a subscription starts falls inside its billing period (issue 13, stamp).

Stripe bills a subscription's meter usage by event timestamp within its period, [start, end). The
platform bills the hour a tenant moved to metered whole, so that hour's report is stamped at the
subscription's start, not at the hour's start (before the period: invoiced by nobody)."""

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from metering.aggregation import usage_aggregate
from metering.ingest import usage_events_record, usage_events_validate
from metering.models import HourlyAggregate, Meter
from stripe_sync.client import stripe_client
from stripe_sync.models import ReconciliationItem, ReportedHour, TenantSubscription, UsageReport
from stripe_sync.onboarding import tenant_onboard
from stripe_sync.reconciliation import usage_reconcile
from stripe_sync.reporting import (
    STRIPE_PAST_WINDOW,
    TIMESTAMP_MARGIN,
    report_timestamp,
    usage_reports_prepare,
)
from stripe_sync.sender import usage_reports_send
from stripe_sync.subscriptions import tenant_subscription_ensure
from stripe_sync.tests.onboarding_support import meter_with_price
from stripe_sync.tests.support import hour_ago, ingest
from tenants.models import Tenant, TenantChange
from tenants.tests.factories import TenantChangeFactory

pytestmark = pytest.mark.django_db


def no_sleep(seconds):
    return None


@pytest.fixture
def meter(local_stripe) -> Meter:
    """api_calls with a metered price of 2 cents a call."""
    return meter_with_price("api_calls", unit_amount=Decimal(2))


def onboard_free(tenant: Tenant) -> None:
    """`tenant` on the free plan with its customer at the local Stripe server (no subscription)."""
    tenant.plan = Tenant.Plan.FREE
    tenant.save()
    tenant_onboard(tenant=tenant)
    tenant.refresh_from_db()


def record_upgrade(tenant: Tenant, at: datetime) -> None:
    """The tenant's plan history: free until `at`, metered since."""
    change = TenantChangeFactory(
        tenant=tenant,
        field=TenantChange.Field.PLAN,
        old_value=Tenant.Plan.FREE,
        new_value=Tenant.Plan.METERED,
        source="test",
    )
    TenantChange.objects.filter(pk=change.pk).update(created_at=at)
    tenant.plan = Tenant.Plan.METERED
    tenant.save()


def subscribe_at(local_stripe, tenant: Tenant, at: datetime) -> str:
    """The tenant's metered subscription made at Stripe with Stripe's clock at `at`; its id."""
    offset = at.timestamp() - time.time()
    local_stripe.advance_time(offset)
    try:
        subscription = tenant_subscription_ensure(tenant=tenant)
    finally:
        local_stripe.advance_time(-offset)
    return subscription.id


def started(subscription_id: str) -> datetime:
    return datetime.fromtimestamp(
        stripe_client().v1.subscriptions.retrieve(subscription_id).start_date, tz=UTC
    )


def ingest_at(tenant: Tenant, moments: list[datetime], prefix: str) -> None:
    """One api_calls event at each moment, then aggregate."""
    now = timezone.now()
    events = [
        {"id": f"{prefix}-{i}", "meter": "api_calls", "timestamp": at.isoformat()}
        for i, at in enumerate(moments)
    ]
    usage_events_record(
        tenant=tenant, events=usage_events_validate(payload={"events": events}, now=now), now=now
    )
    usage_aggregate(trigger="test")


def stamps_at_stripe(local_stripe, customer: str) -> dict[datetime, datetime]:
    """{hour: the timestamp Stripe holds} of each meter event for the customer."""
    stamps = {}
    for event in local_stripe.meter_events(event_name="api_calls", customer=customer):
        at = datetime.fromtimestamp(event.timestamp, tz=UTC)
        stamps[at.replace(minute=0, second=0)] = at
    return stamps


def preview_line(subscription_id: str):
    [line] = stripe_client().v1.invoices.create_preview(params={"subscription": subscription_id}).lines.data
    return line


def test_the_hour_a_subscription_starts_is_stamped_inside_its_period_and_invoiced(
    local_stripe, tenant, meter
):
    onboard_free(tenant)
    start_hour = hour_ago(2)
    # The demo's case: subscribed at 05:59:27, three calls at 05:59:50 (usage of the 05:00 hour).
    subscribed_at = start_hour + timedelta(minutes=59, seconds=27)
    record_upgrade(tenant, subscribed_at)
    subscription_id = subscribe_at(local_stripe, tenant, subscribed_at)
    start = started(subscription_id)
    assert start_hour < start < start_hour + timedelta(hours=1)
    ingest(tenant, meter, hour_ago(3), [1] * 5)  # free: an hour that ended before the subscription
    ingest_at(tenant, [subscribed_at + timedelta(seconds=23)] * 3, "start-hour")
    ingest(tenant, meter, hour_ago(1), [1] * 4)  # the next hour, wholly inside the period

    prepared = usage_reports_prepare()
    assert (prepared.reports, prepared.units, prepared.free_hours) == (2, 7, 1)
    sent = usage_reports_send(sleep=no_sleep)
    assert (sent.sent, sent.failed) == (2, 0)

    # Stripe's coming invoice bills both hours: 7 calls at 2 cents (the start hour's 3 were lost before).
    line = preview_line(subscription_id)
    assert (line.quantity, line.amount) == (7, 14)
    assert line.period.start == int(start.timestamp())
    customer = tenant.stripe_customer_id
    assert stamps_at_stripe(local_stripe, customer) == {start_hour: start, hour_ago(1): hour_ago(1)}
    rows = dict(UsageReport.objects.values_list("hour", "timestamp"))
    assert rows == {start_hour: start, hour_ago(1): hour_ago(1)}
    # The free hour stays unreported; reconciliation (Stripe's summaries per hour) is in step.
    assert ReportedHour.objects.get(hour=hour_ago(3)).billed is False
    assert usage_reconcile(trigger="test").differences == 0


def test_a_row_written_before_the_subscription_was_known_is_stamped_at_its_start_when_sent(
    local_stripe, tenant, meter
):
    onboard_free(tenant)
    start_hour = hour_ago(2)
    subscribed_at = start_hour + timedelta(minutes=40)
    record_upgrade(tenant, subscribed_at)  # the plan moved; the subscription is not recorded yet
    ingest_at(tenant, [subscribed_at + timedelta(minutes=5)] * 6, "early")
    usage_reports_prepare()
    assert UsageReport.objects.get().timestamp == start_hour

    subscription_id = subscribe_at(local_stripe, tenant, subscribed_at)
    assert usage_reports_send(sleep=no_sleep).sent == 1

    start = started(subscription_id)
    assert stamps_at_stripe(local_stripe, tenant.stripe_customer_id) == {start_hour: start}
    assert UsageReport.objects.get().timestamp == start  # the row says what Stripe holds
    assert (preview_line(subscription_id).quantity, preview_line(subscription_id).amount) == (6, 12)


def test_a_reconciliation_resend_stamps_the_start_hour_at_the_subscriptions_start(
    local_stripe, tenant, meter
):
    onboard_free(tenant)
    start_hour = hour_ago(2)
    subscribed_at = start_hour + timedelta(minutes=30, seconds=5)
    record_upgrade(tenant, subscribed_at)
    subscription_id = subscribe_at(local_stripe, tenant, subscribed_at)
    ingest_at(tenant, [subscribed_at + timedelta(seconds=1)] * 2, "lost")
    usage_reports_prepare()
    # Recorded sent with the hour's start (as before this fix), but Stripe never got it.
    UsageReport.objects.update(status=UsageReport.Status.SENT, sent_at=timezone.now(), timestamp=start_hour)

    item = usage_reconcile(trigger="test").items.get()
    assert item.kind == ReconciliationItem.Kind.STRIPE_MISSING
    assert item.resolution == "re-sent 1 report(s): 1 accepted, 0 refused"
    start = started(subscription_id)
    assert stamps_at_stripe(local_stripe, tenant.stripe_customer_id) == {start_hour: start}
    assert preview_line(subscription_id).quantity == 2
    assert usage_reconcile(trigger="test").differences == 0


def test_stripes_35_day_window_still_clamps_the_start_hour(local_stripe, tenant, meter):
    onboard_free(tenant)
    record_upgrade(tenant, hour_ago(5))
    subscribe_at(local_stripe, tenant, hour_ago(5) + timedelta(minutes=1))
    ingest(tenant, meter, hour_ago(3), [1] * 6)
    usage_reports_prepare()
    # The row's hour is now past Stripe's 35 days and the mirror says the subscription started in it.
    old_hour = (timezone.now() - STRIPE_PAST_WINDOW - timedelta(hours=2)).replace(
        minute=0, second=0, microsecond=0
    )
    HourlyAggregate.objects.update(hour=old_hour)
    ReportedHour.objects.update(hour=old_hour)
    UsageReport.objects.update(hour=old_hour, timestamp=old_hour)
    subscription = TenantSubscription.objects.get(tenant=tenant).subscription
    subscription.stripe_data["start_date"] = int((old_hour + timedelta(minutes=20)).timestamp())
    subscription.save()

    before = timezone.now()
    assert usage_reports_send(sleep=no_sleep).sent == 1
    (event,) = local_stripe.meter_events(event_name="api_calls")
    assert event.timestamp >= int((before - STRIPE_PAST_WINDOW + TIMESTAMP_MARGIN).timestamp())
    assert UsageReport.objects.get().timestamp >= before - STRIPE_PAST_WINDOW + TIMESTAMP_MARGIN


def test_one_query_reads_the_subscriptions_of_every_row_sent(local_stripe, tenant, other_tenant, meter):
    for each in (tenant, other_tenant):
        onboard_free(each)
        record_upgrade(each, hour_ago(6))
        subscribe_at(local_stripe, each, hour_ago(6) + timedelta(minutes=7))
        for hours in (6, 5, 4):
            ingest(each, meter, hour_ago(hours), [1, 1], prefix=f"e{each.pk}")
    usage_reports_prepare()

    with CaptureQueriesContext(connection) as queries:
        assert usage_reports_send(sleep=no_sleep).sent == 6
    table = TenantSubscription._meta.db_table
    assert len([q for q in queries.captured_queries if f'"{table}"' in q["sql"]]) == 1
    stamps = UsageReport.objects.filter(hour=hour_ago(6)).values_list("timestamp", flat=True)
    assert all(stamp > hour_ago(6) for stamp in stamps)


NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
HOUR = datetime(2026, 3, 10, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("hour", "start", "expected"),
    [
        (HOUR, None, HOUR),  # no subscription recorded
        (HOUR, HOUR + timedelta(minutes=59, seconds=27), HOUR + timedelta(minutes=59, seconds=27)),
        (HOUR, HOUR, HOUR),  # started on the hour: the hour's start is inside the period
        (HOUR, HOUR - timedelta(days=3), HOUR),  # an hour after the start keeps its start
        (HOUR, HOUR + timedelta(hours=1), HOUR),  # started after the hour: unchanged (a free hour)
        # Older than Stripe takes: the clamp, even in the hour the subscription started.
        (
            NOW - timedelta(days=36),
            NOW - timedelta(days=36) + timedelta(minutes=5),
            NOW - STRIPE_PAST_WINDOW + TIMESTAMP_MARGIN,
        ),
    ],
)
def test_report_timestamp(hour, start, expected):
    assert report_timestamp(hour=hour, now=NOW, subscription_start=start) == expected
