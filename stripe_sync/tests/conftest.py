import pytest

from stripe_sync.tests.support import link_customer, link_meter


@pytest.fixture
def metered(local_stripe, tenant, api_calls):
    """A metered tenant with a Stripe customer, and the api_calls meter at Stripe."""
    link_meter(api_calls)
    link_customer(tenant)
    return tenant
