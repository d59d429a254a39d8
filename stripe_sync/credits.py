"""Billing credit for tenants through Stripe's credit grants, applicable to metered prices.

https://docs.stripe.com/billing/subscriptions/usage-based/billing-credits

A grant is written (`CreditGrant`, status pending) and committed before Stripe is asked, so the
audit record exists whatever happens next. The create carries the Idempotency-Key
`credit-grant-<row id>-create` and the row's id in the grant's metadata: a retry within Stripe's 24
hours replays Stripe's first answer, and a later one first looks for a grant carrying that id at
Stripe, so one row never becomes two grants. An answer that never came (timeout, 5xx) leaves the row
pending with the error; Stripe refusing it (4xx) marks it failed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import stripe
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from stripe_sync.catalog import stripe_error_message
from stripe_sync.client import StripeNotConfigured, stripe_client
from stripe_sync.models import CreditGrant
from tenants.models import Tenant

logger = logging.getLogger(__name__)

GRANT_METADATA_KEY = "platform_credit_grant_id"
# Credit grants apply to metered prices only (Stripe: "We currently only support metered prices").
METERED_SCOPE = {"price_type": "metered"}
# Stripe's 4xx answers that are final for the same request; a 409 (idempotency key in use), a 429
# and anything 5xx may succeed on a retry.
_FINAL_STATUSES = frozenset({400, 401, 402, 403, 404})

CREDIT_GRANT_NOT_ONBOARDED = "tenant {slug} has no Stripe customer yet: onboard it to Stripe first"
CREDIT_GRANT_EXPIRY_PAST = "must be in the future"
CREDIT_GRANT_NOT_ACTIVE = "credit grant {pk} is {status}: only an active grant can be voided"
CREDIT_GRANT_NOT_RETRYABLE = "credit grant {pk} is {status}: only a pending or failed grant is sent again"


class CreditGrantError(Exception):
    """A grant or void that cannot be made; `field` names the input at fault, when one is."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


def _actor_name(actor) -> str:
    return (getattr(actor, "get_username", lambda: "")() or str(actor or ""))[:150]


def _actor_user(actor):
    return actor if getattr(actor, "pk", None) and hasattr(actor, "get_username") else None


def credit_grant_create(
    *,
    tenant: Tenant,
    amount_minor: int,
    currency: str,
    category: str,
    reason: str,
    expires_at: datetime | None = None,
    actor=None,
) -> CreditGrant:
    """Record a grant of `amount_minor` to `tenant` and make it at Stripe; returns the row, whose
    status says what Stripe answered (active, failed, or pending when no answer came).

    Call it outside a transaction, so the row is committed before Stripe is asked; inside one (the
    admin's add form), call `credit_grant_record` and `credit_grant_send` after commit instead."""
    grant = credit_grant_record(
        tenant=tenant,
        amount_minor=amount_minor,
        currency=currency,
        category=category,
        reason=reason,
        expires_at=expires_at,
        actor=actor,
    )
    return credit_grant_send(grant=grant)


def credit_grant_record(
    *,
    tenant: Tenant,
    amount_minor: int,
    currency: str,
    category: str,
    reason: str,
    expires_at: datetime | None = None,
    actor=None,
) -> CreditGrant:
    """Check and write the pending grant row (nothing is sent to Stripe yet)."""
    if not tenant.stripe_customer_id:
        raise CreditGrantError(CREDIT_GRANT_NOT_ONBOARDED.format(slug=tenant.slug), field="tenant")
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
        raise CreditGrantError("must be a positive amount", field="amount")
    currency = (currency or "").strip().lower()
    if len(currency) != 3 or not currency.isascii() or not currency.isalpha():
        raise CreditGrantError("must be a three-letter ISO currency code", field="currency")
    if category not in CreditGrant.Category.values:
        raise CreditGrantError(f"must be one of {', '.join(CreditGrant.Category.values)}", field="category")
    reason = (reason or "").strip()
    if not reason:
        raise CreditGrantError("say why the credit is granted", field="reason")
    if expires_at is not None and expires_at <= timezone.now():
        raise CreditGrantError(CREDIT_GRANT_EXPIRY_PAST, field="expires_at")
    grant = CreditGrant.objects.create(
        tenant=tenant,
        customer_id=tenant.stripe_customer_id,
        amount_minor=amount_minor,
        currency=currency,
        category=category,
        expires_at=expires_at,
        reason=reason[:500],
        granted_by=_actor_user(actor),
        granted_by_name=_actor_name(actor),
    )
    logger.info("credit grant %s recorded for tenant %s by %s", grant.pk, tenant.pk, grant.granted_by_name)
    return grant


def _grant_params(grant: CreditGrant) -> dict:
    params = {
        "customer": grant.customer_id,
        "amount": {"type": "monetary", "monetary": {"currency": grant.currency, "value": grant.amount_minor}},
        "applicability_config": {"scope": METERED_SCOPE},
        "category": grant.category,
        "name": grant.reason[:100],
        "metadata": {
            GRANT_METADATA_KEY: str(grant.pk),
            "tenant_id": str(grant.tenant_id),
            "granted_by": grant.granted_by_name,
        },
    }
    if grant.expires_at is not None:
        params["expires_at"] = int(grant.expires_at.timestamp())
    return params


def _found_at_stripe(client: stripe.StripeClient, grant: CreditGrant):
    """The grant this row made at Stripe on an earlier attempt whose answer was lost, if any."""
    listed = client.v1.billing.credit_grants.list(params={"customer": grant.customer_id, "limit": 100})
    for data in listed.auto_paging_iter():
        if (data.get("metadata") or {}).get(GRANT_METADATA_KEY) == str(grant.pk):
            return data
    return None


def credit_grant_send(*, grant: CreditGrant) -> CreditGrant:
    """Make a pending (or failed) grant at Stripe; records Stripe's answer or error on the row."""
    with transaction.atomic():
        grant = CreditGrant.objects.select_for_update().get(pk=grant.pk)
        if grant.status not in (CreditGrant.Status.PENDING, CreditGrant.Status.FAILED):
            raise CreditGrantError(CREDIT_GRANT_NOT_RETRYABLE.format(pk=grant.pk, status=grant.status))
        earlier_attempts = grant.attempts
        CreditGrant.objects.filter(pk=grant.pk).update(attempts=F("attempts") + 1)
    now = timezone.now()
    try:
        client = stripe_client(max_network_retries=2)
        data = _found_at_stripe(client, grant) if earlier_attempts else None
        if data is None:
            data = client.v1.billing.credit_grants.create(
                params=_grant_params(grant), options={"idempotency_key": grant.idempotency_key}
            )
    except StripeNotConfigured as exc:
        return _record_failure(grant, str(exc), final=True, now=now)
    except stripe.StripeError as exc:
        final = exc.http_status in _FINAL_STATUSES and not isinstance(exc, stripe.APIConnectionError)
        return _record_failure(grant, stripe_error_message(exc), final=final, now=now)
    status = CreditGrant.Status.VOIDED if data.get("voided_at") else CreditGrant.Status.ACTIVE
    CreditGrant.objects.filter(pk=grant.pk).update(
        stripe_id=data.id, status=status, last_error="", sent_at=now
    )
    logger.info("credit grant %s made at Stripe: %s", grant.pk, data.id)
    grant.refresh_from_db()
    return grant


def _record_failure(grant: CreditGrant, error: str, *, final: bool, now: datetime) -> CreditGrant:
    status = CreditGrant.Status.FAILED if final else CreditGrant.Status.PENDING
    CreditGrant.objects.filter(pk=grant.pk).update(status=status, last_error=error[:2000], sent_at=now)
    logger.warning("credit grant %s not made at Stripe (%s): %s", grant.pk, status, error)
    grant.refresh_from_db()
    return grant


def credit_grant_void(*, grant: CreditGrant, reason: str, actor=None) -> CreditGrant:
    """Void an active grant at Stripe (its unused credit can no longer be applied) and record who did
    it and why. Raises CreditGrantError when the grant is not active or Stripe refuses."""
    reason = (reason or "").strip()
    if not reason:
        raise CreditGrantError("say why the grant is voided", field="reason")
    with transaction.atomic():
        # The lock makes two operators voiding the same grant void it at Stripe once.
        grant = CreditGrant.objects.select_for_update().get(pk=grant.pk)
        if grant.status != CreditGrant.Status.ACTIVE or not grant.stripe_id:
            raise CreditGrantError(CREDIT_GRANT_NOT_ACTIVE.format(pk=grant.pk, status=grant.status))
        try:
            stripe_client(max_network_retries=2).v1.billing.credit_grants.void_grant(grant.stripe_id)
        except StripeNotConfigured as exc:
            raise CreditGrantError(str(exc)) from None
        except stripe.StripeError as exc:
            message = stripe_error_message(exc)
            CreditGrant.objects.filter(pk=grant.pk).update(last_error=message[:2000])
            raise CreditGrantError(message) from None
        grant.status = CreditGrant.Status.VOIDED
        grant.voided_at = timezone.now()
        grant.voided_by = _actor_user(actor)
        grant.voided_by_name = _actor_name(actor)
        grant.void_reason = reason[:500]
        grant.last_error = ""
        grant.save(
            update_fields=["status", "voided_at", "voided_by", "voided_by_name", "void_reason", "last_error"]
        )
    logger.info("credit grant %s (%s) voided by %s", grant.pk, grant.stripe_id, grant.voided_by_name)
    return grant


def tenant_credit_grants(*, tenant: Tenant) -> QuerySet[CreditGrant]:
    """The tenant's grants, newest first."""
    return CreditGrant.objects.filter(tenant=tenant).order_by("-created_at", "-id")


@dataclass(frozen=True)
class CreditBalance:
    available: int  # minor units
    ledger: int
    currency: str


def credit_balances(*, customer_id: str) -> list[CreditBalance]:
    """The customer's credit balances for metered prices at Stripe, one per currency."""
    summary = stripe_client(max_network_retries=1).v1.billing.credit_balance_summary.retrieve(
        params={
            "customer": customer_id,
            "filter": {"type": "applicability_scope", "applicability_scope": METERED_SCOPE},
        }
    )
    balances = []
    for entry in summary.get("balances") or []:
        available = (entry.get("available_balance") or {}).get("monetary") or {}
        ledger = (entry.get("ledger_balance") or {}).get("monetary") or {}
        balances.append(
            CreditBalance(
                available=int(available.get("value") or 0),
                ledger=int(ledger.get("value") or 0),
                currency=available.get("currency") or ledger.get("currency") or "",
            )
        )
    return balances
