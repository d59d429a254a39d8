from django.core.management.base import CommandError

from core.commands import BaseCommand
from metering.models import Meter
from metering.services import MeterError, meter_create


def _filter(value: str) -> tuple[str, list[str]]:
    prop, sep, values = value.partition("=")
    if not sep or not prop or not values:
        raise CommandError(f"--filter must look like PROPERTY=VALUE[,VALUE...], got {value!r}")
    return prop, [v.strip() for v in values.split(",") if v.strip()]


class Command(BaseCommand):
    help = "Create a meter: the code events carry in their `meter` field, and how an hour aggregates."

    def add_arguments(self, parser):
        parser.add_argument("code")
        parser.add_argument("--aggregation", required=True, choices=Meter.Aggregation.values)
        parser.add_argument("--property", default="", help="for unique_count: the property to count")
        parser.add_argument(
            "--value-property",
            default="",
            metavar="P",
            help="for sum, max and latest: an event without a quantity takes it from properties[P] "
            "(a name, or a path such as usage.tokens or $.usage.tokens)",
        )
        parser.add_argument("--name", default="", help="display name (default: the code)")
        parser.add_argument("--unit", default="unit")
        parser.add_argument(
            "--filter",
            action="append",
            default=[],
            metavar="PROPERTY=VALUE[,VALUE]",
            help="only events whose property has one of these values count (repeatable)",
        )

    def handle(self, *args, code, aggregation, property, value_property, name, unit, filter, **options):
        filters = dict(_filter(value) for value in filter)
        try:
            meter = meter_create(
                code=code,
                aggregation=aggregation,
                name=name,
                unit=unit,
                unique_property=property,
                value_property=value_property,
                filters=filters,
            )
        except MeterError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"meter {meter.code} (id {meter.pk}, {meter.get_aggregation_display()})")
