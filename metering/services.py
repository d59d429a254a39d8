"""Writes for meters. Ingestion lives in metering/ingest.py, aggregation in metering/aggregation.py."""

from django.core.exceptions import ValidationError
from django.db import transaction

from metering.aggregation import recompute_window_start, usage_mark_for_recompute
from metering.ingest import meter_cache
from metering.models import HourlyAggregate, Meter, MeterFilter, PendingHour


class MeterError(Exception):
    """A meter definition that cannot be saved; the message is for the operator."""


def meter_has_usage(*, meter: Meter) -> bool:
    # Aggregates and pending hours are indexed by meter; the events table is indexed by tenant
    # first, so asking it directly would scan. An event always leaves one or the other.
    return (
        HourlyAggregate.objects.filter(meter=meter).exists()
        or PendingHour.objects.filter(meter=meter).exists()
    )


def meter_create(
    *,
    code: str,
    aggregation: str,
    name: str = "",
    unit: str = "unit",
    unique_property: str = "",
    filters: dict[str, list] | None = None,
) -> Meter:
    """Create a meter; `filters` maps a property to its accepted values."""
    if aggregation not in Meter.Aggregation.values:
        raise MeterError(
            f"unknown aggregation {aggregation!r}; choose one of {', '.join(Meter.Aggregation.values)}"
        )
    if aggregation == Meter.Aggregation.UNIQUE_COUNT and not unique_property:
        raise MeterError("a unique_count meter needs --property, the property whose distinct values count")
    if Meter.objects.filter(code=code).exists():
        raise MeterError(f"a meter with code {code!r} already exists")
    meter = Meter(
        code=code, name=name or code, unit=unit, aggregation=aggregation, unique_property=unique_property
    )
    try:
        meter.full_clean()
    except ValidationError as exc:
        raise MeterError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from None
    with transaction.atomic():
        meter.save()
        for prop, values in (filters or {}).items():
            operator = MeterFilter.Operator.EQUALS if len(values) == 1 else MeterFilter.Operator.IN
            MeterFilter.objects.create(meter=meter, property=prop, operator=operator, values=list(values))
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


def meter_filters_changed(*, meter: Meter) -> int:
    """After an operator changes a meter's filters, recompute its hours still within Stripe's
    window, so aggregates (and what is reported) follow the new definition."""
    return usage_mark_for_recompute(since=recompute_window_start(), meter_id=meter.pk)
