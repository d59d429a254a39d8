"""Rows of django-celery-beat's schedule tables, for tests of what the platform shows and does with them."""

import factory
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask


class CrontabScheduleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CrontabSchedule

    minute = "0"
    hour = "*"
    timezone = "UTC"


class IntervalScheduleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = IntervalSchedule

    every = 1
    period = IntervalSchedule.HOURS


class PeriodicTaskFactory(factory.django.DjangoModelFactory):
    """A periodic task; pass its schedule (`crontab=` or `interval=`), as django-celery-beat wants one."""

    class Meta:
        model = PeriodicTask

    name = factory.Sequence(lambda n: f"Periodic task {n}")
    task = "metering.aggregate_usage"
