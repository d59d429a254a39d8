"""Operator actions on the tenant page: confirmation first where something goes out, then the
effect, the admin log entry and, for long actions, the operator job's state."""

import time
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone
from djstripe.models import Invoice

from billing_platform.celery import app as celery_app
from console import operator_jobs
from console.models import OperatorJob
from console.operator_jobs import operator_job_queue, operator_job_run, run_operator_job
from console.tests.factories import OperatorJobFactory
from console.tests.page_support import parse
from costwatch.models import CostCheckRun
from metering.aggregation import usage_aggregate, usage_mark_for_recompute
from metering.ingest import meter_cache, usage_events_record, usage_events_validate
from metering.models import AggregationRun, HourlyAggregate, PendingHour
from metering.tests.factories import MeterFactory, UsageEventFactory
from stripe_sync.client import stripe_client
from stripe_sync.models import ReconciliationRun
from stripe_sync.tests.support import link_customer
from tenants.models import Tenant, TenantAPIKey, TenantChange
from tenants.services import api_key_issue, api_key_revoke
from tenants.tests.factories import TenantFactory
from tenants.tests.support import slug_of_key

pytestmark = pytest.mark.django_db

HOUR = timedelta(hours=1)


@pytest.fixture(autouse=True)
def _fresh_meter_cache():
    # Meters get new ids in every test; the ingestion cache must not outlive them.
    meter_cache.clear()
    yield
    meter_cache.clear()


@pytest.fixture
def eager_celery():
    """Queued tasks run at once, in this process and transaction (the broker is not involved)."""
    previous = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = True, False
    yield celery_app
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = previous


@pytest.fixture
def run_on_commit(django_capture_on_commit_callbacks):
    """POST through the admin client, running what the view queued after commit."""

    def post(client, url, data=None):
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(url, data or {})

    return post


def url(name: str, tenant, *args) -> str:
    return reverse(f"admin:tenants_tenant_{name}", args=[tenant.pk, *args])


def page_url(tenant) -> str:
    return reverse("admin:tenants_tenant_change", args=[tenant.pk])


def log_messages(obj) -> list[str]:
    return list(
        LogEntry.objects.filter(object_id=str(obj.pk), content_type__model=obj._meta.model_name)
        .order_by("id")
        .values_list("change_message", flat=True)
    )


def hour_ago(hours: int) -> datetime:
    return (timezone.now() - timedelta(hours=hours)).replace(minute=0, second=0, microsecond=0)


def ingest(tenant, meter, hour: datetime, count: int, *, prefix: str = "e") -> None:
    events = [
        {
            "id": f"{prefix}-{hour:%d%H}-{i}",
            "meter": meter.code,
            "timestamp": (hour + timedelta(seconds=i)).isoformat(),
        }
        for i in range(count)
    ]
    now = timezone.now()
    usage_events_record(
        tenant=tenant, events=usage_events_validate(payload={"events": events}, now=now), now=now
    )


def late_event_without_mark(tenant, meter, hour: datetime, event_id: str) -> None:
    """An event stored without marking its hour pending: the aggregate no longer matches the events."""
    UsageEventFactory(
        tenant=tenant,
        meter=meter,
        event_id=event_id,
        timestamp=hour,
        quantity=Decimal(1),
        received_at=timezone.now(),
    )


def confirmation(response) -> str:
    assert response.status_code == 200
    page = parse(response.content)
    assert page.all("operation-confirm"), "not a confirmation page"
    return page.one("operation-confirm").text


# --- The service parameter -------------------------------------------------------------------------


def test_mark_for_recompute_until_bounds_the_range(tenant, other_tenant, api_calls):
    hours = [hour_ago(n) for n in (5, 4, 3, 2)]
    for hour in hours:
        ingest(tenant, api_calls, hour, 1)
        ingest(other_tenant, api_calls, hour, 1)
    usage_aggregate(trigger="test")

    marked = usage_mark_for_recompute(since=hours[1], until=hours[3], tenant_id=tenant.pk)

    assert marked.marked == 2
    assert sorted(PendingHour.objects.values_list("tenant_id", "hour")) == [
        (tenant.pk, hours[1]),
        (tenant.pk, hours[2]),
    ]
    PendingHour.objects.all().delete()
    # Without `until`, everything since `since`, as before.
    assert usage_mark_for_recompute(since=hours[1]).marked == 6


# --- Re-aggregate ----------------------------------------------------------------------------------


def test_reaggregate_asks_first_then_recomputes_the_range_on_a_worker(
    admin_client, admin_user, tenant, api_calls, eager_celery, run_on_commit
):
    inside, outside = hour_ago(3), hour_ago(6)
    ingest(tenant, api_calls, inside, 2)
    ingest(tenant, api_calls, outside, 2)
    usage_aggregate(trigger="test")
    late_event_without_mark(tenant, api_calls, inside, "late-1")
    late_event_without_mark(tenant, api_calls, outside, "late-2")

    text = confirmation(admin_client.get(url("reaggregate", tenant)))
    assert "the next usage report sends Stripe the difference" in text
    assert not OperatorJob.objects.exists()

    response = run_on_commit(
        admin_client,
        url("reaggregate", tenant),
        {"first_hour": f"{inside - HOUR:%Y-%m-%dT%H:%M}", "last_hour": f"{inside:%Y-%m-%dT%H:%M}"},
    )

    assert response.status_code == 302
    assert response["Location"] == page_url(tenant) + "#operator-jobs"
    job = OperatorJob.objects.get()
    assert (job.kind, job.status, job.tenant, job.requested_by) == (
        "reaggregate",
        "succeeded",
        tenant,
        admin_user,
    )
    assert job.params == {"since": (inside - HOUR).isoformat(), "until": (inside + HOUR).isoformat()}
    assert job.result["hours_marked"] == 1
    assert job.result["hours_changed"] == 1
    assert "Marked 1 hour(s)" in job.progress
    assert job.started_at is not None
    assert job.finished_at is not None
    assert AggregationRun.objects.get(pk=job.result["run"]).trigger == "admin"
    assert HourlyAggregate.objects.get(tenant=tenant, hour=inside).value == 3
    assert HourlyAggregate.objects.get(tenant=tenant, hour=outside).value == 2  # outside the range
    [message] = log_messages(tenant)
    assert message.startswith(
        f"Re-aggregation of {inside - HOUR:%Y-%m-%d %H:00} to {inside:%Y-%m-%d %H:00} UTC"
    )
    assert f"operator job {job.pk}" in message

    # The page lists the finished job, and does not poll.
    page = parse(admin_client.get(page_url(tenant)).content)
    row = page.one("job-row", data_job=str(job.pk))
    assert row.attr("data-state") == "succeeded"
    assert page.one("operator-jobs").attr("data-running") == "0"


@pytest.mark.parametrize(
    ("first", "last", "error"),
    [
        (3, 5, "The last hour must not be before the first."),
        (-3, -5, "The first hour is in the future"),
        (24 * 50, 1, "At most 45 days at once."),
    ],
)
def test_reaggregate_rejects_a_bad_range(admin_client, tenant, first, last, error):
    data = {
        "first_hour": f"{hour_ago(first):%Y-%m-%dT%H:%M}",
        "last_hour": f"{hour_ago(last):%Y-%m-%dT%H:%M}",
    }
    response = admin_client.post(url("reaggregate", tenant), data)
    assert error in confirmation(response)
    assert not OperatorJob.objects.exists()


def test_reaggregate_wants_whole_hours(admin_client, tenant):
    response = admin_client.post(
        url("reaggregate", tenant), {"first_hour": "2026-01-01T10:30", "last_hour": "2026-01-01T11:00"}
    )
    assert "Whole hours only" in confirmation(response)


# --- Stripe ----------------------------------------------------------------------------------------


def test_resync_from_stripe_mirrors_the_tenants_objects(
    admin_client, tenant, local_stripe, eager_celery, run_on_commit
):
    customer_id = link_customer(tenant)
    stripe_client().v1.invoices.create(params={"customer": customer_id})
    assert not Invoice.objects.exists()

    page = parse(admin_client.get(page_url(tenant)).content)
    assert page.all("action-resync")  # reads only: a plain button, no confirmation page
    response = run_on_commit(admin_client, url("resync", tenant))

    assert response.status_code == 302
    job = OperatorJob.objects.get()
    assert (job.kind, job.status) == ("stripe_resync", "succeeded"), job.error
    assert job.result["customers"] == 1
    assert job.result["invoices"] == 1
    assert Invoice.objects.get().customer_id == customer_id
    assert log_messages(tenant) == [f"Resync from Stripe (operator job {job.pk})"]
    page = parse(admin_client.get(page_url(tenant)).content)
    assert len(page.all("invoice-row")) == 1


def test_resync_without_a_customer_fails_with_a_reason(admin_client, tenant, eager_celery, run_on_commit):
    run_on_commit(admin_client, url("resync", tenant))
    job = OperatorJob.objects.get()
    assert job.status == "failed"
    assert "onboard it first" in job.error


def test_onboard_button_leads_to_the_existing_confirmation_then_onboards(admin_client, tenant, local_stripe):
    page = parse(admin_client.get(page_url(tenant)).content)
    button = page.one("action-onboard")
    form = next(f for f in page.all(tag="form") if button in f.all())
    fields = {i.attr("name"): i.attr("value") for i in form.all(tag="input")}
    assert form.attr("action") == reverse("admin:tenants_tenant_changelist")
    assert fields["action"] == "onboard_to_stripe"
    assert fields["_selected_action"] == str(tenant.pk)

    response = admin_client.post(form.attr("action"), fields)
    assert response.status_code == 200
    assert "This sends data to Stripe." in response.content.decode()
    tenant.refresh_from_db()
    assert tenant.stripe_customer_id is None

    admin_client.post(form.attr("action"), {**fields, "apply": "1"})
    tenant.refresh_from_db()
    assert tenant.stripe_customer_id.startswith("cus_")
    assert any(message.startswith("Onboarded to Stripe") for message in log_messages(tenant))


# --- API keys --------------------------------------------------------------------------------------


def test_rotate_key_asks_then_shows_the_new_key_once_and_revokes_the_old(admin_client, tenant):
    issued = api_key_issue(tenant=tenant, name="production")
    old = issued.api_key

    text = confirmation(admin_client.get(url("rotate_key", tenant, old.pk)))
    assert "revoked at the same moment" in text
    old.refresh_from_db()
    assert not old.revoked
    # A bare POST (not from the confirmation page) changes nothing either.
    confirmation(admin_client.post(url("rotate_key", tenant, old.pk), {"name": "x"}))
    assert TenantAPIKey.objects.count() == 1

    response = admin_client.post(
        url("rotate_key", tenant, old.pk), {"confirmed": "yes", "name": "production 2"}
    )

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    new_secret = parse(response.content).one("new-key").text
    old.refresh_from_db()
    assert old.revoked
    new = TenantAPIKey.objects.get(revoked=False)
    assert new.name == "production 2"
    assert new_secret.startswith(new.prefix)
    assert slug_of_key(new_secret) == tenant.slug
    assert log_messages(tenant) == [f"Rotated API key {old.prefix}: revoked, replaced by {new.prefix}"]
    assert log_messages(old) == [f"Revoked by rotation (replaced by {new.prefix})"]
    # Shown once: the tenant page has only the prefix.
    assert new_secret not in admin_client.get(page_url(tenant)).content.decode()


def test_rotating_a_revoked_key_or_another_tenants_key_is_refused(admin_client, tenant, other_tenant):
    revoked = api_key_issue(tenant=tenant, name="old").api_key
    api_key_revoke(api_key=revoked)
    response = admin_client.post(url("rotate_key", tenant, revoked.pk), {"confirmed": "yes", "name": "n"})
    assert response.status_code == 302
    assert TenantAPIKey.objects.count() == 1

    foreign = api_key_issue(tenant=other_tenant, name="theirs").api_key
    assert admin_client.get(url("rotate_key", tenant, foreign.pk)).status_code == 404


# --- Suspend and reactivate -----------------------------------------------------------------------


def test_suspend_with_a_reason_then_reactivate(admin_client, admin_user, tenant):
    confirmation(admin_client.get(url("suspend", tenant)))
    tenant.refresh_from_db()
    assert tenant.status == Tenant.Status.ACTIVE

    response = admin_client.post(url("suspend", tenant), {"confirmed": "yes", "reason": "unpaid for 90 days"})

    assert response.status_code == 302
    tenant.refresh_from_db()
    assert tenant.status == Tenant.Status.SUSPENDED
    change = TenantChange.objects.get(tenant=tenant, field="status")
    assert (change.actor, change.source, change.reason) == (admin_user, "admin", "unpaid for 90 days")
    assert log_messages(tenant) == ["Suspended: unpaid for 90 days"]
    page = parse(admin_client.get(page_url(tenant)).content)
    assert page.one("tenant-status").text == "Suspended"
    assert page.all("action-reactivate")

    admin_client.post(url("reactivate", tenant))
    tenant.refresh_from_db()
    assert tenant.status == Tenant.Status.ACTIVE
    assert log_messages(tenant)[-1] == "Reactivated"


# --- Budget check and reconciliation --------------------------------------------------------------


def test_budget_check_asks_first_then_runs_the_costwatch_check(
    admin_client, tenant, aws, settings, eager_celery, run_on_commit
):
    settings.COSTWATCH_SNS_TOPIC_ARN = ""
    settings.OPERATOR_EMAILS = []
    assert "Alerts that are due are sent" in confirmation(admin_client.get(url("budget_check", tenant)))
    confirmation(run_on_commit(admin_client, url("budget_check", tenant)))  # not confirmed: asks again
    assert not OperatorJob.objects.exists()

    response = run_on_commit(admin_client, url("budget_check", tenant), {"confirmed": "yes"})

    assert response.status_code == 302
    job = OperatorJob.objects.get()
    assert (job.kind, job.status, job.tenant) == ("budget_check", "succeeded", tenant), job.error
    run = CostCheckRun.objects.get(pk=job.result["run"])
    assert (run.trigger, run.status) == ("admin", CostCheckRun.Status.SUCCEEDED)
    assert log_messages(tenant) == [f"Budget check (operator job {job.pk})"]


def test_a_failed_budget_check_fails_the_job_with_its_error(
    admin_client, tenant, settings, eager_celery, run_on_commit
):
    settings.COSTWATCH_CURRENCY = "dollars"  # the run fails with a one-line configuration error
    run_on_commit(admin_client, url("budget_check", tenant), {"confirmed": "yes"})
    job = OperatorJob.objects.get()
    assert job.status == "failed"
    assert "COSTWATCH_CURRENCY" in job.error
    assert job.progress.startswith("Failed: cost check run")


def test_reconciliation_asks_first_then_runs(admin_client, tenant, local_stripe, eager_celery, run_on_commit):
    assert "nothing is billed twice" in confirmation(admin_client.get(url("reconcile", tenant)))

    run_on_commit(admin_client, url("reconcile", tenant), {"confirmed": "yes"})

    job = OperatorJob.objects.get()
    assert (job.kind, job.status) == ("reconciliation", "succeeded"), job.error
    run = ReconciliationRun.objects.get(pk=job.result["run"])
    assert (run.trigger, run.status) == ("admin", "succeeded")
    assert log_messages(tenant) == [f"Reconciliation (operator job {job.pk})"]


# --- Jobs: progress, polling, failures ------------------------------------------------------------


def test_page_polls_while_a_job_is_queued_and_the_json_view_reports_it(admin_client, admin_user, tenant):
    job = operator_job_queue(kind=OperatorJob.Kind.STRIPE_RESYNC, tenant=tenant, requested_by=admin_user)

    page = parse(admin_client.get(page_url(tenant)).content)
    jobs = page.one("operator-jobs")
    assert jobs.attr("data-running") == "1"
    assert jobs.attr("data-poll-url") == url("jobs", tenant)
    assert page.one("job-row").attr("data-state") == "queued"
    assert any("fetch(" in script.text for script in page.all(tag="script"))

    data = admin_client.get(url("jobs", tenant)).json()
    assert data["running"] is True
    assert data["jobs"][0] | {"result": None} == {
        "id": job.pk,
        "kind": "stripe_resync",
        "kind_label": "Resync from Stripe",
        "state": "queued",
        "state_label": "Queued",
        "progress": "Waiting for a worker",
        "started_at": None,
        "finished_at": None,
        "result": None,
    }


def test_the_jobs_view_is_for_staff_only(client, tenant):
    response = client.get(url("jobs", tenant))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_staff_who_may_only_view_tenants_cannot_run_actions(client, tenant, django_user_model):
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_tenant"))
    client.force_login(viewer)
    page = parse(client.get(page_url(tenant)).content)
    assert page.all("tenant-overview")
    assert not page.all("action-reaggregate")
    assert client.get(url("jobs", tenant)).status_code == 200
    assert client.post(url("resync", tenant)).status_code == 403
    assert client.post(url("suspend", tenant), {"confirmed": "yes"}).status_code == 403
    assert not OperatorJob.objects.exists()


def test_an_unexpected_error_fails_the_job_with_its_traceback(
    tenant, admin_user, eager_celery, monkeypatch, run_on_commit
):
    def explode(job, progress):
        progress("half way")
        raise RuntimeError("disk full")

    monkeypatch.setitem(operator_jobs.RUNNERS, OperatorJob.Kind.STRIPE_RESYNC, explode)
    job = operator_job_queue(kind=OperatorJob.Kind.STRIPE_RESYNC, tenant=tenant, requested_by=admin_user)
    result = run_operator_job.apply(args=[job.pk])

    assert result.failed()
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.progress == "Failed: RuntimeError: disk full"
    assert "Traceback" in job.error


def test_a_job_that_cannot_be_queued_says_so(
    tenant, admin_user, monkeypatch, django_capture_on_commit_callbacks
):
    def broker_down(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(run_operator_job, "apply_async", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        job = operator_job_queue(kind=OperatorJob.Kind.BUDGET_CHECK, tenant=tenant, requested_by=admin_user)
    job.refresh_from_db()
    assert job.status == "failed"
    assert "redis is down" in job.error


def test_a_redelivered_running_job_runs_again_but_a_finished_one_does_not(tenant, monkeypatch):
    calls = []
    monkeypatch.setitem(
        operator_jobs.RUNNERS,
        OperatorJob.Kind.BUDGET_CHECK,
        lambda job, progress: calls.append(job.pk) or operator_jobs.Outcome("done", {}),
    )
    job = OperatorJobFactory(kind=OperatorJob.Kind.BUDGET_CHECK, tenant=tenant, status="running", attempts=1)

    assert operator_job_run(job_id=job.pk).status == "succeeded"
    assert operator_job_run(job_id=job.pk) is None
    assert calls == [job.pk]
    job.refresh_from_db()
    assert job.attempts == 2


# --- A real worker ---------------------------------------------------------------------------------


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_real_worker_runs_a_reaggregation_job_to_succeeded(celery_worker_process, admin_client):
    tenant = TenantFactory(slug="worker-tenant", name="Worker tenant")
    meter = MeterFactory(code="worker_calls", name="calls", aggregation="count")
    hour = hour_ago(2)
    ingest(tenant, meter, hour, 3, prefix="w")
    usage_aggregate(trigger="test")
    late_event_without_mark(tenant, meter, hour, "w-late")

    response = admin_client.post(
        url("reaggregate", tenant),
        {"first_hour": f"{hour:%Y-%m-%dT%H:%M}", "last_hour": f"{hour:%Y-%m-%dT%H:%M}"},
    )
    assert response.status_code == 302

    job = OperatorJob.objects.get(tenant=tenant)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.is_finished:
            break
        time.sleep(0.2)
    assert job.status == "succeeded", (job.status, job.progress, job.error)
    assert job.attempts == 1
    assert HourlyAggregate.objects.get(tenant=tenant, meter=meter, hour=hour).value == 4
    data = admin_client.get(url("jobs", tenant)).json()
    assert data["running"] is False
    assert data["jobs"][0]["state"] == "succeeded"
