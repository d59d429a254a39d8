from decimal import Decimal

from django.core.management.base import CommandError

from core.commands import BaseCommand
from core.parsing import decimal_argument
from metering.allowances import tenant_meter_allowance
from metering.models import QUANTITY_DECIMAL_PLACES, QUANTITY_MAX_DIGITS, Meter, UsageThreshold
from metering.thresholds import ThresholdError, usage_threshold_create
from tenants.models import Tenant
from tenants.selectors import tenant_get_by_ref

MIN_VALUE = Decimal(1).scaleb(-QUANTITY_DECIMAL_PLACES)


class Command(BaseCommand):
    help = (
        "Add a usage threshold: when TENANT's usage of METER this month (UTC) reaches it, the "
        "usage.threshold_crossed webhook event is sent, once per month."
    )

    def add_arguments(self, parser):
        parser.add_argument("tenant", help="tenant slug, external id or id")
        parser.add_argument("meter", help="meter code")
        level = parser.add_mutually_exclusive_group(required=True)
        level.add_argument(
            "--units",
            type=decimal_argument(
                max_digits=QUANTITY_MAX_DIGITS, max_places=QUANTITY_DECIMAL_PLACES, minimum=MIN_VALUE
            ),
            help="an absolute level, in units of the meter",
        )
        level.add_argument(
            "--percent",
            type=decimal_argument(
                max_digits=QUANTITY_MAX_DIGITS, max_places=QUANTITY_DECIMAL_PLACES, minimum=MIN_VALUE
            ),
            help="a percentage of the tenant's allowance of the meter (its plan's, else its monthly free "
            "allowance; e.g. 80 or 100)",
        )
        parser.add_argument("--disabled", action="store_true", help="create it disabled")

    def handle(self, *args, tenant, meter, units, percent, disabled, **options):
        try:
            found = tenant_get_by_ref(ref=tenant)
            meter_row = Meter.objects.get(code=meter)
        except Tenant.DoesNotExist as exc:
            raise CommandError(str(exc)) from None
        except Meter.DoesNotExist:
            raise CommandError(f"no meter with code {meter!r}") from None
        kind = UsageThreshold.Kind.ABSOLUTE if units is not None else UsageThreshold.Kind.PERCENT_OF_ALLOWANCE
        try:
            threshold = usage_threshold_create(
                tenant=found,
                meter=meter_row,
                kind=kind,
                value=units if units is not None else percent,
                enabled=not disabled,
            )
        except ThresholdError as exc:
            raise CommandError(str(exc)) from None
        allowance = tenant_meter_allowance(tenant=found, meter=meter_row)
        resolved = threshold.units(allowance.included)
        note = (
            ""
            if resolved is not None
            else " (the tenant has no allowance of this meter: it cannot be crossed yet)"
        )
        self.stdout.write(
            f"usage threshold {threshold.pk}: {threshold} "
            f"({'enabled' if threshold.enabled else 'disabled'}){note}"
        )
