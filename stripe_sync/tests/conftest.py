import pytest

from metering.models import Meter
from stripe_sync.tests.support import link_customer, link_meter


@pytest.fixture
def calls(db):
    return Meter.objects.create(code="api_calls", name="API calls", unit="call", aggregation="count")


@pytest.fixture
def metered(local_stripe, tenant, calls):
    """A metered tenant with a Stripe customer, and the api_calls meter at Stripe."""
    link_meter(calls)
    link_customer(tenant)
    return tenant
