"""The set-based outbox preparation and the pipelined sender (issue 14): same rows, fewer statements,
calls that overlap without ever carrying one (customer, meter) twice at once."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from metering.tests.factories import HourlyAggregateFactory
from stripe_sync.models import ReportedHour, UsageReport
from stripe_sync.reporting import (
    OutboxRow,
    _changed_aggregates,
    _changed_hours,
    _changed_pairs,
    _insert_reports,
    usage_reports_prepare,
    window_start,
)
from stripe_sync.sender import usage_reports_send
from stripe_sync.tests.support import hour_ago, ingest, link_customer, stripe_total
from tenants.models import Tenant, TenantChange
from tenants.tests.factories import TenantChangeFactory, TenantFactory

pytestmark = pytest.mark.django_db

ORM_FIELDS = (
    "tenant_id",
    "meter_id",
    "hour",
    "revision",
    "value",
    "covered_revision",
    "covered_quantity",
    "covered_billed",
)


def _covered(tenant, meter, hour, *, revision, billed, quantity="1"):
    ReportedHour.objects.create(
        tenant=tenant, meter=meter, hour=hour, revision=revision, quantity=Decimal(quantity), billed=billed
    )


def test_the_one_pass_read_selects_exactly_what_the_orm_definition_selects(tenant, other_tenant, api_calls):
    now = timezone.now()
    since = window_start(now)
    h = [hour_ago(n) for n in range(12)]

    def agg(t, hour, revision=1, value="5"):
        HourlyAggregateFactory(tenant=t, meter=api_calls, hour=hour, revision=revision, value=Decimal(value))

    agg(tenant, h[1])  # never covered: changed
    agg(tenant, h[2], revision=2, value="7")  # covered at revision 1: changed
    _covered(tenant, api_calls, h[2], revision=1, billed=True, quantity="4")
    agg(tenant, h[3])  # covered at its revision: not changed
    _covered(tenant, api_calls, h[3], revision=1, billed=True)
    agg(tenant, h[4])  # covered free, the tenant moved to metered within the hour: changed
    _covered(tenant, api_calls, h[4], revision=1, billed=False)
    TenantChangeFactory(
        tenant=tenant, field=TenantChange.Field.PLAN, old_value="free", new_value=Tenant.Plan.METERED
    )
    TenantChange.objects.filter(tenant=tenant).update(created_at=h[4] + timedelta(minutes=30))
    agg(tenant, h[6])  # covered free, the move was in another hour: not changed
    _covered(tenant, api_calls, h[6], revision=1, billed=False)
    agg(tenant, since - timedelta(hours=1))  # before the window: not changed
    agg(other_tenant, h[1], value="2.5")  # another pair
    agg(other_tenant, h[5], revision=3)
    _covered(other_tenant, api_calls, h[5], revision=2, billed=False)

    orm = list(_changed_aggregates(since).order_by("tenant_id", "meter_id", "hour").values_list(*ORM_FIELDS))
    assert [(row[0], row[2]) for row in orm] == [
        (tenant.pk, h[4]),
        (tenant.pk, h[2]),
        (tenant.pk, h[1]),
        (other_tenant.pk, h[5]),
        (other_tenant.pk, h[1]),
    ]
    pairs = [(tenant.pk, api_calls.pk), (other_tenant.pk, api_calls.pk)]
    assert [tuple(row) for row in _changed_hours(since, pairs)] == orm
    assert _changed_pairs(since) == sorted(pairs)
    only_first = _changed_hours(since, pairs[:1])
    assert [tuple(row) for row in only_first] == [row for row in orm if row[0] == tenant.pk]


def test_preparing_more_hours_takes_no_more_statements(metered, api_calls):
    for hours in (3, 4):
        ingest(metered, api_calls, hour_ago(hours), [1])
    with CaptureQueriesContext(connection) as few:
        assert usage_reports_prepare().reports == 2
    UsageReport.objects.all().delete()
    ReportedHour.objects.all().delete()
    for hours in range(5, 45):
        ingest(metered, api_calls, hour_ago(hours), [1, 1], prefix="more")
    with CaptureQueriesContext(connection) as many:
        assert usage_reports_prepare().reports == 42
    assert len(many.captured_queries) == len(few.captured_queries)
    assert UsageReport.objects.filter(value=2).count() == 40


def test_outbox_text_with_quotes_and_braces_is_written_as_given(metered, api_calls):
    hour = hour_ago(2)
    odd = 'ev"ent\\name,{x} y'
    _insert_reports(
        [
            OutboxRow(
                tenant_id=metered.pk,
                meter_id=api_calls.pk,
                hour=hour,
                revision=1,
                identifier="bp-odd-1",
                quantity=Decimal("-0.000000000001"),
                value=0,
                customer_id='cus_"}{\\',
                event_name=odd,
                timestamp=hour,
                status=UsageReport.Status.NOTHING_TO_SEND,
            )
        ]
    )
    row = UsageReport.objects.get(identifier="bp-odd-1")
    assert (row.event_name, row.customer_id, row.quantity) == (odd, 'cus_"}{\\', Decimal("-0.000000000001"))
    assert (row.attempts, row.outcome_unknown, row.replaces_hour, row.timestamp) == (0, False, False, hour)


def test_calls_overlap_but_never_carry_one_customer_and_meter_twice_at_once(
    local_stripe, api_calls, metered, monkeypatch
):
    from stripe_sync import sender

    second, third = TenantFactory(slug="tenant-c"), TenantFactory(slug="tenant-d")
    for each in (second, third):
        link_customer(each)
    monkeypatch.setattr(sender, "STREAM_MAX_EVENTS", 2)
    for hours in range(2, 7):  # 5 rows in three calls that must not overlap
        ingest(metered, api_calls, hour_ago(hours), [1, 1])
    for each in (second, third):
        for hours in (2, 3):
            ingest(each, api_calls, hour_ago(hours), [3], prefix=f"t{each.pk}")
    usage_reports_prepare()
    local_stripe.delay_next(20, 0.3, path="/v2/billing/meter_event_stream")

    result = usage_reports_send(sleep=lambda seconds: None)

    assert (result.sent, result.failed, result.deferred) == (9, 0, 0)
    calls = [r for r in local_stripe.requests if r.path == "/v2/billing/meter_event_stream"]
    assert len(calls) == 5
    spans = []
    for call in calls:
        customers = {event["payload"]["stripe_customer_id"] for event in call.params["events"]}
        spans.append((call.received_at, call.received_at + call.duration, customers))
    overlapping = [(a, b) for i, a in enumerate(spans) for b in spans[i + 1 :] if a[0] < b[1] and b[0] < a[1]]
    assert overlapping  # the sender did not wait for one answer before the next call
    assert all(not (a[2] & b[2]) for a, b in overlapping)
    assert stripe_total(local_stripe, metered.stripe_customer_id, "api_calls") == 10
    assert stripe_total(local_stripe, third.stripe_customer_id, "api_calls") == 2
    assert set(UsageReport.objects.values_list("status", "outcome_unknown")) == {("sent", False)}


def test_a_success_after_another_workers_failure_resets_the_breaker(metered, api_calls, local_stripe):
    from stripe_sync.circuit import circuit_failure, circuit_get

    circuit_failure("APIError: seen by another worker")
    ingest(metered, api_calls, hour_ago(2), [1, 1])
    usage_reports_prepare()
    assert usage_reports_send(sleep=lambda seconds: None).sent == 1
    assert circuit_get().failures == 0
