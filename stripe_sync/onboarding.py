"""Onboarding a tenant to Stripe: its customer (one, never two), the catalogue, its subscription.

A tenant's customer carries `metadata[tenant_id]`. Onboarding first looks for it with Stripe's
customer search, and creates it with the Idempotency-Key `tenant-<id>-customer-create`: search can
lag behind a create by up to a minute (https://docs.stripe.com/search#data-freshness), and the key
makes a second create within Stripe's 24 hours replay the first one's answer instead of making
another customer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import stripe
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from djstripe.models import Customer, Subscription

from stripe_sync.catalog import (
    MeterSyncResult,
    OnboardingError,
    metered_prices,
    meters_ensure,
    stripe_meter_ensure,
)
from stripe_sync.client import stripe_client
from stripe_sync.mirror import mirror_customer
from stripe_sync.models import TenantSubscription
from stripe_sync.subscriptions import (
    LIVE_STATUSES,
    subscription_record,
    tenant_subscription_ensure,
)
from tenants.models import Tenant

logger = logging.getLogger(__name__)

TENANT_METADATA_KEY = "tenant_id"

__all__ = [
    "OnboardResult",
    "OnboardingError",
    "meters_ensure",
    "stripe_meter_ensure",
    "tenant_customer_ensure",
    "tenant_link",
    "tenant_onboard",
    "tenants_waiting_for_onboarding",
]


@dataclass
class OnboardResult:
    tenant: Tenant
    customer: Customer
    customer_created: bool = False  # a new customer was made at Stripe (False: found or linked)
    meters: list[MeterSyncResult] = field(default_factory=list)
    subscription: Subscription | None = None

    def lines(self) -> list[str]:
        how = "created" if self.customer_created else "found"
        lines = [f"tenant {self.tenant.slug}: Stripe customer {self.customer.id} ({how})"]
        lines += [f"  {result.describe()}" for result in self.meters]
        if self.subscription is not None:
            lines.append(f"  subscription {self.subscription.id} ({self.subscription.status})")
        return lines


def _customer_search(client: stripe.StripeClient, tenant: Tenant):
    query = f"metadata['{TENANT_METADATA_KEY}']:'{tenant.pk}'"
    found = list(client.v1.customers.search(params={"query": query, "limit": 10}).data)
    if len(found) > 1:
        logger.warning(
            "tenant %s has %d Stripe customers (%s); using the oldest",
            tenant.pk,
            len(found),
            ", ".join(c.id for c in found),
        )
    return min(found, key=lambda c: (c.created, c.id)) if found else None


def _customer_create(client: stripe.StripeClient, tenant: Tenant):
    # The parameters must be the same on every attempt for the key to replay: only the tenant's
    # id (fixed) and name; a rename within the key's 24 hours shows as Stripe's idempotency_error.
    try:
        return client.v1.customers.create(
            params={
                "name": tenant.name,
                "metadata": {TENANT_METADATA_KEY: str(tenant.pk), "tenant_slug": tenant.slug},
            },
            options={"idempotency_key": f"tenant-{tenant.pk}-customer-create"},
        )
    except stripe.IdempotencyError as exc:
        raise OnboardingError(
            f"tenant {tenant.slug}: Stripe already created its customer with other details in the "
            f"last 24 hours (renamed?); find it in Stripe by metadata tenant_id={tenant.pk} and link it "
            f"with --customer ({exc.user_message or exc})"
        ) from None


def _link_customer(*, tenant: Tenant, customer: Customer) -> None:
    """Save tenant -> customer under a row lock; refuses a customer of another tenant."""
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        if locked.stripe_customer_id not in (None, customer.id):
            raise OnboardingError(
                f"tenant {tenant.slug} is already linked to Stripe customer {locked.stripe_customer_id}"
            )
        other = Tenant.objects.filter(stripe_customer_id=customer.id).exclude(pk=tenant.pk).first()
        if other is not None:
            raise OnboardingError(f"Stripe customer {customer.id} is already linked to tenant {other.slug}")
        if locked.stripe_customer_id != customer.id:
            locked.stripe_customer = customer
            locked.save(update_fields=["stripe_customer", "updated_at"])
    tenant.stripe_customer = customer


def tenant_customer_ensure(*, tenant: Tenant) -> tuple[Customer, bool]:
    """The tenant's Stripe customer, found or created (never two), mirrored and linked.

    Returns (customer, created at Stripe now).
    """
    client = stripe_client(max_network_retries=2)
    if tenant.stripe_customer_id:
        data = client.v1.customers.retrieve(tenant.stripe_customer_id)
        if data.get("deleted"):
            raise OnboardingError(
                f"tenant {tenant.slug}'s Stripe customer {tenant.stripe_customer_id} was deleted at "
                "Stripe; link another one with --customer"
            )
        return mirror_customer(data), False
    data = _customer_search(client, tenant)
    created = data is None
    if created:
        data = _customer_create(client, tenant)
        # A replay of the key returns the customer made earlier: not new after all.
        created = not (data.last_response and data.last_response.headers.get("Idempotent-Replayed"))
    customer = mirror_customer(data)
    _link_customer(tenant=tenant, customer=customer)
    logger.info("tenant %s linked to Stripe customer %s (created: %s)", tenant.pk, customer.id, created)
    return customer, created


def tenant_onboard(*, tenant: Tenant, actor=None) -> OnboardResult:
    """Onboard `tenant`: its customer, every meter's billing meter and metered price, and for a
    tenant on the metered plan its metered subscription. Safe to run again at any time."""
    customer, created = tenant_customer_ensure(tenant=tenant)
    result = OnboardResult(tenant=tenant, customer=customer, customer_created=created)
    result.meters = meters_ensure()
    if tenant.plan == Tenant.Plan.METERED and metered_prices():
        result.subscription = tenant_subscription_ensure(tenant=tenant)
    logger.info("tenant %s onboarded to Stripe by %s", tenant.pk, actor or "system")
    return result


def tenants_waiting_for_onboarding() -> QuerySet[Tenant]:
    """Active tenants on the metered plan whose usage Stripe cannot bill yet: no Stripe customer, or
    no live metered subscription recorded (never made, or canceled). `tenant_onboard` makes both."""
    live_subscription = TenantSubscription.objects.filter(
        tenant=OuterRef("pk"), subscription__isnull=False, canceled_at__isnull=True
    )
    return Tenant.objects.filter(status=Tenant.Status.ACTIVE, plan=Tenant.Plan.METERED).filter(
        Q(stripe_customer__isnull=True) | ~Exists(live_subscription)
    )


def _retrieve_or_refuse(retrieve, object_id: str, what: str):
    try:
        return retrieve(object_id)
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            raise OnboardingError(f"no {what} {object_id} at Stripe") from None
        raise


def tenant_link(
    *, tenant: Tenant, customer_id: str, subscription_id: str | None = None, actor=None
) -> OnboardResult:
    """Link a customer (and subscription) an operator made at Stripe, after checking them there.

    Nothing is saved unless every check passes: the customer exists and is not deleted, belongs to
    no other tenant (here or by its metadata), and the subscription is live, is that customer's and
    bills at least one of the platform's metered prices.
    """
    customer_id, subscription_id = customer_id.strip(), (subscription_id or "").strip() or None
    if not customer_id.startswith("cus_"):
        raise OnboardingError(f"{customer_id!r} is not a Stripe customer id (cus_...)")
    if subscription_id is not None and not subscription_id.startswith("sub_"):
        raise OnboardingError(f"{subscription_id!r} is not a Stripe subscription id (sub_...)")
    if tenant.stripe_customer_id not in (None, customer_id):
        raise OnboardingError(
            f"tenant {tenant.slug} is already linked to Stripe customer {tenant.stripe_customer_id}"
        )
    other = Tenant.objects.filter(stripe_customer_id=customer_id).exclude(pk=tenant.pk).first()
    if other is not None:
        raise OnboardingError(f"Stripe customer {customer_id} is already linked to tenant {other.slug}")

    client = stripe_client(max_network_retries=2)
    data = _retrieve_or_refuse(client.v1.customers.retrieve, customer_id, "customer")
    if data.get("deleted"):
        raise OnboardingError(f"Stripe customer {customer_id} is deleted")
    owner = (data.get("metadata") or {}).get(TENANT_METADATA_KEY)
    if owner not in (None, "", str(tenant.pk)):
        raise OnboardingError(
            f"Stripe customer {customer_id} belongs to tenant id {owner} (its metadata tenant_id)"
        )

    subscription_data = None
    if subscription_id is not None:
        subscription_data = _retrieve_or_refuse(
            client.v1.subscriptions.retrieve, subscription_id, "subscription"
        )
        owner_customer = subscription_data.customer
        owner_customer = owner_customer if isinstance(owner_customer, str) else owner_customer.id
        if owner_customer != customer_id:
            raise OnboardingError(
                f"subscription {subscription_id} belongs to customer {owner_customer}, not {customer_id}"
            )
        if subscription_data.status not in LIVE_STATUSES:
            raise OnboardingError(f"subscription {subscription_id} is {subscription_data.status}")
        prices = metered_prices()
        if not prices:
            raise OnboardingError(
                "no meter has a metered price at Stripe yet: run onboard_tenant without --subscription "
                "(or the StripeMeter admin's 'Create at Stripe') first"
            )
        billed = {item.price.id for item in subscription_data["items"].data} & set(prices.values())
        if not billed:
            raise OnboardingError(
                f"subscription {subscription_id} has none of the platform's metered prices "
                f"({', '.join(sorted(prices.values()))})"
            )
        taken = (
            TenantSubscription.objects.filter(subscription_id=subscription_id).exclude(tenant=tenant).first()
        )
        if taken is not None:
            raise OnboardingError(f"subscription {subscription_id} is already linked to another tenant")

    if not owner:
        data = client.v1.customers.update(
            customer_id,
            params={"metadata": {TENANT_METADATA_KEY: str(tenant.pk), "tenant_slug": tenant.slug}},
        )
    with transaction.atomic():
        customer = mirror_customer(data)
        _link_customer(tenant=tenant, customer=customer)
        result = OnboardResult(tenant=tenant, customer=customer)
        if subscription_data is not None:
            result.subscription = subscription_record(tenant=tenant, data=subscription_data)
    logger.info("tenant %s linked by %s to %s %s", tenant.pk, actor or "system", customer_id, subscription_id)
    return result
