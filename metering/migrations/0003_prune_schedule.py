"""A no-op kept for the migration graph: it once created the daily retention job's schedule
in django-celery-beat.

Every periodic task is declared in settings.PERIODIC_TASKS and created after each `migrate` by
core/schedules.py (or `manage.py sync_schedules`), which leaves a task that exists as it is.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("metering", "0002_hourly_aggregation_schedule")]

    operations = []
