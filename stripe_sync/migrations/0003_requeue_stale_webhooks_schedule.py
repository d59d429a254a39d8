"""A no-op kept for the migration graph: it once created the stale webhook requeue schedule
(every 10 minutes) in django-celery-beat.

Every periodic task is declared in settings.PERIODIC_TASKS and created after each `migrate` by
core/schedules.py (or `manage.py sync_schedules`), which leaves a task that exists as it is.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("stripe_sync", "0002_reporting_schedule"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = []
