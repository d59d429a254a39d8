"""The daily Cost Explorer check in django-celery-beat, so operators see and edit it in admin."""

from django.db import migrations

TASK_NAME = "Check AWS costs (daily)"


def create_schedule(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    # 06:00 UTC: Cost Explorer has most of yesterday's costs by then (it refreshes several times a day).
    crontab, _ = CrontabSchedule.objects.get_or_create(
        minute="0", hour="6", day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
    )
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={
            "task": "costwatch.check_costs",
            "crontab": crontab,
            "description": "Reads yesterday's and the month's AWS costs from Cost Explorer, judges every "
            "budget, sends alerts and bills pass-through overages.",
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("costwatch", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
