"""Outgoing webhook events from Stripe's: payment.* and subscription.*, with the tenant block.

Called by the Stripe webhook handlers (stripe_sync.webhooks) in the transaction that processes the
Stripe event, with the object as Stripe has it now (re-fetched), so a rolled-back processing sends
nothing and a replayed Stripe event publishes nothing twice (each key is de-duplicated by outbound).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from outbound.services import webhook_event_publish
from stripe_sync.mirror import stripe_id
from stripe_sync.models import TenantSubscription, WebhookEvent
from stripe_sync.subscriptions import ENDED_STATUSES
from tenants.events import tenant_event_block
from tenants.models import Tenant

# Statuses in which a subscription has ended (Stripe's `customer.subscription.deleted` leaves it
# canceled; incomplete_expired and unpaid end it without a deletion).
NON_PAYMENT_REASONS = frozenset({"payment_failed", "payment_disputed"})


def _time(value: Any) -> str | None:
    """Stripe's Unix seconds as ISO-8601 UTC (None stays None)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC).isoformat().replace("+00:00", "Z")
    return None


def _stripe_event(event: WebhookEvent) -> dict:
    return {"id": event.stripe_id, "type": event.type}


# --- payments ----------------------------------------------------------------------------------


def _invoice_payment(invoice: dict) -> dict:
    return {
        "source": "invoice",
        "invoice": invoice.get("id"),
        "payment_intent": stripe_id(invoice.get("payment_intent")),
        "status": invoice.get("status"),
        "currency": invoice.get("currency"),
        # Stripe's integer minor units (cents), as Stripe sends them.
        "amount": invoice.get("amount_paid")
        if invoice.get("status") == "paid"
        else invoice.get("amount_due"),
        "amount_due": invoice.get("amount_due"),
        "amount_paid": invoice.get("amount_paid"),
        "amount_remaining": invoice.get("amount_remaining"),
        "attempt_count": invoice.get("attempt_count"),
        "hosted_invoice_url": invoice.get("hosted_invoice_url"),
        "failure": None,
    }


def _intent_payment(intent: dict) -> dict:
    error = intent.get("last_payment_error") or None
    return {
        "source": "payment_intent",
        "invoice": stripe_id(intent.get("invoice")),
        "payment_intent": intent.get("id"),
        "status": intent.get("status"),
        "currency": intent.get("currency"),
        "amount": intent.get("amount"),
        "amount_received": intent.get("amount_received"),
        "failure": {
            "code": error.get("code"),
            "decline_code": error.get("decline_code"),
            "message": error.get("message"),
        }
        if isinstance(error, dict)
        else None,
    }


def payment_key(kind: str, *, event: WebhookEvent, invoice_id: str | None, intent_id: str | None) -> str:
    """payment.succeeded: once per invoice (`invoice.paid` and `invoice.payment_succeeded`, and a
    payment intent that names its invoice, are one payment), else once per payment intent; failures
    and actions: once per Stripe event (each attempt is news)."""
    if kind == "payment.succeeded":
        return (
            f"payment.succeeded:invoice:{invoice_id}" if invoice_id else f"payment.succeeded:pi:{intent_id}"
        )
    return f"{kind}:{event.stripe_id}"


def payment_publish(*, kind: str, tenant: Tenant, event: WebhookEvent, obj: dict) -> None:
    """Publish payment.succeeded / .failed / .action_required for an invoice or a payment intent."""
    payment = _intent_payment(obj) if obj.get("object") == "payment_intent" else _invoice_payment(obj)
    webhook_event_publish(
        type=kind,
        data={"tenant": tenant_event_block(tenant), "payment": payment, "stripe_event": _stripe_event(event)},
        key=payment_key(
            kind, event=event, invoice_id=payment["invoice"], intent_id=payment["payment_intent"]
        ),
        tenant=tenant,
    )


# --- subscriptions -----------------------------------------------------------------------------


def _period_end(sub: dict) -> int | None:
    """current_period_end: at the top level on older API versions, on the items since 2025-03-31."""
    if isinstance(sub.get("current_period_end"), int):
        return sub["current_period_end"]
    items = ((sub.get("items") or {}).get("data")) or []
    ends = [item.get("current_period_end") for item in items if isinstance(item, dict)]
    ends = [end for end in ends if isinstance(end, int) and not isinstance(end, bool)]
    return max(ends) if ends else None


def subscription_end_kind(sub: dict) -> tuple[str, str]:
    """(event type, reason) of an ended subscription: canceled by the customer or an operator, or
    expired by non-payment or at the end of its term.

    - incomplete_expired / unpaid: expired (the first payment never came / retries exhausted);
    - canceled by this platform for a failed payment (stripe_sync.subscriptions): expired, payment_failed;
    - Stripe's cancellation_details.reason payment_failed / payment_disputed: expired;
    - cancellation_requested (the customer, or an operator by API or Dashboard): canceled;
    - otherwise, ended at its period end or its cancel_at: expired (period_end); else canceled.
    """
    status = sub.get("status")
    if status in ("incomplete_expired", "unpaid"):
        return "subscription.expired", status
    if TenantSubscription.objects.filter(subscription_id=sub.get("id"), canceled_at__isnull=False).exists():
        return "subscription.expired", "payment_failed"
    reason = ((sub.get("cancellation_details") or {}).get("reason")) or None
    if reason in NON_PAYMENT_REASONS:
        return "subscription.expired", reason
    if reason == "cancellation_requested":
        return "subscription.canceled", reason
    ended_at = sub.get("ended_at")
    limits = [t for t in (sub.get("cancel_at"), _period_end(sub)) if isinstance(t, int)]
    if isinstance(ended_at, int) and any(ended_at >= limit for limit in limits):
        return "subscription.expired", "period_end"
    return "subscription.canceled", reason or "canceled"


def subscription_publish(*, tenant: Tenant, event: WebhookEvent, sub: dict) -> str:
    """Publish the subscription event a `customer.subscription.*` Stripe event means; returns its type.

    created: subscription.created (once per subscription); deleted, or an update to an ended status:
    subscription.canceled or .expired (once per subscription); any other update: subscription.updated
    (once per Stripe event).
    """
    sub_id = sub.get("id")
    reason = None
    if event.type == "customer.subscription.created":
        kind, key = "subscription.created", f"subscription.created:{sub_id}"
    elif event.type == "customer.subscription.deleted" or sub.get("status") in ENDED_STATUSES:
        (kind, reason), key = subscription_end_kind(sub), f"subscription.ended:{sub_id}"
    else:
        kind, key = "subscription.updated", f"subscription.updated:{event.stripe_id}"
    data = {
        "tenant": tenant_event_block(tenant),
        "subscription": {
            "id": sub_id,
            "status": sub.get("status"),
            "cancel_at_period_end": sub.get("cancel_at_period_end"),
            "cancel_at": _time(sub.get("cancel_at")),
            "canceled_at": _time(sub.get("canceled_at")),
            "ended_at": _time(sub.get("ended_at")),
            "current_period_end": _time(_period_end(sub)),
        },
        "reason": reason,
        "stripe_event": _stripe_event(event),
    }
    webhook_event_publish(type=kind, data=data, key=key, tenant=tenant)
    return kind
