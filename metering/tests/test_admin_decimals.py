"""Decimals in the metering admin as an operator reads them: no exponent notation, no 12 stored zeros."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from bs4 import BeautifulSoup

from metering.models import Price
from metering.tests.factories import HourlyAggregateFactory, MeterFactory, PriceFactory, UsageEventFactory
from tenants.tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

TIERS = [{"up_to": 1000, "unit_amount": "0.5"}, {"up_to": None, "unit_amount": "0.25", "flat_amount": "100"}]


def soup(response) -> BeautifulSoup:
    assert response.status_code == 200
    return BeautifulSoup(response.content, "html.parser")


def test_a_tiered_price_shows_unit_amount_0_not_0e_12(admin_client):
    meter = MeterFactory(code="api_calls")
    price = PriceFactory(meter=meter, model=Price.Model.GRADUATED, unit_amount=Decimal(0), tiers=TIERS)

    for url in (f"/admin/metering/meter/{meter.pk}/change/", f"/admin/metering/price/{price.pk}/change/"):
        page = soup(admin_client.get(url))
        # The inline's empty form (its name has __prefix__) is left aside.
        [field] = [f for f in page.select('input[name$="unit_amount"]') if "__prefix__" not in f["name"]]
        assert field["value"] == "0", url
        assert "E-" not in page.get_text()

    listed = soup(admin_client.get("/admin/metering/price/"))
    assert listed.select_one("td.field-unit_amount").get_text() == "0"


def test_quantities_are_listed_with_their_significant_decimals(admin_client):
    tenant = TenantFactory()
    meter = MeterFactory(code="storage_gb")
    hour = datetime(2026, 11, 20, 10, tzinfo=UTC)
    HourlyAggregateFactory(tenant=tenant, meter=meter, hour=hour, value=Decimal("12.5"))
    UsageEventFactory(tenant=tenant, meter=meter, timestamp=hour, quantity=Decimal("1500"))

    aggregates = soup(admin_client.get("/admin/metering/hourlyaggregate/"))
    assert aggregates.select_one("td.field-value").get_text() == "12.5"
    events = soup(admin_client.get("/admin/metering/usageevent/"))
    assert events.select_one("td.field-quantity").get_text() == "1,500"


def test_a_view_only_page_shows_decimals_plainly(admin_client):
    tenant = TenantFactory()
    meter = MeterFactory(code="storage_gb")
    hour = datetime(2026, 11, 20, 10, tzinfo=UTC)
    event = UsageEventFactory(tenant=tenant, meter=meter, timestamp=hour, quantity=Decimal("2.5"))
    aggregate = HourlyAggregateFactory(tenant=tenant, meter=meter, hour=hour, value=Decimal("0"))

    page = soup(admin_client.get(f"/admin/metering/usageevent/{event.pk}/change/"))
    assert page.select_one(".field-quantity__plain .readonly").get_text() == "2.5"
    assert page.select_one(".field-quantity__plain label").get_text() == "Quantity:"
    page = soup(admin_client.get(f"/admin/metering/hourlyaggregate/{aggregate.pk}/change/"))
    assert page.select_one(".field-value__plain .readonly").get_text() == "0"
    assert "0.000000000000" not in page.get_text()
