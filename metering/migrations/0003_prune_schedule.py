"""The daily retention job in django-celery-beat (editable in admin)."""

from django.db import migrations

TASK_NAME = "Prune raw usage events (daily)"


def create_schedule(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    crontab, _ = CrontabSchedule.objects.get_or_create(
        minute="30", hour="3", day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
    )
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={
            "task": "metering.prune_usage_events",
            "crontab": crontab,
            "kwargs": '{"older_than_days": 45}',
            "description": "Deletes raw usage events older than 45 days once aggregated; aggregates stay.",
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("metering", "0002_hourly_aggregation_schedule")]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
