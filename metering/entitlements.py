"""What a tenant may still use this period: `GET /api/v1/entitlements` (every meter) and
`GET /api/v1/entitlements/{meter}` (one), so its service can throttle or gate a feature.

The allowance, hard limit and behaviour at the limit of (tenant, meter) come from one resolver
(metering.allowances: the plan's row for the meter, else the free plan's `monthly_free_allowance`).
Usage is fresh (metering.usage): the period's hourly aggregates plus the events of hours not
aggregated yet, so an event counts as soon as it is ingested. The period is the UTC calendar month.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.response import Response

from core.api_schema import error_responses
from core.api_scopes import USAGE_READ, tenant_or_platform_scope
from core.json_input import printable
from core.money import plain_decimal
from metering.allowances import Allowance, allowance_resolve
from metering.ingest import meter_cache
from metering.models import Meter
from metering.usage import tenant_usage_now
from tenants.authentication import request_named_tenant
from tenants.models import Tenant


@dataclass(frozen=True)
class MeterEntitlement:
    meter: Meter
    used: Decimal
    allowance: Decimal | None  # None: no allowance
    limit: Decimal | None  # the hard limit; None: none
    at_limit: str | None  # "report" or "refuse" with a limit, else None
    remaining: Decimal | None  # limit (else allowance) - used, never negative; None: neither
    has_access: bool  # False: the tenant is suspended, or its plan refuses and used >= limit


@dataclass(frozen=True)
class Entitlements:
    tenant: Tenant
    limited: bool  # some meter has an allowance or a limit
    period_start: datetime
    period_end: datetime
    meters: list[MeterEntitlement]


def _entitlement(tenant: Tenant, meter: Meter, used: Decimal, allowance: Allowance) -> MeterEntitlement:
    cap = allowance.limit if allowance.limit is not None else allowance.included
    remaining = None
    if cap is not None:
        # Sums have up to 38 digits: subtract in a context wide enough to be exact.
        with localcontext(prec=100):
            remaining = max(cap - used, Decimal(0))
    blocked = allowance.refuses and used >= allowance.limit
    return MeterEntitlement(
        meter=meter,
        used=used,
        allowance=allowance.included,
        limit=allowance.limit,
        at_limit=allowance.at_limit,
        remaining=remaining,
        has_access=tenant.is_active and not blocked,
    )


def tenant_entitlements(
    *, tenant: Tenant, meters: list[Meter] | None = None, now: datetime | None = None
) -> Entitlements:
    """The tenant's usage this period per meter (every meter, or `meters`), with its allowance,
    limit and what remains. Meters and plan allowances come from ingestion's few-seconds cache;
    usage takes one query, plus one per meter with hours not aggregated yet (metering.usage)."""
    if meters is None:
        meters = meter_cache.meters()
    start, end, used_by_meter = tenant_usage_now(tenant=tenant, meters=meters, now=now)
    # Plans' allowances and meters change rarely: read from ingestion's few-seconds cache.
    rows = meter_cache.allowance_rows()
    items = [
        _entitlement(
            tenant,
            meter,
            used_by_meter.get(meter.pk) or Decimal(0),
            allowance_resolve(tenant=tenant, meter_id=meter.pk, rows=rows),
        )
        for meter in meters
    ]
    limited = any(item.allowance is not None or item.limit is not None for item in items)
    if not items:
        limited = tenant.plan == Tenant.Plan.FREE
    return Entitlements(tenant=tenant, limited=limited, period_start=start, period_end=end, meters=items)


def _plain(value: Decimal | None) -> str | None:
    return None if value is None else plain_decimal(value)


DECIMAL_PATTERN = r"^[0-9]+(\.[0-9]+)?$"


def _decimal(help_text: str, *, nullable: bool = True) -> serializers.Field:
    return serializers.RegexField(DECIMAL_PATTERN, allow_null=nullable, help_text=help_text)


_ALLOWANCE_HELP = "Decimal string: units included per period (billed beyond); null: none."
_LIMIT_HELP = "Decimal string: the plan's hard limit per period; null: none."
_AT_LIMIT_HELP = (
    "With a limit: `refuse` (events beyond it are refused with 403) or `report` (recorded and billed)."
)
_REMAINING_HELP = (
    "limit - usage when there is a limit, else allowance - usage; never negative; null when neither."
)

ENTITLEMENTS_SCHEMA = inline_serializer(
    "Entitlements",
    {
        "plan": serializers.ChoiceField(choices=Tenant.Plan.choices),
        "status": serializers.ChoiceField(choices=Tenant.Status.choices),
        "limited": serializers.BooleanField(help_text="True when some meter has an allowance or a limit."),
        "period": inline_serializer(
            "EntitlementPeriod", {"start": serializers.DateTimeField(), "end": serializers.DateTimeField()}
        ),
        "meters": inline_serializer(
            "MeterEntitlement",
            {
                "meter": serializers.CharField(),
                "unit": serializers.CharField(),
                "used": _decimal("Decimal string: usage this period so far.", nullable=False),
                "allowance": _decimal(_ALLOWANCE_HELP),
                "limit": _decimal(_LIMIT_HELP),
                "at_limit": serializers.ChoiceField(
                    choices=["report", "refuse"], allow_null=True, help_text=_AT_LIMIT_HELP
                ),
                "remaining": _decimal(_REMAINING_HELP),
                "exhausted": serializers.BooleanField(help_text="remaining is 0."),
                "has_access": serializers.BooleanField(
                    help_text="False when the tenant is suspended, or its plan refuses at the limit and "
                    "usage has reached it."
                ),
            },
            many=True,
        ),
    },
)

METER_ENTITLEMENT_SCHEMA = inline_serializer(
    "Entitlement",
    {
        "meter": serializers.CharField(),
        "has_access": serializers.BooleanField(
            help_text="False when the tenant is suspended, or its plan refuses at the limit and usage "
            "has reached it."
        ),
        "usage": _decimal(
            "Decimal string: usage this period, events not aggregated yet included.", nullable=False
        ),
        "allowance": _decimal(_ALLOWANCE_HELP),
        "limit": _decimal(_LIMIT_HELP),
        "remaining": _decimal(_REMAINING_HELP),
        "period_start": serializers.DateTimeField(help_text="The UTC calendar month's first instant."),
        "period_end": serializers.DateTimeField(
            help_text="Exclusive: the next UTC calendar month's first instant."
        ),
        "at_limit": serializers.ChoiceField(
            choices=["report", "refuse"], allow_null=True, help_text=_AT_LIMIT_HELP
        ),
    },
)

TENANT_PARAMETER = OpenApiParameter(
    "tenant",
    {"type": "string", "minLength": 1, "maxLength": 255},
    description="The tenant's external id or slug: required with a platform key (usage:read); with a "
    "tenant key optional and it must name that tenant.",
)


def _tenant_for(request) -> Tenant:
    """The tenant a call reads: a tenant key's own, or the one a platform key names in `tenant`. An
    unknown query parameter is a 400, as on /api/v1/usage."""
    params = request.query_params.dict()
    unknown = sorted(set(params) - {"tenant"})
    if unknown:
        raise exceptions.ValidationError({printable(name): ["unknown parameter"] for name in unknown})
    ref = params.get("tenant")
    if ref is not None and len(ref) > 255:
        raise exceptions.ValidationError({"tenant": ["must be at most 255 characters"]})
    # A platform key may read a suspended tenant's entitlements (has_access false); its own key cannot.
    return request_named_tenant(request, ref, field="tenant", active=False)


@extend_schema(
    summary="A tenant's entitlements this period, every meter",
    description="The tenant's plan and status and, per meter, its usage this UTC calendar month (hourly "
    "aggregates plus the events of hours not aggregated yet, so an event counts as soon as it is "
    "ingested), its allowance and hard limit (the plan's per-meter allowance, else the free plan's "
    "monthly free allowance), what remains (never negative) and whether the tenant has access. "
    "A tenant key reads its own tenant; a platform key (usage:read) names it in `tenant`.",
    parameters=[TENANT_PARAMETER],
    responses={200: ENTITLEMENTS_SCHEMA, **error_responses(400, 401, 403, 404)},
    examples=[
        OpenApiExample(
            "A free tenant",
            value={
                "plan": "free",
                "status": "active",
                "limited": True,
                "period": {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"},
                "meters": [
                    {
                        "meter": "api_calls",
                        "unit": "call",
                        "used": "840",
                        "allowance": "1000",
                        "limit": None,
                        "at_limit": None,
                        "remaining": "160",
                        "exhausted": False,
                        "has_access": True,
                    },
                ],
            },
            response_only=True,
        ),
    ],
)
@api_view(["GET"])
@permission_classes([tenant_or_platform_scope(USAGE_READ)])
def entitlements_read(request):
    entitlements = tenant_entitlements(tenant=_tenant_for(request))
    tenant = entitlements.tenant
    return Response(
        {
            "plan": tenant.plan,
            "status": tenant.status,
            "limited": entitlements.limited,
            "period": {"start": entitlements.period_start, "end": entitlements.period_end},
            "meters": [
                {
                    "meter": item.meter.code,
                    "unit": item.meter.unit,
                    "used": _plain(item.used),
                    "allowance": _plain(item.allowance),
                    "limit": _plain(item.limit),
                    "at_limit": item.at_limit,
                    "remaining": _plain(item.remaining),
                    "exhausted": item.remaining is not None and item.remaining == 0,
                    "has_access": item.has_access,
                }
                for item in entitlements.meters
            ],
        }
    )


@extend_schema(
    operation_id="entitlements_meter_retrieve",
    summary="A tenant's entitlement to one meter",
    description="Whether the tenant may use the meter now, its usage this UTC calendar month (minutes "
    "fresh: hourly aggregates plus the events of hours not aggregated yet), its allowance and hard "
    "limit, and what remains: `limit - usage` when there is a limit, else `allowance - usage`, never "
    "negative, null when neither. `has_access` is false when the tenant is suspended, or when its "
    "plan refuses events at the limit (`at_limit: refuse`) and usage has reached it. The period "
    "ends at `period_end` (exclusive), when usage starts again from 0. A tenant key reads its own "
    "tenant; a platform key (usage:read) names it in `tenant`. An unknown meter is a 404 naming it.",
    parameters=[TENANT_PARAMETER],
    responses={200: METER_ENTITLEMENT_SCHEMA, **error_responses(400, 401, 403, 404)},
    examples=[
        OpenApiExample(
            "A plan that refuses at its limit",
            value={
                "meter": "api_calls",
                "has_access": True,
                "usage": "9840",
                "allowance": "10000",
                "limit": "12000",
                "remaining": "2160",
                "period_start": "2026-11-01T00:00:00Z",
                "period_end": "2026-12-01T00:00:00Z",
                "at_limit": "refuse",
            },
            response_only=True,
        ),
    ],
)
@api_view(["GET"])
@permission_classes([tenant_or_platform_scope(USAGE_READ)])
def meter_entitlement_read(request, meter: str):
    tenant = _tenant_for(request)
    found = meter_cache.meter(meter) if meter.isprintable() and len(meter) <= 100 else None
    if found is None:
        raise exceptions.NotFound(f"unknown meter {meter[:100]!r}")
    entitlements = tenant_entitlements(tenant=tenant, meters=[found])
    [item] = entitlements.meters
    return Response(
        {
            "meter": found.code,
            "has_access": item.has_access,
            "usage": _plain(item.used),
            "allowance": _plain(item.allowance),
            "limit": _plain(item.limit),
            "remaining": _plain(item.remaining),
            "period_start": entitlements.period_start,
            "period_end": entitlements.period_end,
            "at_limit": item.at_limit,
        }
    )
