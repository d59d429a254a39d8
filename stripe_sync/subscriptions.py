"""The tenant's metered subscription at Stripe: one item per meter's metered price.

`TenantSubscription` says which subscription is the tenant's. A live one found at Stripe (made by
Checkout, or by an operator) is adopted rather than duplicated: two live subscriptions on the same
meters would bill the same usage twice.
"""

from __future__ import annotations

import logging

import stripe
from django.db import transaction
from django.utils import timezone
from djstripe.models import Subscription

from stripe_sync.catalog import OnboardingError, idempotency_digest, metered_prices
from stripe_sync.client import stripe_client
from stripe_sync.mirror import mirror_subscription
from stripe_sync.models import TenantSubscription
from tenants.models import Tenant

logger = logging.getLogger(__name__)

# Statuses in which a subscription still bills (or will, once paid); Stripe's others are final.
LIVE_STATUSES = frozenset({"active", "trialing", "past_due", "unpaid", "incomplete", "paused"})
# A subscription in these bills the metered plan; one in ENDED_STATUSES is over.
METERED_STATUSES = frozenset({"active", "trialing"})
ENDED_STATUSES = frozenset({"canceled", "unpaid", "incomplete_expired"})


def _meter_of(item) -> str | None:
    recurring = item.price.get("recurring") or {}
    return recurring.get("meter")


def _is_metered_for_us(subscription, prices: dict[str, str]) -> bool:
    return any(_meter_of(item) in prices for item in subscription["items"].data)


def live_metered_subscriptions(client: stripe.StripeClient, customer_id: str, prices: dict[str, str]) -> list:
    """The customer's live subscriptions that bill one of the platform's meters, oldest first."""
    found = [
        sub
        for sub in client.v1.subscriptions.list(
            params={"customer": customer_id, "status": "all", "limit": 100}
        ).auto_paging_iter()
        if sub.status in LIVE_STATUSES and _is_metered_for_us(sub, prices)
    ]
    return sorted(found, key=lambda sub: (sub.created, sub.id))


def subscription_record(*, tenant: Tenant, data) -> Subscription:
    """Mirror `data` and record it as the tenant's metered subscription."""
    subscription = mirror_subscription(data)
    with transaction.atomic():
        record, _ = TenantSubscription.objects.select_for_update().get_or_create(tenant=tenant)
        if record.subscription_id != subscription.id:
            record.subscription = subscription
            record.canceled_at = None
            record.cancel_reason = ""
            record.save()
    return subscription


def _items_ensure(client: stripe.StripeClient, data, prices: dict[str, str]):
    """One item per meter on the subscription, each with the meter's current metered price."""
    changed = False
    by_meter = {_meter_of(item): item for item in data["items"].data}
    for meter_id, price_id in prices.items():
        item = by_meter.get(meter_id)
        if item is None:
            client.v1.subscription_items.create(
                params={"subscription": data.id, "price": price_id},
                options={"idempotency_key": f"{data.id}-item-{price_id}"},
            )
            changed = True
        elif item.price.id != price_id:
            # The local price changed and a new Stripe price took over the lookup key.
            client.v1.subscription_items.update(item.id, params={"price": price_id})
            changed = True
    return client.v1.subscriptions.retrieve(data.id) if changed else data


def tenant_subscription_ensure(*, tenant: Tenant) -> Subscription:
    """The tenant's live metered subscription at Stripe, made when missing, mirrored; returns it.

    Needs the tenant's Stripe customer and the meters' metered prices (onboarding makes both).
    """
    if not tenant.stripe_customer_id:
        raise OnboardingError(f"tenant {tenant.slug} has no Stripe customer yet: onboard it first")
    prices = metered_prices()
    if not prices:
        raise OnboardingError("no meter has a metered price at Stripe yet: onboard a tenant or create them")
    client = stripe_client(max_network_retries=2)
    with transaction.atomic():
        # One ensure per tenant at a time; a concurrent one waits and then finds the subscription.
        record, _ = TenantSubscription.objects.select_for_update().get_or_create(tenant=tenant)
        data = None
        if record.subscription_id:
            data = client.v1.subscriptions.retrieve(record.subscription_id)
            if data.status not in LIVE_STATUSES:
                # It ended (at the platform's request or at Stripe's, e.g. the customer canceled):
                # a new subscription needs a new Idempotency-Key, or Stripe replays the old create.
                data = None
                record.generation += 1
        if data is None:
            live = live_metered_subscriptions(client, tenant.stripe_customer_id, prices)
            if len(live) > 1:
                logger.warning(
                    "tenant %s has %d live metered subscriptions (%s); using the oldest",
                    tenant.pk,
                    len(live),
                    ", ".join(sub.id for sub in live),
                )
            data = live[0] if live else None
        if data is None:
            data = _subscription_create(client, tenant, record, prices)
        data = _items_ensure(client, data, prices)
        subscription = mirror_subscription(data)
        record.subscription = subscription
        record.canceled_at = None
        record.cancel_reason = ""
        record.save()
    logger.info("tenant %s metered subscription %s (%s)", tenant.pk, subscription.id, subscription.status)
    return subscription


def _subscription_create(client: stripe.StripeClient, tenant: Tenant, record: TenantSubscription, prices):
    items = [{"price": price_id} for price_id in sorted(prices.values())]
    for _ in range(2):
        # The key names the generation: a tenant whose subscription ended gets a new one, while a
        # retry of the same create (same prices) replays Stripe's first answer.
        key = f"tenant-{tenant.pk}-subscription-{record.generation}-{idempotency_digest(items)}"
        data = client.v1.subscriptions.create(
            params={
                "customer": tenant.stripe_customer_id,
                "items": items,
                "metadata": {"tenant_id": str(tenant.pk), "tenant_slug": tenant.slug},
            },
            options={"idempotency_key": key},
        )
        if _replayed(data):
            # Stripe answered from its idempotency cache: the status is the one at creation.
            data = client.v1.subscriptions.retrieve(data.id)
        if data.status in LIVE_STATUSES:
            return data
        # A replay of a subscription that has ended since: the next generation makes a new one.
        record.generation += 1
        record.save(update_fields=["generation", "updated_at"])
    raise OnboardingError(
        f"Stripe made subscription {data.id} for tenant {tenant.slug} but it is {data.status}"
    )


def _replayed(data) -> bool:
    response = getattr(data, "last_response", None)
    return bool(response and (response.headers or {}).get("Idempotent-Replayed") == "true")


def tenant_subscription_cancel(*, tenant: Tenant, reason: str) -> Subscription | None:
    """Cancel the tenant's metered subscription(s) at Stripe now, invoicing usage not yet invoiced
    (so reported usage is still billed), and mirror them. Returns the recorded one, or None when
    the tenant had none. Safe to repeat."""
    if not tenant.stripe_customer_id:
        return None
    client = stripe_client(max_network_retries=2)
    prices = metered_prices()
    with transaction.atomic():
        record, _ = TenantSubscription.objects.select_for_update().get_or_create(tenant=tenant)
        targets = {
            sub.id: sub for sub in live_metered_subscriptions(client, tenant.stripe_customer_id, prices)
        }
        if record.subscription_id and record.subscription_id not in targets:
            targets[record.subscription_id] = client.v1.subscriptions.retrieve(record.subscription_id)
        recorded = None
        for subscription_id, data in targets.items():
            if data.status in LIVE_STATUSES:
                data = client.v1.subscriptions.cancel(
                    subscription_id,
                    params={"invoice_now": True, "cancellation_details": {"comment": reason[:500]}},
                )
            mirrored = mirror_subscription(data)
            if subscription_id == record.subscription_id or recorded is None:
                recorded = mirrored
        if recorded is None:
            return None
        record.subscription = recorded
        record.canceled_at = timezone.now()
        record.cancel_reason = reason[:500]
        # The next subscription is a new one, with a new Idempotency-Key.
        record.generation += 1
        record.save()
    logger.info("tenant %s metered subscription %s canceled: %s", tenant.pk, recorded.id, reason)
    return recorded
