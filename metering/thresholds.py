"""Usage thresholds: tell the SaaS's app (`usage.threshold_crossed`) when a tenant's usage of a meter
this billing period reaches a level, once per period.

The billing period is the UTC calendar month (as the allowances and the entitlements use:
metering.estimates.month_bounds); usage is the entitlements' fresh usage (metering.usage: the
period's aggregates plus the hours not aggregated yet), and a percentage threshold is of the
meter's allowance as metering.allowances resolves it (the plan's per-meter row, else the free
plan's monthly free allowance), so the webhooks fire on the numbers the tenant reads. Aggregation
calls `usage_thresholds_check` at the end of each run with the (tenant, meter, month) of the hours
it changed, after their aggregates are committed, so a concurrent run's hours are counted by
whichever run finishes last. A crossing is a row unique per (threshold, period start): found twice,
it is published once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from core.money import plain_decimal
from core.validation import row_validate, validation_error_message
from metering.allowances import allowance_resolve, plan_allowance_rows
from metering.estimates import month_bounds
from metering.models import (
    QUANTITY_DECIMAL_PLACES,
    Meter,
    UsageThreshold,
    UsageThresholdCrossing,
)
from metering.usage import usage_totals
from outbound.services import webhook_event_publish
from tenants.events import tenant_event_block
from tenants.models import Tenant

logger = logging.getLogger(__name__)
EVENT_TYPE = "usage.threshold_crossed"
_PLACES = Decimal(1).scaleb(-QUANTITY_DECIMAL_PLACES)


class ThresholdError(Exception):
    """A threshold that cannot be created; the message names what is wrong."""


def usage_threshold_create(
    *, tenant: Tenant, meter: Meter, kind: str, value: Decimal, enabled: bool = True
) -> UsageThreshold:
    """A new threshold; ThresholdError for a kind, value or duplicate that cannot be stored."""
    if kind not in UsageThreshold.Kind.values:
        raise ThresholdError(f"unknown kind {kind!r}; choose one of {', '.join(UsageThreshold.Kind.values)}")
    if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
        raise ThresholdError("the threshold must be a number greater than 0")
    threshold = UsageThreshold(tenant=tenant, meter=meter, kind=kind, value=value, enabled=enabled)
    try:
        row_validate(threshold, exclude=["tenant", "meter"])
    except ValidationError as exc:
        raise ThresholdError(validation_error_message(exc)) from None
    try:
        with transaction.atomic():
            threshold.save()
    except IntegrityError:
        raise ThresholdError(f"{tenant.slug} already has this threshold on {meter.code}") from None
    return threshold


@dataclass(frozen=True)
class Crossing:
    threshold: UsageThreshold
    period_start: datetime
    usage: Decimal
    units: Decimal


def _month(moment: datetime) -> datetime:
    return month_bounds(moment)[0]


def usage_thresholds_check(*, periods: Iterable[tuple[int, int, datetime]]) -> list[Crossing]:
    """Publish `usage.threshold_crossed` for every enabled threshold of these (tenant id, meter id,
    period start) that the period's usage has reached and that has not been published this period.

    A few queries when some threshold applies (the thresholds; the fresh usage of their periods; the
    plans' allowance rows), one otherwise. Returns the new crossings.
    """
    wanted: dict[tuple[int, int], set[datetime]] = {}
    for tenant_id, meter_id, moment in periods:
        wanted.setdefault((tenant_id, meter_id), set()).add(_month(moment))
    if not wanted:
        return []
    thresholds = [
        threshold
        for threshold in UsageThreshold.objects.filter(
            enabled=True,
            tenant_id__in={tenant for tenant, _ in wanted},
            meter_id__in={meter for _, meter in wanted},
        ).select_related("tenant", "meter")
        if (threshold.tenant_id, threshold.meter_id) in wanted
    ]
    if not thresholds:
        return []
    keys = {
        (t.tenant_id, t.meter_id, start) for t in thresholds for start in wanted[(t.tenant_id, t.meter_id)]
    }
    totals = usage_totals(keys=keys, meters={t.meter_id: t.meter for t in thresholds})
    rows = plan_allowance_rows(
        plans={t.tenant.plan for t in thresholds}, meter_ids={t.meter_id for t in thresholds}
    )
    crossings = []
    for threshold in thresholds:
        allowance = allowance_resolve(tenant=threshold.tenant, meter_id=threshold.meter_id, rows=rows)
        units = threshold.units(allowance.included)
        if units is None:
            continue
        units = units.quantize(_PLACES)
        for start in sorted(wanted[(threshold.tenant_id, threshold.meter_id)]):
            if month_bounds(start)[1] <= threshold.created_at:
                continue  # a period that ended before the threshold existed
            usage = totals.get((threshold.tenant_id, threshold.meter_id, start)) or Decimal(0)
            if usage >= units and (crossing := _record(threshold, start, usage, units)) is not None:
                crossings.append(crossing)
    return crossings


def _record(threshold: UsageThreshold, start: datetime, usage: Decimal, units: Decimal) -> Crossing | None:
    """Store the crossing and publish its event in one transaction; None if it was found before."""
    try:
        with transaction.atomic():
            UsageThresholdCrossing.objects.create(
                threshold=threshold, period_start=start, usage=usage, units=units
            )
            _publish(threshold, start, usage, units)
    except IntegrityError:
        return None
    logger.info("usage threshold %s crossed in %s: %s >= %s", threshold.pk, f"{start:%Y-%m}", usage, units)
    return Crossing(threshold=threshold, period_start=start, usage=usage, units=units)


def _publish(threshold: UsageThreshold, start: datetime, usage: Decimal, units: Decimal) -> None:
    tenant, meter = threshold.tenant, threshold.meter
    webhook_event_publish(
        type=EVENT_TYPE,
        key=f"{EVENT_TYPE}:{threshold.pk}:{start:%Y-%m}",
        tenant=tenant,
        data={
            "tenant": tenant_event_block(tenant),
            "meter": {"code": meter.code, "name": meter.name, "unit": meter.unit},
            "threshold": {
                "id": threshold.pk,
                "kind": threshold.kind,
                "value": plain_decimal(threshold.value),
                "units": plain_decimal(units),
            },
            "usage": plain_decimal(usage),
            "period": {"start": start, "end": month_bounds(start)[1]},
        },
    )
