"""Operator jobs: long admin actions queued to a worker, with their progress on an OperatorJob row.

`operator_job_queue` writes the row and queues `billing_platform.run_operator_job` after commit;
the task calls `operator_job_run`, which claims the row and runs the job's kind through the same
services as the periodic tasks (usage_aggregate, tenant_stripe_sync, cost_check_run,
usage_reconcile), so a job does exactly what the hourly or daily run does, on demand.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import stripe
from celery import shared_task
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from console.models import OperatorJob
from core.parsing import ParseError, parse_datetime
from core.permissions import RUN_OPERATOR_JOBS
from costwatch.models import CostCheckRun
from costwatch.services import cost_check_run, run_totals
from metering.aggregation import usage_aggregate, usage_mark_for_recompute
from stripe_sync.client import StripeNotConfigured
from stripe_sync.models import ReconciliationRun
from stripe_sync.reconciliation import usage_reconcile
from stripe_sync.sync import tenant_stripe_sync
from tenants.models import Tenant

logger = logging.getLogger(__name__)

TRIGGER = "admin"
# Failures an operator can act on from the message alone: recorded without a traceback.
EXPECTED_FAILURES = (StripeNotConfigured, stripe.StripeError)


class JobFailed(Exception):
    """The job ran and its service reported a failure (a failed run row): the message says why."""


@dataclass(frozen=True)
class Outcome:
    summary: str  # one line for the page
    result: dict  # what the service returned, for the row


Progress = Callable[[str], None]


# The permission each kind of job needs from whoever queues it (core.permissions). A new
# kind without an entry cannot be queued at all (KeyError), rather than by anyone.
JOB_PERMISSIONS: dict[str, str] = {
    OperatorJob.Kind.REAGGREGATE: RUN_OPERATOR_JOBS,
    OperatorJob.Kind.STRIPE_RESYNC: RUN_OPERATOR_JOBS,
    OperatorJob.Kind.BUDGET_CHECK: RUN_OPERATOR_JOBS,
    OperatorJob.Kind.RECONCILIATION: RUN_OPERATOR_JOBS,
}


def operator_job_queue(*, kind: str, tenant: Tenant | None, requested_by, params: dict | None = None):
    """Record a job and queue it for a worker once the transaction commits.

    `requested_by` must hold the kind's permission (JOB_PERMISSIONS): PermissionDenied otherwise, and
    nothing is recorded. Every job has an operator who asked for it.
    """
    permission = JOB_PERMISSIONS[kind]
    if requested_by is None or not requested_by.has_perm(permission):
        raise PermissionDenied(f"queuing a {kind} job needs the permission {permission}")
    job = OperatorJob.objects.create(
        kind=kind,
        tenant=tenant,
        requested_by=requested_by,
        params=params or {},
        task_id=str(uuid.uuid4()),
        progress="Waiting for a worker",
    )
    transaction.on_commit(partial(_enqueue, job.pk, job.task_id))
    return job


def _enqueue(job_id: int, task_id: str) -> None:
    try:
        run_operator_job.apply_async(args=[job_id], task_id=task_id)
    except Exception as exc:
        # The broker is unreachable: say so on the row rather than leave it queued forever.
        logger.exception("could not queue operator job %s", job_id)
        OperatorJob.objects.filter(pk=job_id, status=OperatorJob.Status.QUEUED).update(
            status=OperatorJob.Status.FAILED,
            progress="Could not be queued",
            error=f"could not queue the job: {type(exc).__name__}: {exc}",
            finished_at=timezone.now(),
        )


def _progress(job_id: int, text: str) -> None:
    OperatorJob.objects.filter(pk=job_id).update(progress=text[:500], updated_at=timezone.now())


@shared_task(name="billing_platform.run_operator_job")
def run_operator_job(job_id: int) -> dict | None:
    """The Celery entry point: run one queued job; its progress and result are on the row."""
    job = operator_job_run(job_id=job_id)
    return None if job is None else {"job": job.pk, "state": job.status, "result": job.result}


def operator_job_run(*, job_id: int) -> OperatorJob | None:
    """Claim a job and run it; None when it is gone or already finished.

    A job still "running" is claimed again: tasks ack late, so that is a redelivery after its
    worker died, and every service a job runs is safe to run twice.
    """
    now = timezone.now()
    claimed = OperatorJob.objects.filter(pk=job_id, status__in=OperatorJob.OPEN_STATUSES).update(
        status=OperatorJob.Status.RUNNING,
        started_at=now,
        attempts=F("attempts") + 1,
        progress="Started",
        updated_at=now,
    )
    if claimed != 1:
        return None
    job = OperatorJob.objects.select_related("tenant").get(pk=job_id)
    runner = RUNNERS[job.kind]
    try:
        outcome = runner(job, partial(_progress, job.pk))
    except (JobFailed, *EXPECTED_FAILURES) as exc:
        _finish(job, status=OperatorJob.Status.FAILED, progress=f"Failed: {exc}", error=str(exc))
    except Exception as exc:
        _finish(
            job,
            status=OperatorJob.Status.FAILED,
            progress=f"Failed: {type(exc).__name__}: {exc}",
            error=traceback.format_exc(),
        )
        raise
    else:
        _finish(job, status=OperatorJob.Status.SUCCEEDED, progress=outcome.summary, result=outcome.result)
    return job


def _finish(job: OperatorJob, *, status: str, progress: str, error: str = "", result: dict | None = None):
    job.progress = progress[:500]
    job.result = result or {}
    job.finish(status, error=error, update_fields=["progress", "result", "updated_at"])


def _tenant_of(job: OperatorJob) -> Tenant:
    if job.tenant is None:
        raise JobFailed("the tenant no longer exists")
    return job.tenant


# --- The kinds ------------------------------------------------------------------------------------


def _reaggregate(job: OperatorJob, progress: Progress) -> Outcome:
    """Mark the tenant's hours in [since, until) pending, then aggregate as the hourly task does."""
    tenant = _tenant_of(job)
    try:
        since = parse_datetime(job.params.get("since"), what="since")
        until = parse_datetime(job.params.get("until"), what="until")
    except ParseError as exc:
        raise JobFailed(str(exc)) from None
    # Hours before the retention horizon are skipped by the service (their raw events may be partly
    # pruned): the outcome says how many kept their aggregates.
    marked = usage_mark_for_recompute(since=since, until=until, tenant_id=tenant.pk)
    skipped = (
        f"; {marked.skipped} hour(s) before {marked.horizon:%Y-%m-%d %H:00} UTC skipped (raw events past "
        "retention): their aggregates stand"
        if marked.skipped
        else ""
    )
    progress(f"Marked {marked.marked} hour(s) with events for recompute{skipped}; aggregating")
    run = usage_aggregate(trigger=TRIGGER)
    result = {
        "hours_marked": marked.marked,
        "hours_skipped_past_retention": marked.skipped,
        "run": run.pk,
        "hours_aggregated": run.hours_aggregated,
        "hours_changed": run.hours_changed,
    }
    return Outcome(
        f"Marked {marked.marked} hour(s){skipped}; aggregation run {run.pk} aggregated "
        f"{run.hours_aggregated} hour(s), {run.hours_changed} changed (differences go to Stripe with "
        "the next report)",
        result,
    )


def _stripe_resync(job: OperatorJob, progress: Progress) -> Outcome:
    tenant = _tenant_of(job)
    if not tenant.stripe_customer_id:
        raise JobFailed("the tenant has no Stripe customer yet: onboard it first")
    progress(f"Reading customer {tenant.stripe_customer_id}, its subscriptions and invoices from Stripe")
    result = tenant_stripe_sync(tenant=tenant)
    if result.failed and not any(result.counts.values()):
        raise JobFailed("; ".join(result.errors) or "nothing could be mirrored")
    return Outcome(f"Mirrored from Stripe: {result.summary()}", result.as_dict())


def _budget_check(job: OperatorJob, progress: Progress) -> Outcome:
    progress("Reading costs from Cost Explorer and judging budgets")
    run = cost_check_run(trigger=TRIGGER)
    totals = run_totals(run)
    if run.status == CostCheckRun.Status.FAILED:
        raise JobFailed(f"cost check run {run.pk} failed: {totals['error']}")
    return Outcome(
        f"Cost check run {run.pk} {run.get_status_display().lower()}: {run.alerts_sent} alert(s) sent, "
        f"{run.ce_requests} Cost Explorer request(s)",
        totals,
    )


def _reconciliation(job: OperatorJob, progress: Progress) -> Outcome:
    progress("Comparing local usage, what was sent and Stripe's summaries")
    run = usage_reconcile(trigger=TRIGGER)
    result = {"run": run.pk, "status": run.status, "differences": run.differences, "resent": run.resent}
    if run.status == ReconciliationRun.Status.FAILED:
        raise JobFailed(f"reconciliation run {run.pk} failed: {run.error}")
    return Outcome(
        f"Reconciliation run {run.pk}: {run.hours_checked} hour(s) checked, {run.differences} "
        f"difference(s), {run.resent} re-sent",
        result,
    )


RUNNERS: dict[str, Callable[[OperatorJob, Progress], Outcome]] = {
    OperatorJob.Kind.REAGGREGATE: _reaggregate,
    OperatorJob.Kind.STRIPE_RESYNC: _stripe_resync,
    OperatorJob.Kind.BUDGET_CHECK: _budget_check,
    OperatorJob.Kind.RECONCILIATION: _reconciliation,
}
