"""Rows of the metering app for tests; every field a test does not care about has a plain default."""

from decimal import Decimal

import factory
from django.utils import timezone

from metering.eventstore import event_store
from metering.models import (
    AggregationRun,
    HourlyAggregate,
    HourlyAggregateChange,
    Meter,
    MeterFilter,
    PendingHour,
    PlanMeterAllowance,
    Price,
    UsageEvent,
    UsageQueue,
    UsageThreshold,
    UsageThresholdCrossing,
)
from tenants.tests.factories import TenantFactory


def _this_hour():
    return timezone.now().replace(minute=0, second=0, microsecond=0)


class MeterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Meter
        skip_postgeneration_save = True

    code = factory.Sequence(lambda n: f"meter_{n}")
    name = factory.LazyAttribute(lambda meter: meter.code)
    aggregation = Meter.Aggregation.COUNT

    @factory.post_generation
    def filters(meter, create, extracted, **kwargs):
        """`filters={"status": ["200", "201"]}`: one MeterFilter per property ("in" for several values)."""
        for prop, values in (extracted or {}).items():
            MeterFilterFactory(meter=meter, property=prop, values=values)


class MeterFilterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MeterFilter

    meter = factory.SubFactory(MeterFactory)
    property = "status"
    operator = factory.LazyAttribute(
        lambda row: MeterFilter.Operator.IN if len(row.values) > 1 else MeterFilter.Operator.EQUALS
    )
    values = factory.LazyFunction(lambda: ["200"])


class UsageEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UsageEvent

    tenant = factory.SubFactory(TenantFactory)
    meter = factory.SubFactory(MeterFactory)
    event_id = factory.Sequence(lambda n: f"evt-{n}")
    timestamp = factory.LazyFunction(timezone.now)
    received_at = factory.LazyFunction(timezone.now)

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        # On PostgreSQL the row needs its day's partition (ingestion prepares its own).
        event_store().prepare_for([kwargs["timestamp"]])
        return super()._create(model_class, *args, **kwargs)


class PendingHourFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PendingHour

    tenant = factory.SubFactory(TenantFactory)
    meter = factory.SubFactory(MeterFactory)
    hour = factory.LazyFunction(_this_hour)
    marked_at = factory.LazyFunction(timezone.now)


class HourlyAggregateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = HourlyAggregate

    tenant = factory.SubFactory(TenantFactory)
    meter = factory.SubFactory(MeterFactory)
    hour = factory.LazyFunction(_this_hour)
    value = Decimal("1")
    event_count = 1


class HourlyAggregateChangeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = HourlyAggregateChange

    aggregate = factory.SubFactory(HourlyAggregateFactory)
    revision = factory.LazyAttribute(lambda change: change.aggregate.revision)
    old_value = None
    new_value = factory.LazyAttribute(lambda change: change.aggregate.value)
    new_event_count = factory.LazyAttribute(lambda change: change.aggregate.event_count)


class AggregationRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AggregationRun

    started_at = factory.LazyFunction(timezone.now)
    trigger = "test"


class PriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Price

    meter = factory.SubFactory(MeterFactory)
    plan = "metered"


class UsageQueueFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UsageQueue

    url = factory.Sequence(lambda n: f"https://sqs.us-east-1.amazonaws.com/123456789012/usage-{n}")
    meter = factory.SubFactory(MeterFactory)


class UsageThresholdFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UsageThreshold

    tenant = factory.SubFactory(TenantFactory)
    meter = factory.SubFactory(MeterFactory)
    kind = UsageThreshold.Kind.ABSOLUTE
    value = Decimal("100")


class UsageThresholdCrossingFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UsageThresholdCrossing

    threshold = factory.SubFactory(UsageThresholdFactory)
    period_start = factory.LazyFunction(
        lambda: timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    )
    units = Decimal("100")
    usage = Decimal("120.5")


class PlanMeterAllowanceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PlanMeterAllowance

    plan = "free"
    meter = factory.SubFactory(MeterFactory)
    included = Decimal("1000")
    hard_limit = None
    at_limit = PlanMeterAllowance.AtLimit.REPORT
