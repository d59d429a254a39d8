"""Checkout: a Stripe-hosted page where a tenant adds a card and starts its metered subscription.

mode=subscription with the meters' metered prices: Stripe collects the card, makes it the
subscription's default payment method and starts the subscription in one step, and
`tenant_subscription_ensure` later adopts that subscription rather than making another. (mode=setup
would only save a card, leaving it to be made the default and the subscription to be started by
us afterwards.) A tenant that already has a live metered subscription is refused: a second one
would bill the same meter events twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from stripe_sync.catalog import OnboardingError, metered_prices, meters_ensure
from stripe_sync.client import stripe_client
from stripe_sync.onboarding import tenant_customer_ensure
from stripe_sync.subscriptions import live_metered_subscriptions
from tenants.models import Tenant


class AlreadySubscribed(Exception):
    def __init__(self, subscription_id: str):
        super().__init__(f"the tenant already has a metered subscription ({subscription_id})")
        self.subscription_id = subscription_id


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str


def checkout_session_create(*, tenant: Tenant, success_url: str, cancel_url: str) -> CheckoutSession:
    """A Checkout Session for `tenant`'s metered subscription (its customer onboarded first)."""
    tenant_customer_ensure(tenant=tenant)
    prices = metered_prices()
    if not prices:
        meters_ensure()
        prices = metered_prices()
    if not prices:
        raise OnboardingError("no meter has a metered price: billing is not set up")
    client = stripe_client(max_network_retries=2)
    live = live_metered_subscriptions(client, tenant.stripe_customer_id, prices)
    if live:
        raise AlreadySubscribed(live[0].id)
    metadata = {"tenant_id": str(tenant.pk), "tenant_slug": tenant.slug}
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "customer": tenant.stripe_customer_id,
            # Metered prices take no quantity: usage comes from meter events.
            "line_items": [{"price": price_id} for price_id in sorted(prices.values())],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "client_reference_id": str(tenant.pk),
            "metadata": metadata,
            "subscription_data": {"metadata": metadata},
        }
    )
    return CheckoutSession(id=session.id, url=session.url)
