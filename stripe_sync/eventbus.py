"""Seed 000's ONBOARD events at Stripe: the ExternalSubscriptionIdentifier, checked and linked.

metering/eventbus.py creates or finds the tenant; this links it, registered in
metering.eventbus.subscription_links by StripeSyncConfig.ready (metering never imports stripe_sync).
The identifier is a subscription item (si_..., what seed 000's README names) or a subscription
(sub_...). Its subscription must be live at Stripe and bill one of the platform's metered prices;
then the tenant is linked to the subscription's customer with `tenant_link` (the checks and the
record of `onboard_tenant --customer --subscription`), and an active or trialing subscription puts
the tenant on the metered plan, as its `customer.subscription.*` webhook would, with a history row
whose source is the message's key. Running it again for the same identifier changes nothing.
"""

from __future__ import annotations

import logging

import stripe

from metering.eventbus import BusEventRefused
from stripe_sync.catalog import OnboardingError, stripe_error_message
from stripe_sync.client import StripeNotConfigured, stripe_client
from stripe_sync.mirror import stripe_id
from stripe_sync.onboarding import tenant_link
from stripe_sync.subscriptions import LIVE_STATUSES, METERED_STATUSES
from tenants.models import Tenant
from tenants.services import tenant_change_plan

logger = logging.getLogger(__name__)

# As the subscription webhooks decide (stripe_sync.webhooks._on_subscription): these bill now.


def _retrieve(retrieve, object_id: str, what: str):
    try:
        return retrieve(object_id)
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            raise BusEventRefused(f"no {what} {object_id} at Stripe") from None
        raise


def _link(tenant: Tenant, identifier: str, source: str) -> str:
    client = stripe_client(max_network_retries=2)
    if identifier.startswith("si_"):
        item = _retrieve(client.v1.subscription_items.retrieve, identifier, "subscription item")
        subscription_id = stripe_id(item.subscription)
    else:
        subscription_id = identifier
    subscription = _retrieve(client.v1.subscriptions.retrieve, subscription_id, "subscription")
    if subscription.status not in LIVE_STATUSES:
        raise BusEventRefused(f"subscription {subscription_id} is {subscription.status}, not live")
    customer_id = stripe_id(subscription.customer)
    tenant_link(tenant=tenant, customer_id=customer_id, subscription_id=subscription_id)
    summary = f"tenant {tenant.slug} linked to customer {customer_id}, subscription {subscription_id}"
    if subscription.status in METERED_STATUSES:
        reason = f"subscription {subscription_id} ({subscription.status}) linked by an ONBOARD event"
        if tenant_change_plan(tenant=tenant, plan=Tenant.Plan.METERED, source=source, reason=reason):
            summary += "; plan metered"
    return summary


def tenant_subscription_link_from_bus(*, tenant: Tenant, identifier: str, source: str) -> str:
    """Check `identifier` at Stripe and link the tenant to its customer and subscription; returns
    what it did. BusEventRefused (the message stays in its queue) when it cannot."""
    try:
        summary = _link(tenant, identifier, source)
    except (OnboardingError, StripeNotConfigured) as exc:
        raise BusEventRefused(str(exc)) from None
    except stripe.StripeError as exc:
        raise BusEventRefused(stripe_error_message(exc)) from None
    logger.info("%s: %s", source, summary)
    return summary
