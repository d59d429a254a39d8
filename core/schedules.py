"""The platform's periodic tasks, declared once in settings.PERIODIC_TASKS, synced into django-celery-beat.

`periodic_tasks_sync()` runs after every `migrate` (post_migrate, see core/apps.py) and from
`manage.py sync_schedules`. For each declared task it creates the PeriodicTask, matched by name, with
its crontab or interval, when none exists; it never changes one that exists, so an operator's edit
in admin (another time, disabled, other arguments) survives every deploy. A task an operator deletes
comes back at the next migrate: disable it instead. Running it again changes nothing (idempotent).
"""

from __future__ import annotations

import json

from django.apps import apps as global_apps
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, transaction
from django.utils import timezone

CRONTAB_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")


def periodic_tasks_sync(
    *, declared: list[dict] | None = None, apps=global_apps, using: str = DEFAULT_DB_ALIAS
) -> list[str]:
    """Create every declared periodic task that does not exist yet; return the names created."""
    declared = settings.PERIODIC_TASKS if declared is None else declared
    try:
        PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
        CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
        IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    except LookupError:  # a migrate that stopped before django-celery-beat's tables
        return []
    created = []
    with transaction.atomic(using=using):
        existing = set(PeriodicTask.objects.using(using).values_list("name", flat=True))
        for entry in declared:
            if entry["name"] in existing:
                continue
            fields = {
                "task": entry["task"],
                "description": entry.get("description", ""),
                "kwargs": json.dumps(entry.get("kwargs", {})),
                "expire_seconds": entry.get("expire_seconds"),
            }
            if "crontab" in entry:
                schedule = dict.fromkeys(CRONTAB_FIELDS, "*") | entry["crontab"]
                fields["crontab"] = _first_or_create(CrontabSchedule, using, **schedule, timezone="UTC")
            else:
                fields["interval"] = _first_or_create(IntervalSchedule, using, **entry["interval"])
            PeriodicTask.objects.using(using).create(name=entry["name"], **fields)
            created.append(entry["name"])
        if created:
            # What django-celery-beat's save signal does (historical models send none): a running
            # beat sees the change and reloads its schedule.
            apps.get_model("django_celery_beat", "PeriodicTasks").objects.using(using).update_or_create(
                ident=1, defaults={"last_update": timezone.now()}
            )
    return created


def _first_or_create(model, using, **fields):
    # Not get_or_create: schedules have no unique constraint, an operator may have made a twin.
    manager = model.objects.using(using)
    return manager.filter(**fields).order_by("pk").first() or manager.create(**fields)


def sync_after_migrate(
    sender, *, apps=global_apps, using=DEFAULT_DB_ALIAS, verbosity=1, stdout=None, **kwargs
):
    """post_migrate receiver: the declared schedules exist once the tables do."""
    created = periodic_tasks_sync(apps=apps, using=using)
    if created and verbosity >= 1 and stdout is not None:
        stdout.write(f"  Created periodic tasks: {', '.join(created)}\n")
