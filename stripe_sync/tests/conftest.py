import pytest

from metering.tests.factories import MeterFactory
from stripe_sync.tests.support import link_customer, link_meter


@pytest.fixture
def calls(db):
    return MeterFactory(code="api_calls", name="API calls", unit="call", aggregation="count")


@pytest.fixture
def metered(local_stripe, tenant, calls):
    """A metered tenant with a Stripe customer, and the api_calls meter at Stripe."""
    link_meter(calls)
    link_customer(tenant)
    return tenant
