"""Writes for meters. Ingestion lives in metering/ingest.py, aggregation in metering/aggregation.py."""

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Exists, OuterRef

from core.json_input import json_problem
from core.validation import row_validate, validation_error_message
from metering.aggregation import RecomputeResult, recompute_window_start, usage_mark_for_recompute
from metering.ingest import meter_cache
from metering.models import VALUE_AGGREGATIONS, HourlyAggregate, Meter, MeterFilter, PendingHour, UsageEvent
from tenants.models import Tenant


class MeterError(Exception):
    """A meter definition that cannot be saved; the message is for the operator."""


def meter_has_usage(*, meter: Meter) -> bool:
    """Whether any event was ever recorded for the meter (kept or aggregated).

    Aggregates and pending hours are indexed by meter and answer for most meters. They are not
    enough: an hour whose events all fail the meter's filters leaves neither once aggregated. The
    events table is indexed by (tenant, meter, timestamp), so it is asked tenant by tenant, one
    index probe each, never by meter alone (a scan)."""
    if (
        HourlyAggregate.objects.filter(meter=meter).exists()
        or PendingHour.objects.filter(meter=meter).exists()
    ):
        return True
    if connection.vendor == "postgresql":
        # LATERAL ... LIMIT 1 is never flattened into a join, so the planner cannot trade the
        # per-tenant index probes for a scan of the events table.
        events, tenants = UsageEvent._meta.db_table, Tenant._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT 1 FROM {tenants} t CROSS JOIN LATERAL (SELECT 1 FROM {events} e "  # noqa: S608 - table names from the models
                "WHERE e.tenant_id = t.id AND e.meter_id = %s LIMIT 1) x LIMIT 1",
                [meter.pk],
            )
            return cursor.fetchone() is not None
    return Tenant.objects.filter(
        Exists(UsageEvent.objects.filter(tenant_id=OuterRef("pk"), meter=meter))
    ).exists()


def meter_create(
    *,
    code: str,
    aggregation: str,
    name: str = "",
    unit: str = "unit",
    unique_property: str = "",
    value_property: str = "",
    filters: dict[str, list] | None = None,
) -> Meter:
    """Create a meter; `filters` maps a property to its accepted values; `value_property` (sum, max
    and latest meters) is where an event without a quantity finds it."""
    if aggregation not in Meter.Aggregation.values:
        raise MeterError(
            f"unknown aggregation {aggregation!r}; choose one of {', '.join(Meter.Aggregation.values)}"
        )
    if aggregation == Meter.Aggregation.UNIQUE_COUNT and not unique_property:
        raise MeterError("a unique_count meter needs --property, the property whose distinct values count")
    if value_property and aggregation not in VALUE_AGGREGATIONS:
        raise MeterError(
            f"a {aggregation} meter does not read quantities, so a value property has no use; "
            f"it applies to {', '.join(VALUE_AGGREGATIONS)} meters"
        )
    if Meter.objects.filter(code=code).exists():
        raise MeterError(f"a meter with code {code!r} already exists")
    meter = Meter(
        code=code,
        name=name or code,
        unit=unit,
        aggregation=aggregation,
        unique_property=unique_property,
        value_property=value_property,
    )
    rows = []
    for prop, values in (filters or {}).items():
        operator = MeterFilter.Operator.EQUALS if len(values) == 1 else MeterFilter.Operator.IN
        rows.append(MeterFilter(meter=meter, property=prop, operator=operator, values=list(values)))
    try:
        row_validate(meter)
        for row in rows:
            row_validate(row, exclude=["meter"])
            if (problem := json_problem(row.values, max_depth=2)) is not None:
                raise ValidationError({"values": [f"filter values {problem}"]})
    except ValidationError as exc:
        raise MeterError(validation_error_message(exc)) from None
    with transaction.atomic():
        meter.save()
        for row in rows:
            row.meter = meter
            row.save()
    meter_cache.clear()
    return meter


def meter_check_aggregation_change(*, meter: Meter, aggregation: str, unique_property: str) -> None:
    """Refuse to change how a meter aggregates once it has usage: past hours would change meaning."""
    original = Meter.objects.get(pk=meter.pk)
    if (original.aggregation, original.unique_property) == (aggregation, unique_property):
        return
    if meter_has_usage(meter=meter):
        raise MeterError(
            "This meter already has events; its aggregation cannot change. Create a new meter instead."
        )


def meter_filters_changed(*, meter: Meter) -> RecomputeResult:
    """After an operator changes a meter's filters, recompute its hours still within Stripe's
    window, so aggregates (and what is reported) follow the new definition.

    Every hour with raw events of the meter is marked, whatever its aggregates say: a widened
    filter must count events that matched nothing before (and left no aggregate)."""
    return usage_mark_for_recompute(since=recompute_window_start(), meter_id=meter.pk)
