"""A no-op kept for the migration graph: it once created the usage reporting (hourly) and
reconciliation (nightly) schedules in django-celery-beat.

Every periodic task is declared in settings.PERIODIC_TASKS and created after each `migrate` by
core/schedules.py (or `manage.py sync_schedules`), which leaves a task that exists as it is.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("stripe_sync", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = []
