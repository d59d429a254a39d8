from decimal import Decimal

from django.core.management.base import CommandError

from core.commands import BaseCommand
from core.money import format_quantity
from core.parsing import decimal_argument
from metering.allowances import AllowanceError, plan_allowance_set
from metering.models import QUANTITY_DECIMAL_PLACES, QUANTITY_MAX_DIGITS, Meter, PlanMeterAllowance
from tenants.models import Tenant

_UNITS = {"max_digits": QUANTITY_MAX_DIGITS, "max_places": QUANTITY_DECIMAL_PLACES}


class Command(BaseCommand):
    help = (
        "Set what PLAN includes of METER per billing period (the UTC calendar month), with an optional "
        "hard limit and what happens at it. Replaces the plan's row for the meter if there is one."
    )

    def add_arguments(self, parser):
        parser.add_argument("plan", choices=Tenant.Plan.values)
        parser.add_argument("meter", help="meter code")
        parser.add_argument(
            "--included",
            required=True,
            type=decimal_argument(**_UNITS, minimum=Decimal(0)),
            help="units included per period (0: every unit is billed)",
        )
        parser.add_argument(
            "--limit",
            type=decimal_argument(**_UNITS, minimum=Decimal(1).scaleb(-QUANTITY_DECIMAL_PLACES)),
            help="hard limit in units per period (at least --included)",
        )
        parser.add_argument(
            "--at-limit",
            choices=PlanMeterAllowance.AtLimit.values,
            default=PlanMeterAllowance.AtLimit.REPORT,
            help="report (default: usage beyond is recorded and billed) or refuse (ingestion refuses "
            "events beyond the limit; count and sum meters only)",
        )

    def handle(self, *args, plan, meter, included, limit, at_limit, **options):
        try:
            meter_row = Meter.objects.get(code=meter)
        except Meter.DoesNotExist:
            raise CommandError(f"no meter with code {meter!r}") from None
        try:
            row = plan_allowance_set(
                plan=plan, meter=meter_row, included=included, hard_limit=limit, at_limit=at_limit
            )
        except AllowanceError as exc:
            raise CommandError(str(exc)) from None
        limit_text = (
            "no limit"
            if row.hard_limit is None
            else f"limit {format_quantity(row.hard_limit)} ({row.at_limit})"
        )
        self.stdout.write(
            f"plan {row.plan}, meter {meter_row.code}: {format_quantity(row.included)} included per "
            f"month (UTC), {limit_text}"
        )
