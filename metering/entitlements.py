"""What a tenant may still use this month: `GET /api/v1/entitlements`, so its service can throttle.

Free-plan tenants have `monthly_free_allowance` units of every meter per UTC calendar month;
metered tenants are not limited (their usage is billed). Usage is the sum of the month's hourly
aggregates, so it counts events up to the last aggregation (hourly), not the last few minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext

from django.db.models import Sum
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.response import Response

from core.api_schema import error_responses
from metering.estimates import month_bounds
from metering.ingest import EXACT
from metering.models import HourlyAggregate, Meter
from tenants.authentication import request_tenant
from tenants.models import Tenant


@dataclass(frozen=True)
class MeterEntitlement:
    meter: Meter
    used: Decimal
    allowance: Decimal | None  # None: not limited
    remaining: Decimal | None  # allowance - used, never negative; None: not limited


@dataclass(frozen=True)
class Entitlements:
    tenant: Tenant
    limited: bool
    period_start: datetime
    period_end: datetime
    meters: list[MeterEntitlement]


def tenant_entitlements(*, tenant: Tenant, now: datetime | None = None) -> Entitlements:
    """The tenant's usage this month per meter and, on the free plan, what is left of its allowance.

    Two queries whatever the number of meters: the meters, and one grouped SUM of the month's hours.
    """
    start, end = month_bounds(now or timezone.now())
    used_by_meter: dict[int, Decimal] = dict(
        HourlyAggregate.objects.filter(tenant=tenant, hour__gte=start, hour__lt=end)
        .order_by()
        .values("meter")
        .annotate(total=Sum("value"))
        .values_list("meter", "total")
    )
    limited = tenant.plan == Tenant.Plan.FREE
    allowance = tenant.monthly_free_allowance if limited else None
    meters = []
    for meter in Meter.objects.order_by("code"):
        used = used_by_meter.get(meter.pk) or Decimal(0)
        remaining = None
        if limited:
            # Sums have up to 38 digits: subtract in a context wide enough to be exact.
            with localcontext(prec=100):
                remaining = max(allowance - used, Decimal(0))
        meters.append(MeterEntitlement(meter=meter, used=used, allowance=allowance, remaining=remaining))
    return Entitlements(tenant=tenant, limited=limited, period_start=start, period_end=end, meters=meters)


def _plain(value: Decimal | None) -> str | None:
    if value is None:
        return None
    if not value:
        return "0"
    return format(value.normalize(EXACT), "f")


ENTITLEMENTS_SCHEMA = inline_serializer(
    "Entitlements",
    {
        "plan": serializers.ChoiceField(choices=Tenant.Plan.choices),
        "status": serializers.ChoiceField(choices=Tenant.Status.choices),
        "limited": serializers.BooleanField(help_text="True on the free plan: usage is capped per meter."),
        "period": inline_serializer(
            "EntitlementPeriod", {"start": serializers.DateTimeField(), "end": serializers.DateTimeField()}
        ),
        "meters": inline_serializer(
            "MeterEntitlement",
            {
                "meter": serializers.CharField(),
                "unit": serializers.CharField(),
                "used": serializers.CharField(help_text="Decimal string: usage this month so far."),
                "allowance": serializers.CharField(allow_null=True, help_text="null when not limited."),
                "remaining": serializers.CharField(
                    allow_null=True, help_text="allowance - used, never negative; null when not limited."
                ),
                "exhausted": serializers.BooleanField(),
            },
            many=True,
        ),
    },
)


@extend_schema(
    summary="The calling tenant's entitlements this month",
    description="The tenant's plan and status and, per meter, its usage this UTC calendar month (from "
    "hourly aggregates, so up to the last hourly aggregation). On the free plan (`limited: true`) "
    "each meter also has the monthly free allowance and what remains of it (never negative); "
    "metered tenants are not limited and get `allowance` and `remaining` null.",
    responses={200: ENTITLEMENTS_SCHEMA, **error_responses(401, 403)},
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
                        "remaining": "160",
                        "exhausted": False,
                    },
                ],
            },
            response_only=True,
        ),
    ],
)
@api_view(["GET"])
def entitlements_read(request):
    entitlements = tenant_entitlements(tenant=request_tenant(request))
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
                    "remaining": _plain(item.remaining),
                    "exhausted": item.remaining is not None and item.remaining == 0,
                }
                for item in entitlements.meters
            ],
        }
    )
