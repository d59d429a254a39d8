"""Per plan and meter: the allowance included each billing period, an optional hard limit, and what
happens at it. One resolver, `allowance_resolve`, answers "what is (tenant, meter) allowed" for the
entitlements, the usage thresholds, the pricing preview and estimates, the admin and the commands.

The billing period is the UTC calendar month (metering.estimates.month_bounds), as everywhere.
Without a PlanMeterAllowance row for (tenant's plan, meter) the rule before per-meter rows holds:
a free-plan tenant has its `monthly_free_allowance` of every meter, a metered tenant no allowance.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction

from core.validation import row_validate, validation_error_message
from metering.models import REFUSABLE_AGGREGATIONS, Meter, PlanMeterAllowance
from tenants.models import Tenant


@dataclass(frozen=True)
class Allowance:
    included: Decimal | None  # units included per period; None: no allowance (every unit billed)
    limit: Decimal | None  # the hard limit; None: none
    at_limit: str | None  # "report" or "refuse" when there is a limit, else None
    source: str  # "plan" (a PlanMeterAllowance row), "tenant" (free plan's allowance) or "none"

    @property
    def refuses(self) -> bool:
        return self.limit is not None and self.at_limit == PlanMeterAllowance.AtLimit.REFUSE


NO_ALLOWANCE = Allowance(included=None, limit=None, at_limit=None, source="none")

# (plan, meter id) -> row: what `allowance_resolve` reads, loaded once per request or run.
PlanRows = dict[tuple[str, int], PlanMeterAllowance]


def plan_allowance_rows(
    *, plans: Iterable[str] | None = None, meter_ids: Iterable[int] | None = None
) -> PlanRows:
    """The PlanMeterAllowance rows, by (plan, meter id); one query."""
    rows = PlanMeterAllowance.objects.all()
    if plans is not None:
        rows = rows.filter(plan__in=set(plans))
    if meter_ids is not None:
        rows = rows.filter(meter_id__in=set(meter_ids))
    return {(row.plan, row.meter_id): row for row in rows}


def allowance_resolve(*, tenant: Tenant, meter_id: int, rows: PlanRows) -> Allowance:
    """The allowance of (tenant, meter): the plan's row if there is one, else the old rule."""
    row = rows.get((tenant.plan, meter_id))
    if row is not None:
        return Allowance(
            included=row.included,
            limit=row.hard_limit,
            at_limit=row.at_limit if row.hard_limit is not None else None,
            source="plan",
        )
    if tenant.plan == Tenant.Plan.FREE:
        return Allowance(included=tenant.monthly_free_allowance, limit=None, at_limit=None, source="tenant")
    return NO_ALLOWANCE


def tenant_meter_allowance(*, tenant: Tenant, meter: Meter) -> Allowance:
    """`allowance_resolve` for one (tenant, meter), its row read here (one query)."""
    return allowance_resolve(
        tenant=tenant, meter_id=meter.pk, rows=plan_allowance_rows(plans=[tenant.plan], meter_ids=[meter.pk])
    )


class AllowanceError(Exception):
    """A plan allowance that cannot be stored; `field` names what is wrong."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


def plan_allowance_set(
    *,
    plan: str,
    meter: Meter,
    included: Decimal,
    hard_limit: Decimal | None = None,
    at_limit: str = PlanMeterAllowance.AtLimit.REPORT,
) -> PlanMeterAllowance:
    """Create or replace the allowance of (plan, meter). Refusing at the limit is allowed on count
    and sum meters only (their usage only grows with each event, so "the events beyond the limit"
    is exact); it needs a limit, and a limit is at least the included allowance."""
    if plan not in Tenant.Plan.values:
        raise AllowanceError(
            f"unknown plan {plan!r}; choose one of {', '.join(Tenant.Plan.values)}", field="plan"
        )
    if at_limit not in PlanMeterAllowance.AtLimit.values:
        raise AllowanceError(
            f"unknown behaviour {at_limit!r}; choose one of {', '.join(PlanMeterAllowance.AtLimit.values)}",
            field="at_limit",
        )
    if at_limit == PlanMeterAllowance.AtLimit.REFUSE and meter.aggregation not in REFUSABLE_AGGREGATIONS:
        raise AllowanceError(
            f"refuse works on count and sum meters only; {meter.code} aggregates by {meter.aggregation}",
            field="at_limit",
        )
    row = PlanMeterAllowance.objects.filter(plan=plan, meter=meter).first() or PlanMeterAllowance(
        plan=plan, meter=meter
    )
    row.included, row.hard_limit, row.at_limit = included, hard_limit, at_limit
    try:
        row_validate(row, exclude=["meter"])
    except ValidationError as exc:
        raise AllowanceError(validation_error_message(exc)) from None
    with transaction.atomic():
        row.save()
    plan_allowances_changed()
    return row


def plan_allowances_changed() -> None:
    """Ingestion keeps the refusing limits a few seconds in process (metering.ingest.meter_cache):
    reload them at once in this process after a change."""
    from metering.ingest import meter_cache

    meter_cache.clear()
