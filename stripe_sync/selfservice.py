"""A tenant's own billing, read and managed with its API key: the Stripe Customer Portal, its
invoices (dj-stripe's mirror), the coming invoice (Stripe's preview, else the platform's estimate)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import stripe
from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone
from djstripe.models import Invoice

from core.money import plain_decimal
from metering.estimates import month_bounds, tenant_month_estimate
from stripe_sync.circuit import CircuitOpen, circuit_check
from stripe_sync.client import NOT_CONFIGURED_REASON, StripeNotConfigured, stripe_client
from stripe_sync.credits import credit_balances, tenant_credit_grants
from stripe_sync.mirror import stripe_id
from stripe_sync.models import StripeMeter, TenantSubscription
from stripe_sync.onboarding import tenant_customer_ensure
from stripe_sync.subscriptions import LIVE_STATUSES
from tenants.models import Tenant

# What a tenant sees of its invoices: drafts change and may be deleted, and have no hosted page yet
# (Stripe's own portal lists finalized invoices only).
TENANT_INVOICE_STATUSES = ("open", "paid", "uncollectible", "void")


@dataclass(frozen=True)
class PortalSession:
    id: str
    url: str


def portal_session_create(*, tenant: Tenant, return_url: str) -> PortalSession:
    """A Stripe Customer Portal session for `tenant`'s customer (made first when missing)."""
    tenant_customer_ensure(tenant=tenant)
    params = {"customer": tenant.stripe_customer_id, "return_url": return_url}
    if settings.STRIPE_PORTAL_CONFIGURATION:
        params["configuration"] = settings.STRIPE_PORTAL_CONFIGURATION
    session = stripe_client(max_network_retries=2).v1.billing_portal.sessions.create(params=params)
    return PortalSession(id=session.id, url=session.url)


def stripe_unreachable_reason(exc: Exception) -> str | None:
    """Why Stripe cannot be asked now, when `exc` says so: not configured, the circuit breaker open,
    no answer, a 5xx, a 429, or the platform's key refused; None for an answer about the request
    itself (a 4xx), which is not a reason to answer from elsewhere."""
    if isinstance(exc, StripeNotConfigured):
        return NOT_CONFIGURED_REASON
    if isinstance(exc, CircuitOpen):
        return "calls to Stripe are paused by the circuit breaker after repeated failures"
    if isinstance(exc, stripe.APIConnectionError):
        return "Stripe did not answer"
    if isinstance(exc, stripe.AuthenticationError):
        return "Stripe refused the platform's API key"
    if (
        isinstance(exc, stripe.StripeError)
        and exc.http_status
        and (exc.http_status >= 500 or exc.http_status == 429)
    ):
        return f"Stripe answered HTTP {exc.http_status}"
    return None


def _iso(timestamp) -> str | None:
    if timestamp in (None, ""):
        return None
    return datetime.fromtimestamp(int(timestamp), tz=UTC).isoformat().replace("+00:00", "Z")


# --- invoices ------------------------------------------------------------------------------------


def tenant_invoices(*, tenant: Tenant, status: str | None = None) -> QuerySet[Invoice]:
    """`tenant`'s finalized invoices in dj-stripe's mirror, newest first; none before onboarding."""
    if not tenant.stripe_customer_id:
        return Invoice.objects.none()
    found = Invoice.objects.filter(customer__id=tenant.stripe_customer_id)
    found = (
        found.filter(stripe_data__status=status)
        if status
        else found.filter(stripe_data__status__in=TENANT_INVOICE_STATUSES)
    )
    return found.order_by("-created", "-id")


def invoice_summary(invoice: Invoice) -> dict:
    """An invoice as the API shows it: Stripe's fields, amounts in minor units, times in ISO-8601."""
    data = invoice.stripe_data or {}
    return {
        "id": invoice.id,
        "number": data.get("number"),
        "status": data.get("status"),
        "currency": data.get("currency"),
        "period_start": _iso(data.get("period_start")),
        "period_end": _iso(data.get("period_end")),
        **{
            name: int(data.get(name) or 0)
            for name in ("amount_due", "amount_paid", "amount_remaining", "subtotal", "total")
        },
        "hosted_invoice_url": data.get("hosted_invoice_url"),
        "invoice_pdf": data.get("invoice_pdf"),
        "created": _iso(data.get("created")) or (invoice.created and invoice.created.isoformat()),
        "due_date": _iso(data.get("due_date")),
    }


# --- the coming invoice --------------------------------------------------------------------------

NOTE_NO_SUBSCRIPTION = (
    "No live metered subscription at Stripe: this is the platform's estimate of the current month "
    "from its hourly usage, before any credit."
)
NOTE_UNREACHABLE = (
    "Stripe's invoice preview is not available ({reason}): this is the platform's estimate of the "
    "current month from its hourly usage, before any credit."
)


def _live_subscription_id(tenant: Tenant) -> str | None:
    if not tenant.stripe_customer_id:
        return None
    record = (
        TenantSubscription.objects.filter(tenant=tenant, canceled_at__isnull=True, subscription__isnull=False)
        .select_related("subscription")
        .first()
    )
    if record is None or (record.subscription.stripe_data or {}).get("status") not in LIVE_STATUSES:
        return None
    return record.subscription.id


def upcoming_invoice(*, tenant: Tenant) -> dict:
    """The tenant's coming invoice: Stripe's preview for its live metered subscription, else (no
    subscription, or Stripe unreachable) the platform's own estimate, marked by `source` and `note`.
    Stripe refusing the request itself (a 4xx) raises its error."""
    subscription_id = _live_subscription_id(tenant)
    if subscription_id is None:
        return upcoming_estimate(tenant=tenant, note=NOTE_NO_SUBSCRIPTION)
    try:
        # The breaker is the reporting sender's view of Stripe: while it is open, nobody waits for
        # a timeout here either.
        circuit_check()
        preview = stripe_client(max_network_retries=1).v1.invoices.create_preview(
            params={"customer": tenant.stripe_customer_id, "subscription": subscription_id}
        )
    except (StripeNotConfigured, CircuitOpen, stripe.StripeError) as exc:
        reason = stripe_unreachable_reason(exc)
        if reason is None:
            raise
        return upcoming_estimate(tenant=tenant, note=NOTE_UNREACHABLE.format(reason=reason))
    return _from_preview(preview)


def _meter_codes_by_price() -> dict[str, str]:
    return dict(StripeMeter.objects.exclude(stripe_price_id="").values_list("stripe_price_id", "meter__code"))


def _from_preview(preview) -> dict:
    codes = _meter_codes_by_price()
    lines = []
    for line in (preview.get("lines") or {}).get("data") or []:
        price = ((line.get("pricing") or {}).get("price_details") or {}).get("price")
        price_id = stripe_id(price)
        quantity = line.get("quantity_decimal")
        if quantity is None:
            quantity = line.get("quantity")
        quantity = None if quantity is None else Decimal(str(quantity))
        lines.append(
            {
                "description": line.get("description") or "",
                "price": price_id,
                "meter": codes.get(price_id or ""),
                "quantity": None if quantity is None else plain_decimal(quantity),
                "amount": int(line.get("amount") or 0),
            }
        )
    credits = [
        int(entry.get("amount") or 0)
        for entry in preview.get("total_pretax_credit_amounts") or []
        if entry.get("type") == "credit_balance_transaction"
    ]
    return {
        "source": "stripe",
        "note": None,
        "currency": preview.get("currency"),
        "period_start": _iso(preview.get("period_start")),
        "period_end": _iso(preview.get("period_end")),
        "subtotal": int(preview.get("subtotal") or 0),
        "total": int(preview.get("total") or 0),
        "amount_due": int(preview.get("amount_due") or 0),
        "credit_applied": sum(credits),
        "lines": lines,
    }


def upcoming_estimate(*, tenant: Tenant, note: str, now: datetime | None = None) -> dict:
    """The current UTC month priced by the platform (metering.estimates) in the preview's shape."""
    now = now or timezone.now()
    start, end = month_bounds(now)
    priced = [
        estimate
        for estimate in tenant_month_estimate(tenant=tenant, month=now.date())
        if estimate.charge is not None and estimate.currency
    ]
    currencies = sorted({estimate.currency.lower() for estimate in priced})
    currency = currencies[0] if currencies else None
    if len(currencies) > 1:
        note += f" The plan's prices are in several currencies; only {currency.upper()} is shown."
    price_by_meter = dict(
        StripeMeter.objects.exclude(stripe_price_id="").values_list("meter", "stripe_price_id")
    )
    lines = [
        {
            "description": f"{estimate.meter.name or estimate.meter.code}: "
            f"{plain_decimal(estimate.billable)} billable of {plain_decimal(estimate.usage)}",
            "price": price_by_meter.get(estimate.meter.pk) or None,
            "meter": estimate.meter.code,
            "quantity": plain_decimal(estimate.billable),
            "amount": estimate.charge.amount_minor,
        }
        for estimate in priced
        if estimate.currency.lower() == currency
    ]
    total = sum(line["amount"] for line in lines)
    return {
        "source": "estimate",
        "note": note,
        "currency": currency,
        "period_start": start.isoformat().replace("+00:00", "Z"),
        "period_end": end.isoformat().replace("+00:00", "Z"),
        "subtotal": total,
        "total": total,
        "amount_due": total,
        "credit_applied": None,
        "lines": lines,
    }


# --- credits -------------------------------------------------------------------------------------

NOTE_CREDITS_NOT_ONBOARDED = "The tenant has no Stripe customer yet, so no credit balance."
NOTE_CREDITS_NONE = "No credit balance at Stripe."
NOTE_CREDITS_UNREACHABLE = "The credit balance is not available ({reason}); the grants are listed."


def tenant_credits(*, tenant: Tenant) -> dict:
    """The tenant's credit balance at Stripe (metered prices) and its grants. When Stripe cannot be
    reached the grants are still listed, the balance is None and `note` says why; Stripe refusing
    the request itself raises its error."""
    now = timezone.now()
    grants = [
        {
            "id": grant.pk,
            "amount": grant.amount_minor,
            "currency": grant.currency,
            "category": grant.category,
            "status": grant.status_at(now),
            "expires_at": grant.expires_at,
            "created": grant.created_at,
        }
        for grant in tenant_credit_grants(tenant=tenant)
    ]
    balances, note = None, None
    if not tenant.stripe_customer_id:
        note = NOTE_CREDITS_NOT_ONBOARDED
    else:
        try:
            circuit_check()
            balances = [vars(balance) for balance in credit_balances(customer_id=tenant.stripe_customer_id)]
        except (StripeNotConfigured, CircuitOpen, stripe.StripeError) as exc:
            reason = stripe_unreachable_reason(exc)
            if reason is None:
                raise
            note = NOTE_CREDITS_UNREACHABLE.format(reason=reason)
        else:
            note = None if balances else NOTE_CREDITS_NONE
    return {
        "balance": balances[0] if balances else None,
        "balances": balances,
        "note": note,
        "grants": grants,
    }
