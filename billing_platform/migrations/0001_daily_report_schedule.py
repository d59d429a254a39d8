"""The daily usage report's schedule in django-celery-beat, so operators see and edit it in admin."""

from django.db import migrations

TASK_NAME = "Send the daily usage report (daily)"


def create_schedule(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    # 07:00 UTC: an hour after the 06:00 cost check, so yesterday's AWS cost is in the report.
    crontab, _ = CrontabSchedule.objects.get_or_create(
        minute="0", hour="7", day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
    )
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={
            "task": "billing_platform.send_daily_report",
            "crontab": crontab,
            "description": "E-mails yesterday's usage, estimated revenue, failures and AWS cost to "
            "OPERATOR_EMAILS, once per day.",
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
