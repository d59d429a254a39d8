"""Beat schedule: every 10 minutes, queue again Stripe events whose processing task was lost."""

from django.db import migrations

TASK_NAME = "Requeue stale Stripe webhook events"


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=10, period="minutes")
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={
            "task": "stripe_sync.requeue_stale_webhook_events",
            "interval": every,
            "description": "Events stored but not processed for 10 minutes (a lost task) are queued again.",
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("stripe_sync", "0002_reporting_schedule"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
