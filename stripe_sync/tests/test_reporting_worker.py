"""Reporting through real Celery workers, Redis and the local Stripe server, including SIGKILL."""

import os
import signal
import time
import uuid
from collections import defaultdict

import pytest

from conftest import start_celery_worker, stop_celery_worker
from metering.tests.factories import MeterFactory
from stripe_sync.models import UsageReport
from stripe_sync.tests.support import hour_ago, ingest, link_customer, link_meter, local_total, stripe_total
from tenants.tests.factories import TenantFactory

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True, serialized_rollback=True)]
# A queue of this run's own: a worker killed here leaves its message unacknowledged in Redis, which
# hands it back an hour later to whoever consumes that queue then; a solo worker running that old
# task at start-up answers no ping until it is done, and the kill would come too late.
DRILL_QUEUE = f"reporting-drill-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def customers(local_stripe):
    meter = MeterFactory(code="api_calls", name="API calls", unit="call", aggregation="count")
    link_meter(meter)
    tenants = [TenantFactory(slug=f"t{i}", name=f"T{i}") for i in range(6)]
    for tenant in tenants:
        link_customer(tenant)
    return meter, tenants


def values_per_identifier(server) -> dict[str, set[str]]:
    seen = defaultdict(set)
    for request in server.requests_to("/v2/billing/meter_event_stream"):
        for event in request.params.get("events", []):
            seen[event["identifier"]].add(event["payload"]["value"])
    for request in server.requests_to("/v1/billing/meter_events"):
        seen[request.params["identifier"]].add(request.params["payload"]["value"])
    return seen


def test_ingest_aggregate_report_on_the_worker_stripe_holds_local_totals(
    celery_worker_process, customers, local_stripe
):
    from metering.tasks import aggregate_usage
    from stripe_sync.tasks.reporting import report_usage

    meter, tenants = customers
    for n, tenant in enumerate(tenants):
        for hours_ago in range(1, 4):
            ingest(tenant, meter, hour_ago(hours_ago), [1] * (n + hours_ago))
    aggregate_usage.delay().get(timeout=60)
    result = report_usage.delay().get(timeout=120)
    assert result["sent"]["sent"] == 18
    for tenant in tenants:
        assert stripe_total(local_stripe, tenant.stripe_customer_id, "api_calls") == local_total(
            tenant, meter
        )


def test_sigkill_in_the_middle_of_a_reporting_run_loses_nothing_and_bills_nothing_twice(
    worker_env, customers, local_stripe, tmp_path
):
    from stripe_sync.tasks.reporting import report_usage

    meter, tenants = customers
    for tenant in tenants:
        for hours_ago in range(1, 35):  # 6 tenants x 34 hours = 204 reports: 3+ stream calls
            ingest(tenant, meter, hour_ago(hours_ago), [1, 1, 1])
    env = {**worker_env, "STRIPE_REPORTING_LEASE_SECONDS": "3"}
    # Each stream call takes a second and takes effect before the answer (the dangerous case: a
    # kill after Stripe stored the events, before the rows were marked sent).
    local_stripe.delay_for(60, 1.0, path="/v2/billing/meter_event_stream", when="after")
    worker = start_celery_worker(env=env, log=tmp_path / "first.log", name="drill-1", queues=DRILL_QUEUE)
    try:
        # Sent once the worker answers pings: a solo worker busy with a task answers none.
        report_usage.apply_async(queue=DRILL_QUEUE)
        # The first 100 rows marked sent: the second call is then in flight (Stripe has stored its
        # events and holds the answer for a second), the third not yet made. Watched in the
        # database, not in the server's request log, whose lock a held answer can keep.
        deadline = time.monotonic() + 60
        while not UsageReport.objects.filter(status="sent").exists():
            assert time.monotonic() < deadline, "the worker never reported"
            time.sleep(0.02)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    statuses = set(UsageReport.objects.values_list("status", flat=True))
    assert "pending" in statuses, "the kill came too late to test anything"
    local_stripe.clear_faults()

    time.sleep(3.5)  # the dead sender's lease runs out
    worker = start_celery_worker(env=env, log=tmp_path / "second.log", name="drill-2", queues=DRILL_QUEUE)
    try:
        result = report_usage.apply_async(queue=DRILL_QUEUE).get(timeout=120)
    finally:
        stop_celery_worker(worker)
    assert result["sent"]["failed"] == 0
    assert set(UsageReport.objects.values_list("status", flat=True)) == {"sent"}
    for tenant in tenants:
        assert (
            stripe_total(local_stripe, tenant.stripe_customer_id, "api_calls")
            == local_total(tenant, meter)
            == 102
        )
    sent_twice_differently = {k: v for k, v in values_per_identifier(local_stripe).items() if len(v) > 1}
    assert sent_twice_differently == {}
    assert local_stripe.concurrent_meter_event_calls == []
