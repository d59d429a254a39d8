"""Seed 000's ONBOARD events with an ExternalSubscriptionIdentifier: checked at the local Stripe server
and linked, from an SQS queue on the moto server (metering/eventbus.py, stripe_sync/eventbus.py)."""

import pytest

from metering.tests.support import consume, summary, usage_queue
from stripe_sync.catalog import meters_ensure
from stripe_sync.client import stripe_client
from stripe_sync.models import StripeMeter, TenantSubscription
from stripe_sync.tests.onboarding_support import meter_with_price
from tenants.models import Tenant, TenantChange
from tenants.tests.factories import TenantFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalogue(local_stripe):
    """The platform's meter with its metered price at Stripe."""
    meter_with_price()
    meters_ensure()
    return StripeMeter.objects.get()


@pytest.fixture
def queue(aws):
    return usage_queue()


@pytest.fixture
def subscription(catalogue):
    """What seed 000's README has a SaaS make at Stripe first: a customer subscribed to the price."""
    client = stripe_client()
    customer = client.v1.customers.create(params={"name": "Tenant Zero Inc."})
    return client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": catalogue.stripe_price_id}]}
    )


def item_of(subscription) -> str:
    return subscription["items"].data[0].id


def test_onboard_with_a_subscription_item_creates_links_and_meters_the_tenant(
    local_stripe, queue, subscription
):
    message_id = queue.send({"TenantID": "Tenant0", "ExternalSubscriptionIdentifier": item_of(subscription)})

    out, err = consume(queue.url)

    assert (out, err) == (summary(received=1, processed=1), "")
    tenant = Tenant.objects.get(external_id="Tenant0")
    assert tenant.stripe_customer_id == subscription.customer
    assert tenant.plan == Tenant.Plan.METERED
    assert TenantSubscription.objects.get(tenant=tenant).subscription_id == subscription.id
    assert local_stripe.get(subscription.customer)["metadata"]["tenant_id"] == str(tenant.pk)
    history = list(
        TenantChange.objects.filter(tenant=tenant).order_by("id").values_list("field", "new_value", "source")
    )
    assert history == [
        ("created", "free/active", f"sqs:{message_id}"),
        ("plan", "metered", f"sqs:{message_id}"),
    ]
    assert queue.count() == 0

    # Redelivered: found, already linked, already metered; nothing changes.
    queue.send({"TenantID": "Tenant0", "ExternalSubscriptionIdentifier": item_of(subscription)})
    out, _ = consume(queue.url)
    assert out == summary(received=1, processed=1)
    assert Tenant.objects.filter(external_id="Tenant0").count() == 1
    assert TenantChange.objects.filter(tenant=tenant).count() == 2


def test_onboard_with_a_subscription_id_links_an_existing_tenant(local_stripe, queue, subscription):
    tenant = TenantFactory(slug="zero", external_id="Tenant0", plan=Tenant.Plan.FREE)

    queue.send({"TenantID": "zero", "ExternalSubscriptionIdentifier": subscription.id})

    out, _ = consume(queue.url)

    assert out == summary(received=1, processed=1)
    tenant.refresh_from_db()
    assert (tenant.stripe_customer_id, tenant.plan) == (subscription.customer, Tenant.Plan.METERED)
    assert Tenant.objects.count() == 1


def _canceled(subscription):
    stripe_client().v1.subscriptions.cancel(subscription.id)
    return subscription


@pytest.mark.parametrize(
    ("identifier", "reason"),
    [
        (lambda sub: "si_nothere", "no subscription item si_nothere at Stripe"),
        (lambda sub: "sub_nothere", "no subscription sub_nothere at Stripe"),
        (lambda sub: item_of(_canceled(sub)), "is canceled, not live"),
    ],
)
def test_an_identifier_stripe_does_not_confirm_stays_in_the_queue(
    local_stripe, queue, subscription, identifier, reason
):
    queue.send({"TenantID": "Tenant0", "ExternalSubscriptionIdentifier": identifier(subscription)})

    out, err = consume(queue.url)

    assert out == summary(received=1, failed=1)
    assert reason in err
    assert queue.count() == 1
    tenant = Tenant.objects.get(external_id="Tenant0")  # created; linked on a later try, if ever
    assert (tenant.stripe_customer_id, tenant.plan) == (None, Tenant.Plan.FREE)


def test_a_subscription_of_a_customer_linked_to_another_tenant_is_refused(local_stripe, queue, subscription):
    other = TenantFactory(slug="other", stripe_customer=None)
    stripe_client().v1.customers.update(
        subscription.customer, params={"metadata": {"tenant_id": str(other.pk)}}
    )
    queue.send({"TenantID": "Tenant0", "ExternalSubscriptionIdentifier": subscription.id})

    out, err = consume(queue.url)

    assert out == summary(received=1, failed=1)
    assert f"belongs to tenant id {other.pk}" in err


def test_without_stripe_configured_an_identifier_stays_in_the_queue(
    local_stripe, queue, subscription, settings
):
    settings.STRIPE_API_KEY = ""
    queue.send({"TenantID": "Tenant0", "ExternalSubscriptionIdentifier": item_of(subscription)})
    queue.send({"TenantID": "Tenant1", "ExternalSubscriptionIdentifier": None})

    out, err = consume(queue.url)

    assert out == summary(received=2, processed=1, failed=1)
    assert "STRIPE_API_KEY is not set" in err
    assert queue.count() == 1
    assert set(Tenant.objects.values_list("external_id", flat=True)) == {"Tenant0", "Tenant1"}
