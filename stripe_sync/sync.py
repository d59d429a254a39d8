"""Mirror Stripe into dj-stripe's tables: products, prices, customers, subscriptions, invoices.

Every page of every list is walked (auto_paging_iter). One object that dj-stripe cannot store does
not stop the run: it is counted as failed, with its id and the error, and the rest goes on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import stripe

from stripe_sync.client import stripe_client
from stripe_sync.mirror import (
    mirror_customer,
    mirror_invoice,
    mirror_price,
    mirror_product,
    mirror_subscription,
)
from tenants.models import Tenant

logger = logging.getLogger(__name__)

KINDS = ("products", "prices", "customers", "subscriptions", "invoices")
MAX_ERRORS_KEPT = 20


@dataclass
class SyncResult:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def add_failure(self, object_id: str, exc: Exception) -> None:
        self.failed += 1
        logger.warning("could not mirror %s: %s", object_id, exc, exc_info=True)
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(f"{object_id}: {exc}")

    def as_dict(self) -> dict:
        return {**self.counts, "failed": self.failed, "errors": self.errors}

    def summary(self) -> str:
        counts = ", ".join(f"{kind}: {self.counts[kind]}" for kind in KINDS if kind in self.counts)
        return f"{counts}, failed: {self.failed}"


def _mirror_all(result: SyncResult, kind: str, pages, mirror) -> None:
    for data in pages.auto_paging_iter():
        try:
            mirror(data)
        except (stripe.StripeError, ValueError, TypeError, LookupError) as exc:
            result.add_failure(data.id, exc)
        else:
            result.counts[kind] += 1


def stripe_sync_all() -> SyncResult:
    """Mirror every product, price, customer, subscription and invoice of the account."""
    client = stripe_client(max_network_retries=2)
    result = SyncResult()
    # Parents first, so dj-stripe finds what the next kind refers to without fetching it again.
    _mirror_all(result, "products", client.v1.products.list(params={"limit": 100}), mirror_product)
    _mirror_all(
        result, "prices", client.v1.prices.list(params={"limit": 100, "expand": ["data.tiers"]}), mirror_price
    )
    _mirror_all(result, "customers", client.v1.customers.list(params={"limit": 100}), mirror_customer)
    _mirror_all(
        result,
        "subscriptions",
        client.v1.subscriptions.list(params={"limit": 100, "status": "all"}),
        mirror_subscription,
    )
    _mirror_all(result, "invoices", client.v1.invoices.list(params={"limit": 100}), mirror_invoice)
    logger.info("stripe sync: %s", result.summary())
    return result


def tenant_stripe_sync(*, tenant: Tenant) -> SyncResult:
    """Mirror one tenant's customer, subscriptions and invoices."""
    result = SyncResult(counts={"customers": 0, "subscriptions": 0, "invoices": 0})
    if not tenant.stripe_customer_id:
        return result
    client = stripe_client(max_network_retries=2)
    customer_id = tenant.stripe_customer_id
    data = client.v1.customers.retrieve(customer_id)
    if data.get("deleted"):
        result.add_failure(customer_id, ValueError("the customer is deleted at Stripe"))
        return result
    mirror_customer(data)
    result.counts["customers"] = 1
    _mirror_all(
        result,
        "subscriptions",
        client.v1.subscriptions.list(params={"customer": customer_id, "status": "all", "limit": 100}),
        mirror_subscription,
    )
    _mirror_all(
        result,
        "invoices",
        client.v1.invoices.list(params={"customer": customer_id, "limit": 100}),
        mirror_invoice,
    )
    return result
