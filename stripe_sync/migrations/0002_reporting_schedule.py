"""Beat schedules for usage reporting (hourly, after aggregation) and reconciliation (nightly)."""

from django.db import migrations

SCHEDULES = [
    {
        "name": "Report usage to Stripe (hourly)",
        "task": "stripe_sync.report_usage",
        # Minute 10: after the hourly aggregation (minute 2) has finished.
        "crontab": {"minute": "10", "hour": "*"},
        "description": "Writes outbox rows for changed hourly aggregates, sends them as Stripe meter events.",
    },
    {
        "name": "Reconcile usage with Stripe (nightly)",
        "task": "stripe_sync.reconcile_usage",
        "crontab": {"minute": "30", "hour": "3"},
        "description": "Compares local aggregates, what was sent and Stripe's meter event summaries.",
    },
]


def create_schedule(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for schedule in SCHEDULES:
        crontab, _ = CrontabSchedule.objects.get_or_create(
            **schedule["crontab"], day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
        )
        PeriodicTask.objects.get_or_create(
            name=schedule["name"],
            defaults={"task": schedule["task"], "crontab": crontab, "description": schedule["description"]},
        )


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[s["name"] for s in SCHEDULES]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("stripe_sync", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
