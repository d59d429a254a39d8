"""Every periodic task is declared once (settings.PERIODIC_TASKS) and synced into django-celery-beat,
where operators edit it in admin; the sync creates what is missing and never changes what exists."""

from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.sql import emit_post_migrate_signal
from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks

from conftest import beat_task
from core.schedules import periodic_tasks_sync

DECLARED = {entry["name"]: entry for entry in settings.PERIODIC_TASKS}

pytestmark = pytest.mark.django_db


def test_every_declared_schedule_runs_a_registered_celery_task():
    from billing_platform.celery import app

    app.loader.import_default_modules()  # autodiscovery, as a worker does at start
    unknown = sorted(entry["task"] for entry in DECLARED.values() if entry["task"] not in app.tasks)
    assert unknown == []
    assert len(DECLARED) == len(settings.PERIODIC_TASKS), "two declared tasks share a name"


def test_migrate_creates_every_declared_task_with_its_schedule():
    PeriodicTask.objects.all().delete()

    emit_post_migrate_signal(verbosity=0, interactive=False, db="default")

    assert set(PeriodicTask.objects.values_list("name", flat=True)) == set(DECLARED)
    prune = PeriodicTask.objects.get(name="Prune raw usage events (daily)")
    assert (prune.task, prune.kwargs, prune.enabled) == (
        "metering.prune_usage_events",
        '{"older_than_days": 45}',
        True,
    )
    assert (
        prune.crontab.minute,
        prune.crontab.hour,
        prune.crontab.day_of_week,
        str(prune.crontab.timezone),
    ) == (
        "30",
        "3",
        "*",
        "UTC",
    )
    heartbeat = PeriodicTask.objects.get(name="celery-beat-heartbeat")
    assert (heartbeat.interval.every, heartbeat.interval.period, heartbeat.expire_seconds) == (
        60,
        "seconds",
        60,
    )


def test_the_sync_never_overwrites_an_operators_edit_and_reports_what_it_created():
    periodic_tasks_sync()
    report = beat_task("billing_platform.send_daily_report")
    # An operator moves the report to 08:30 and disables the cost check in admin.
    report.crontab = CrontabSchedule.objects.create(minute="30", hour="8", timezone="UTC")
    report.save()
    PeriodicTask.objects.filter(task="costwatch.check_costs").update(enabled=False)
    PeriodicTask.objects.filter(task="metering.aggregate_usage").delete()

    PeriodicTasks.objects.all().delete()
    assert periodic_tasks_sync() == ["Aggregate usage (hourly)"]
    assert PeriodicTasks.last_change() is not None  # a running beat reloads its schedule
    assert periodic_tasks_sync() == []  # idempotent

    report = beat_task("billing_platform.send_daily_report")
    assert (report.crontab.hour, report.crontab.minute) == ("8", "30")
    assert not beat_task("costwatch.check_costs").enabled
    assert PeriodicTask.objects.filter(task="billing_platform.send_daily_report").count() == 1
    assert PeriodicTask.objects.count() == len(DECLARED)


def test_sync_schedules_command_says_what_it_created():
    PeriodicTask.objects.filter(name="Check AWS costs (daily)").delete()

    out = StringIO()
    call_command("sync_schedules", stdout=out)
    assert out.getvalue().strip() == "Created 1 periodic task(s): Check AWS costs (daily)"

    out = StringIO()
    call_command("sync_schedules", stdout=out)
    assert out.getvalue().strip() == "Every declared periodic task exists; none was changed."
