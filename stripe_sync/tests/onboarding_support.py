"""Data for the onboarding, sync and checkout tests: meters with metered-plan prices."""

from __future__ import annotations

from decimal import Decimal

from metering.models import Meter, Price
from metering.tests.factories import MeterFactory, PriceFactory
from tenants.models import Tenant


def meter_with_price(code: str = "api_calls", *, model: str = Price.Model.PER_UNIT, **price) -> Meter:
    meter = MeterFactory(code=code, name=code.replace("_", " ").title(), unit="call", aggregation="count")
    defaults = {"unit_amount": Decimal("0.5")}
    defaults.update(price)
    PriceFactory(meter=meter, plan=Tenant.Plan.METERED, model=model, **defaults)
    return meter
