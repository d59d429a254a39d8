from datetime import datetime, timedelta

import pytest
from django.utils import timezone as django_timezone

from metering.tests.factories import MeterFactory
from tenants.tests.factories import TenantFactory


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
