"""Helpers for stripe_sync's tests: Stripe objects made at the local Stripe server, usage ingested."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone

from metering.aggregation import usage_aggregate
from metering.ingest import usage_events_record, usage_events_validate
from metering.models import HourlyAggregate, Meter
from stripe_sync.catalog import stripe_meter_ensure
from stripe_sync.client import stripe_client
from stripe_sync.mirror import mirror_customer
from stripe_sync.models import StripeMeter
from tenants.models import Tenant


def hour_ago(hours: int) -> datetime:
    """The start of the hour `hours` hours before now (real time: the local Stripe server's clock)."""
    return (timezone.now() - timedelta(hours=hours)).replace(minute=0, second=0, microsecond=0)


def link_customer(tenant: Tenant, *, plan: str = Tenant.Plan.METERED) -> str:
    """Give `tenant` a customer at the local Stripe server, mirrored and linked; returns its id."""
    customer = stripe_client().v1.customers.create(
        params={"name": tenant.name, "metadata": {"tenant_id": str(tenant.pk)}}
    )
    tenant.stripe_customer = mirror_customer(customer)
    tenant.plan = plan
    tenant.save()
    return customer.id


def link_meter(meter: Meter) -> StripeMeter:
    """The meter's billing meter at the local Stripe server, made as onboarding makes it."""
    return stripe_meter_ensure(meter=meter).stripe_meter


def ingest(tenant: Tenant, meter: Meter, hour: datetime, quantities, *, prefix: str = "e") -> None:
    """Record one event per quantity, spread over `hour`, then aggregate."""
    events = [
        {
            "id": f"{prefix}-{meter.code}-{hour:%d%H}-{i}",
            "meter": meter.code,
            "quantity": str(q),
            "timestamp": (hour + timedelta(seconds=i)).isoformat(),
        }
        for i, q in enumerate(quantities)
    ]
    now = timezone.now()
    usage_events_record(
        tenant=tenant, events=usage_events_validate(payload={"events": events}, now=now), now=now
    )
    usage_aggregate(trigger="test")


def local_total(tenant: Tenant, meter: Meter) -> Decimal:
    return HourlyAggregate.objects.filter(tenant=tenant, meter=meter).aggregate(s=Sum("value"))[
        "s"
    ] or Decimal(0)


def stripe_total(server, customer: str, event_name: str) -> Decimal:
    return sum(server.meter_totals(event_name=event_name, customer=customer).values(), Decimal(0))
