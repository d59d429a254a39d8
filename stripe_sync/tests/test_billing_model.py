"""A model of the whole billing pipeline, checked step by step against the real code (hypothesis
stateful testing): ingestion, late events, plan changes, meter filter edits, recomputes, prunes,
aggregation, the outbox and its sender against the local Stripe server, sender crashes before and
after Stripe stored a call, resends and reconciliation.

The model is deliberately simple: the events sent (their hour, quantity and `kind`), the meter's
filter, and the tenant's plan timeline. After the pipeline has run to quiescence, for every hour:
- the local aggregate is the sum of the kept events that match the filter;
- Stripe's total for (customer, meter, hour) is that aggregate's whole units if the tenant was on
  the metered plan at any moment of the hour, else nothing;
and at every step no identifier ever went to Stripe with two values, and Stripe holds each accepted
identifier once.

Time is real (the local Stripe server's clock): events go to the current hour and the four before
it; a plan change happens now, and the plan of earlier hours is set up once per example through the
same service, its history row dated back. Quantities are whole numbers. Filter edits widen and
narrow: a lowered hour is corrected at Stripe (its events canceled, its new total sent), which holds
because every hour of the model is less than 23 hours old; older hours are offset by design (see
test_reporting_trust: test_an_hour_lowered_after_a_day_is_offset_and_shown_by_reconciliation).
Recent raw events are never pruned; the prune rule may first write an hour of 40 days ago (outside
the reporting window) with 10 early and 1 late event, and checks that after the prune deletes the
10 no recompute lowers its 11.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from rest_framework.test import APIClient

from metering.aggregation import usage_aggregate, usage_events_prune, usage_mark_for_recompute
from metering.eventstore import event_store
from metering.ingest import meter_cache, usage_events_record, usage_events_validate
from metering.models import HourlyAggregate, MeterFilter, PruneRun, UsageEvent
from metering.services import meter_filters_changed
from metering.tests.factories import MeterFactory, MeterFilterFactory
from stripe_sync import sender as sender_module
from stripe_sync.models import ReportingBalance, UsageReport
from stripe_sync.reconciliation import usage_reconcile
from stripe_sync.reporting import usage_reports_prepare
from stripe_sync.sender import usage_reports_send
from stripe_sync.tests.support import hour_ago, link_customer, link_meter
from tenants.models import Tenant, TenantChange
from tenants.services import tenant_change_plan
from tenants.tests.factories import TenantFactory
from tenants.tests.support import issue_key

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

HOUR = timedelta(hours=1)
HOURS_BACK = 4  # events go to hour_ago(0) .. hour_ago(HOURS_BACK)
EVENT_NAME = "model_calls"
STREAM = "/v2/billing/meter_event_stream"
V1_EVENTS = "/v1/billing/meter_events"
NEVER = -1
# A recompute that lowers an hour is corrected at Stripe (cancel within 24 h, then the new total), so
# the model narrows filters too. Its hours are all within HOURS_BACK (< 23 h): older lowered hours are
# offset against later usage by design and would not hold per-hour equality.
LOWERED_HOURS_CORRECTED_AT_STRIPE = True
_examples = itertools.count()


class SenderCrash(BaseException):
    """The sender's process dies here (nothing in it catches this)."""


def no_sleep(seconds):
    return None


def crash(*args, **kwargs):
    raise SenderCrash


class BillingPipeline(RuleBasedStateMachine):
    def __init__(self, stripe_server):
        super().__init__()
        self.stripe = stripe_server
        self.savepoint = transaction.savepoint()
        self.example = next(_examples)
        stripe_server.reset()
        meter_cache.clear()
        self.events: list[tuple[datetime, int, str]] = []
        self.filter: set[str] | None = {"a"}
        self.plan_at: list[tuple[datetime, str]] = []  # (from, plan), after the initial plan
        self.initial_plan = Tenant.Plan.METERED
        self.ids = itertools.count()
        self.tenant = None
        self.first_event: dict | None = None
        self.old_hours: dict[datetime, Decimal] = {}  # outside the reporting window, never billed

    def teardown(self):
        """Every example ends at quiescence, checked; then its rows are rolled back."""
        try:
            if self.tenant is not None:
                self._settle()
                self._check_quiescent()
        finally:
            transaction.savepoint_rollback(self.savepoint)
            meter_cache.clear()

    # --- set-up ---------------------------------------------------------------------------------

    @initialize(
        upgraded_hours_ago=st.one_of(st.none(), st.integers(1, HOURS_BACK), st.just(NEVER)),
        usage=st.lists(
            st.tuples(st.integers(0, HOURS_BACK), st.integers(1, 3), st.sampled_from(["a", "b"])),
            min_size=1,
            max_size=6,
        ),
    )
    def set_up(self, upgraded_hours_ago, usage):
        """A tenant with a Stripe customer, the meter at Stripe; free until `upgraded_hours_ago`
        (half past that hour), free all along with NEVER, else metered all along; and some usage to
        begin with (each example has some, whatever rules follow)."""
        self.meter = MeterFactory(code=EVENT_NAME, name="Calls", unit="call", aggregation="sum")
        MeterFilterFactory(meter=self.meter, property="kind", operator="eq", values=["a"])
        link_meter(self.meter)
        self.tenant = TenantFactory(slug=f"model-{self.example}", plan=Tenant.Plan.FREE)
        self.customer = link_customer(self.tenant, plan=Tenant.Plan.FREE)
        self.api = APIClient()
        self.api.credentials(HTTP_AUTHORIZATION=f"Api-Key {issue_key(self.tenant)}")
        self.initial_plan = Tenant.Plan.FREE
        if upgraded_hours_ago is None:
            self.initial_plan = Tenant.Plan.METERED
            Tenant.objects.filter(pk=self.tenant.pk).update(plan=Tenant.Plan.METERED)
            self.tenant.plan = Tenant.Plan.METERED
        elif upgraded_hours_ago != NEVER:
            moment = hour_ago(upgraded_hours_ago) + HOUR / 2
            tenant_change_plan(tenant=self.tenant, plan=Tenant.Plan.METERED, source="evt_model_setup")
            TenantChange.objects.filter(tenant=self.tenant, field="plan").update(created_at=moment)
            self.plan_at.append((moment, Tenant.Plan.METERED))
        for hours_ago, quantity, kind in usage:
            self.ingest(hours_ago, [quantity], kind, retry_first=False, via_api=False)

    # --- the world --------------------------------------------------------------------------------

    @rule(
        hours_ago=st.integers(0, HOURS_BACK),
        quantities=st.lists(st.integers(1, 3), min_size=1, max_size=3),
        kind=st.sampled_from(["a", "b"]),
        retry_first=st.booleans(),
        via_api=st.booleans(),
    )
    def ingest(self, hours_ago, quantities, kind, retry_first, via_api):
        """Events for an hour; an hour already aggregated or reported makes them late events. With
        `retry_first`, the batch also carries the example's first event again (a client retry): a
        duplicate that changes nothing. Through the HTTP API with the tenant's key, or the service."""
        hour = hour_ago(hours_ago)
        now = timezone.now()
        batch = [dict(self.first_event)] if retry_first and self.first_event else []
        for quantity in quantities:
            n = next(self.ids)
            batch.append(
                {
                    "id": f"m{self.example}-{n}",
                    "meter": EVENT_NAME,
                    "quantity": quantity,
                    "timestamp": (hour + timedelta(seconds=n % 60)).isoformat(),
                    "properties": {"kind": kind},
                }
            )
            self.events.append((hour, quantity, kind))
        if via_api:
            response = self.api.post("/api/v1/events", {"events": batch}, format="json")
            assert response.status_code == 202, response.content
            counts = (response.json()["accepted"], response.json()["duplicates"])
        else:
            result = usage_events_record(
                tenant=self.tenant, events=usage_events_validate(payload={"events": batch}, now=now), now=now
            )
            counts = (result.accepted, result.duplicates)
        assert counts == (len(quantities), len(batch) - len(quantities))
        self.first_event = self.first_event or batch[0]

    @rule(plan=st.sampled_from([Tenant.Plan.FREE, Tenant.Plan.METERED]))
    def change_plan(self, plan):
        """As a webhook changes it (a TenantChange whose source is the event)."""
        if tenant_change_plan(
            tenant=self.tenant, plan=plan, source=f"evt_model_{self.example}_{next(self.ids)}"
        ):
            change = TenantChange.objects.filter(tenant=self.tenant, field="plan").order_by("-id").first()
            self.plan_at.append((change.created_at, plan))

    @precondition(lambda self: self.filter == {"a"})
    @rule(remove=st.booleans())
    def widen_filter(self, remove):
        """The operator widens the meter's filter (or removes it); its hours are recomputed."""
        if remove:
            MeterFilter.objects.filter(meter=self.meter).delete()
            self.filter = None
        else:
            MeterFilter.objects.filter(meter=self.meter).update(operator="in", values=["a", "b"])
            self.filter = {"a", "b"}
        meter_filters_changed(meter=self.meter)

    @precondition(lambda self: LOWERED_HOURS_CORRECTED_AT_STRIPE and self.filter != {"a"})
    @rule()
    def narrow_filter(self):
        """The operator narrows the filter back to kind "a": hours with "b" events are lowered."""
        MeterFilter.objects.update_or_create(
            meter=self.meter, property="kind", defaults={"operator": "eq", "values": ["a"]}
        )
        self.filter = {"a"}
        meter_filters_changed(meter=self.meter)

    @rule(hours_ago=st.integers(0, HOURS_BACK + 1))
    def recompute(self, hours_ago):
        result = usage_mark_for_recompute(since=hour_ago(hours_ago), tenant_id=self.tenant.pk)
        assert result.skipped == 0

    @rule(with_old_hour=st.booleans())
    def prune(self, with_old_hour):
        """The retention job, 36 days. With `with_old_hour`, first an hour of 40 days ago that got 10
        events at once and a late one 30 days later (written as history: ingestion refuses that
        age): the prune deletes the 10, and recomputing that hour must leave its 11 alone."""
        old_hour = hour_ago(40 * 24)
        # (Only before this example's first prune: history older than a prune's cutoff is not
        # aggregated any more, rightly.)
        if with_old_hour and not self.old_hours and not PruneRun.objects.exists():
            received = [old_hour + timedelta(minutes=10)] * 10 + [old_hour + timedelta(days=30)]
            event_store().prepare_for([old_hour])  # PostgreSQL: that day's partition
            UsageEvent.objects.bulk_create(
                UsageEvent(
                    tenant=self.tenant,
                    meter=self.meter,
                    event_id=f"m{self.example}-old-{n}",
                    timestamp=old_hour + timedelta(minutes=5),
                    properties={"kind": "a"},
                    received_at=at,
                )
                for n, at in enumerate(received)
            )
            usage_mark_for_recompute(since=old_hour - HOUR, until=old_hour + HOUR, tenant_id=self.tenant.pk)
            usage_aggregate(trigger="model")
            self.old_hours[old_hour] = Decimal(11)
            assert self._aggregates()[old_hour] == 11
        before = self._aggregates()
        deleted = usage_events_prune(older_than=timedelta(days=36)).deleted
        assert self._aggregates() == before
        if old_hour in self.old_hours:
            # SQLite deletes the 10 received before the cutoff; PostgreSQL drops the hour's whole day.
            assert deleted in (0, 10, 11)
            left = UsageEvent.objects.filter(tenant=self.tenant, timestamp=old_hour + timedelta(minutes=5))
            result = usage_mark_for_recompute(since=old_hour, tenant_id=self.tenant.pk)
            assert result.skipped == (1 if left.exists() else 0)
            usage_aggregate(trigger="model")
            assert self._aggregates()[old_hour] == 11

    @rule()
    def aggregate(self):
        usage_aggregate(trigger="model")

    @rule()
    def report(self):
        usage_reports_prepare()
        usage_reports_send(sleep=no_sleep)

    @rule(fault=st.sampled_from(["crash_before_call", "crash_after_stripe_stored", "answer_lost"]))
    def sender_fault(self, fault):
        """The sender dies mid-call, before the call left (Stripe has nothing) or after Stripe
        stored it and before the rows were marked sent (Stripe has them, the rows say pending); or
        Stripe stored the call and its answer was lost (a 500 after the fact)."""
        usage_reports_prepare()
        if fault == "answer_lost":
            self.stripe.fail_next(1, status=500, path=STREAM, when="after")
            usage_reports_send(sleep=no_sleep)
            self.stripe.clear_faults()
            return
        target = "_mark_sent" if fault == "crash_after_stripe_stored" else "_event"
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sender_module, target, crash)
            with contextlib.suppress(SenderCrash):
                usage_reports_send(sleep=no_sleep)
        # Its lease runs out: another sender may take its pairs over.
        ReportingBalance.objects.filter(tenant=self.tenant).update(sending_until=None)

    @rule()
    def resend(self):
        """A later run: rows waiting for their next attempt are due now."""
        UsageReport.objects.filter(status=UsageReport.Status.PENDING).update(next_attempt_at=None)
        usage_reports_send(sleep=no_sleep)

    @rule()
    def reconcile(self):
        run = usage_reconcile(trigger="model")
        assert run.status == "succeeded", run.error

    @rule()
    def settle_and_check(self):
        self._settle()
        self._check_quiescent()

    # --- invariants -------------------------------------------------------------------------------

    @invariant()
    def nothing_is_sent_twice(self):
        if self.tenant is None:
            return
        values: dict[str, set[str]] = defaultdict(set)
        for request in self.stripe.requests_to(STREAM):
            for event in request.params.get("events", []):
                values[event["identifier"]].add(str(event["payload"]["value"]))
        for request in self.stripe.requests_to(V1_EVENTS):
            values[request.params["identifier"]].add(str(request.params["payload"]["value"]))
        twice = {identifier: v for identifier, v in values.items() if len(v) > 1}
        assert not twice, f"identifiers sent with different values: {twice}"
        accepted = [record.identifier for record in self.stripe.meter_events(include_canceled=True)]
        assert len(accepted) == len(set(accepted)), "Stripe holds an identifier twice"

    @invariant()
    def no_report_failed(self):
        failed = list(
            UsageReport.objects.filter(status=UsageReport.Status.FAILED).values_list(
                "identifier", "error_message"
            )
        )
        assert not failed, failed

    # --- helpers ----------------------------------------------------------------------------------

    def _aggregates(self) -> dict[datetime, Decimal]:
        return {
            a.hour: a.value
            for a in HourlyAggregate.objects.filter(tenant=self.tenant, meter=self.meter)
            if a.value
        }

    def _billed(self, hour: datetime) -> bool:
        plan, timeline = self.initial_plan, sorted(self.plan_at)
        for moment, new in timeline:
            if moment <= hour:
                plan = new
        if plan == Tenant.Plan.METERED:
            return True
        return any(new == Tenant.Plan.METERED and hour <= moment < hour + HOUR for moment, new in timeline)

    def _settle(self):
        for _ in range(5):
            usage_aggregate(trigger="model")
            usage_reports_prepare()
            UsageReport.objects.filter(status=UsageReport.Status.PENDING).update(next_attempt_at=None)
            usage_reports_send(sleep=no_sleep)
            if not UsageReport.objects.filter(status=UsageReport.Status.PENDING).exists():
                return
        pending = list(
            UsageReport.objects.filter(status="pending").values_list("identifier", "error_message")
        )
        raise AssertionError(f"rows still pending after settling: {pending}")

    def _check_quiescent(self):
        expected: dict[datetime, Decimal] = defaultdict(Decimal)
        for hour, quantity, kind in self.events:
            if self.filter is None or kind in self.filter:
                expected[hour] += quantity
        assert self._aggregates() == dict(expected) | self.old_hours, (
            "local aggregates differ from the events"
        )
        at_stripe = {
            datetime.fromtimestamp(start, tz=UTC): total
            for (customer, _, start), total in self.stripe.meter_totals(
                event_name=EVENT_NAME, customer=self.customer
            ).items()
            if total
        }
        billed = {hour: value for hour, value in expected.items() if self._billed(hour) and int(value)}
        assert at_stripe == billed, (
            f"Stripe per hour {sorted(at_stripe.items())} != billed local aggregates "
            f"{sorted(billed.items())} "
            f"(plan {self.initial_plan} then {sorted(self.plan_at)})"
        )


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_stripe_holds_exactly_the_billed_local_aggregates_whatever_the_sequence(
    local_stripe, settings_override
):
    run_state_machine_as_test(
        lambda: BillingPipeline(local_stripe),
        settings=hypothesis_settings(
            # More, and random, for a longer hunt: BILLING_MODEL_EXAMPLES=300 BILLING_MODEL_RANDOM=1
            max_examples=int(os.environ.get("BILLING_MODEL_EXAMPLES", "50")),
            stateful_step_count=20,
            deadline=None,
            derandomize=not os.environ.get("BILLING_MODEL_RANDOM"),
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )


@pytest.fixture
def settings_override(settings):
    settings.STRIPE_MAX_REQUESTS_PER_SECOND = 1000  # the local server does not limit; no pacing waits
    settings.STRIPE_CIRCUIT_FAILURES = 1000  # injected faults must not open the breaker
    return settings


# --- What the model found in stripe_sync (minimal reproductions) -----------------------------------
# An hour covered as free, then billed because the tenant moved to metered within it, was billed
# short (0 without a later event, 3 of 7 with one); fixed in stripe_sync/reporting.py (ad89e9f).


@pytest.fixture
def free_tenant_at_stripe(local_stripe, tenant):
    """A free tenant with a Stripe customer, and the meter at Stripe; returns (tenant, this hour)."""
    meter = MeterFactory(code=EVENT_NAME, name="Calls", unit="call", aggregation="sum")
    link_meter(meter)
    link_customer(tenant, plan=Tenant.Plan.FREE)
    hour = hour_ago(0)
    if timezone.now() > hour + HOUR - timedelta(minutes=1):
        pytest.skip("too close to the end of the hour: the upgrade would fall in the next one")
    return tenant, hour


def _ingest_now(tenant, hour, quantity, event_id):
    now = timezone.now()
    payload = {
        "events": [{"id": event_id, "meter": EVENT_NAME, "quantity": quantity, "timestamp": hour.isoformat()}]
    }
    usage_events_record(tenant=tenant, events=usage_events_validate(payload=payload, now=now), now=now)
    usage_aggregate(trigger="test")


def _stripe_hour(server, tenant, hour) -> Decimal:
    totals = server.meter_totals(event_name=EVENT_NAME, customer=tenant.stripe_customer_id)
    return totals.get((tenant.stripe_customer_id, EVENT_NAME, int(hour.timestamp())), Decimal(0))


def test_an_hour_covered_as_free_is_billed_once_the_tenant_upgrades_within_it(
    free_tenant_at_stripe, local_stripe
):
    tenant, hour = free_tenant_at_stripe
    _ingest_now(tenant, hour, 4, "e-1")
    assert usage_reports_prepare().free_hours == 1
    tenant_change_plan(tenant=tenant, plan=Tenant.Plan.METERED, source="evt_upgrade")
    usage_reports_prepare()
    usage_reports_send(sleep=no_sleep)
    assert hour_ago(0) == hour
    assert _stripe_hour(local_stripe, tenant, hour) == 4  # metered during the hour: billed whole


def test_an_hour_covered_as_free_then_upgraded_bills_all_7_after_a_late_event(
    free_tenant_at_stripe, local_stripe
):
    tenant, hour = free_tenant_at_stripe
    _ingest_now(tenant, hour, 4, "e-1")
    assert usage_reports_prepare().free_hours == 1
    tenant_change_plan(tenant=tenant, plan=Tenant.Plan.METERED, source="evt_upgrade")
    _ingest_now(tenant, hour, 3, "e-2")
    usage_reports_prepare()
    usage_reports_send(sleep=no_sleep)
    assert hour_ago(0) == hour
    assert _stripe_hour(local_stripe, tenant, hour) == 7


# A narrowed filter left the lowered hour too high at Stripe (offset against later usage); fixed in
# stripe_sync/reporting.py: within 23 hours the hour's events are canceled and its new total sent.
def test_narrowing_a_filter_lowers_the_hour_at_stripe_too(local_stripe, tenant):
    meter = MeterFactory(code=EVENT_NAME, name="Calls", unit="call", aggregation="sum")
    link_meter(meter)
    link_customer(tenant)
    hour = hour_ago(1)
    now = timezone.now()
    events = [
        {"id": f"e-{n}", "meter": EVENT_NAME, "timestamp": hour.isoformat(), "properties": {"kind": kind}}
        for n, kind in enumerate("aaabb")
    ]
    usage_events_record(
        tenant=tenant, events=usage_events_validate(payload={"events": events}, now=now), now=now
    )
    usage_aggregate(trigger="test")
    usage_reports_prepare()
    usage_reports_send(sleep=no_sleep)
    assert _stripe_hour(local_stripe, tenant, hour) == 5

    MeterFilterFactory(meter=meter, property="kind", operator="eq", values=["a"])
    meter_filters_changed(meter=meter)
    usage_aggregate(trigger="test")
    usage_reports_prepare()
    usage_reports_send(sleep=no_sleep)

    assert HourlyAggregate.objects.get(tenant=tenant, meter=meter, hour=hour).value == 3
    assert _stripe_hour(local_stripe, tenant, hour) == 3
