from datetime import datetime, timedelta

import pytest
from django.utils import timezone as django_timezone

from metering.ingest import meter_cache
from metering.tests.factories import MeterFactory
from tenants.tests.factories import TenantFactory


@pytest.fixture(autouse=True)
def _fresh_meter_cache():
    # Meters are recreated (with new ids) in every test; the ingestion cache must not outlive them.
    meter_cache.clear()
    yield
    meter_cache.clear()


@pytest.fixture
def api_calls(db):
    return MeterFactory(code="api_calls", name="API calls", unit="call", aggregation="count")


@pytest.fixture
def storage(db):
    return MeterFactory(code="storage_gb", name="Storage", unit="GB", aggregation="sum")


# The access-log importer's tests (test_access_log.py, test_access_log_robustness.py).
@pytest.fixture
def meter():
    return MeterFactory(code="api_requests", name="API requests", aggregation="count")


@pytest.fixture
def acme():
    return TenantFactory(slug="acme")


@pytest.fixture
def moment() -> datetime:
    """A recent whole second, well inside the 35-day window."""
    return django_timezone.now().replace(microsecond=0) - timedelta(hours=2)
