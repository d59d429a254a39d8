"""The hourly aggregation schedule in django-celery-beat, so operators see and edit it in admin."""

from django.db import migrations

TASK_NAME = "Aggregate usage (hourly)"


def create_schedule(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    # Minute 2: events stamped in the last seconds of an hour have arrived by then.
    crontab, _ = CrontabSchedule.objects.get_or_create(
        minute="2", hour="*", day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
    )
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={
            "task": "metering.aggregate_usage",
            "crontab": crontab,
            "description": "Aggregates every hour that received usage events since the last run.",
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("metering", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
