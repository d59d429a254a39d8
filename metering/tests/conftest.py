from datetime import datetime, timedelta

import pytest
from django.utils import timezone as django_timezone

from metering.ingest import meter_cache
from metering.models import Meter, MeterFilter
from tenants.tests.factories import TenantFactory


@pytest.fixture(autouse=True)
def _fresh_meter_cache():
    # Meters are recreated (with new ids) in every test; the ingestion cache must not outlive them.
    meter_cache.clear()
    yield
    meter_cache.clear()


@pytest.fixture
def api_calls(db):
    return Meter.objects.create(code="api_calls", name="API calls", unit="call", aggregation="count")


@pytest.fixture
def storage(db):
    return Meter.objects.create(code="storage_gb", name="Storage", unit="GB", aggregation="sum")


@pytest.fixture
def make_meter(db):
    def make(code: str, aggregation: str, unique_property: str = "", **filters) -> Meter:
        meter = Meter.objects.create(
            code=code, name=code, aggregation=aggregation, unique_property=unique_property
        )
        for prop, values in filters.items():
            MeterFilter.objects.create(
                meter=meter, property=prop, operator="in" if len(values) > 1 else "eq", values=values
            )
        return meter

    return make


# The access-log importer's tests (test_access_log.py, test_access_log_robustness.py).
@pytest.fixture
def meter():
    return Meter.objects.create(code="api_requests", name="API requests", aggregation="count")


@pytest.fixture
def acme():
    return TenantFactory(slug="acme")


@pytest.fixture
def moment() -> datetime:
    """A recent whole second, well inside the 35-day window."""
    return django_timezone.now().replace(microsecond=0) - timedelta(hours=2)
