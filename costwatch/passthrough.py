"""Pass-through: a tenant budget's spend over its amount, billed to the tenant in Stripe once a month.

A month is billed when its costs have settled: on the first check at least COSTWATCH_RESTATEMENT_DAYS
after the month ended (AWS restates recent days), so the overage billed is the month's whole overage.
One PassThroughCharge row per (budget, month) is claimed first; the Stripe call carries an
Idempotency-Key derived from (budget, month), so a retry after a crash replays Stripe's answer instead
of billing twice. Stripe keeps keys 24 hours; a pending row older than that is first looked up among
the customer's invoice items by the key in their metadata.
"""

from __future__ import annotations

from datetime import date, timedelta

import stripe
from django.db import transaction
from django.utils import timezone

from core.money import format_money, plain_decimal, to_minor
from costwatch.conf import CostwatchConfig
from costwatch.costs import budget_scope_q, month_end, month_start, next_month, scope_total
from costwatch.models import Budget, PassThroughCharge
from stripe_sync.client import StripeNotConfigured, stripe_client


def settled_month(*, day: date, restatement_days: int) -> date:
    """The latest month whose every day AWS has had `restatement_days` to restate by `day`."""
    settled_through = day - timedelta(days=restatement_days)
    if settled_through == month_end(settled_through):
        return month_start(settled_through)
    return month_start(month_start(settled_through) - timedelta(days=1))


def idempotency_key(*, budget: Budget, month: date) -> str:
    return f"costwatch-pass-through-{budget.pk}-{month:%Y-%m}"


def pass_through_claim(*, budget: Budget, month: date, config: CostwatchConfig) -> PassThroughCharge | None:
    """The month's charge row for the budget, created if the month went over budget; None if it did not."""
    existing = PassThroughCharge.objects.filter(budget=budget, month=month).first()
    if existing:
        return existing
    spend = scope_total(
        metric=config.metric,
        scope=budget_scope_q(budget),
        currency=budget.currency,
        start=month,
        end=next_month(month),
    )
    if spend <= budget.amount:
        return None
    overage = spend - budget.amount
    amount_minor = to_minor(overage * (1 + budget.markup_percent / 100), budget.currency)
    if amount_minor <= 0:
        return None
    charge, _ = PassThroughCharge.objects.get_or_create(
        budget=budget,
        month=month,
        defaults={
            "tenant": budget.tenant,
            "spend": spend,
            "budget_amount": budget.amount,
            "overage": overage,
            "markup_percent": budget.markup_percent,
            "amount_minor": amount_minor,
            "currency": budget.currency,
            "idempotency_key": idempotency_key(budget=budget, month=month),
        },
    )
    return charge


def _existing_item_id(client: stripe.StripeClient, charge: PassThroughCharge) -> str:
    """The invoice item an earlier attempt created, found by the key in its metadata (newest first)."""
    since = int((charge.created_at - timedelta(days=1)).timestamp())
    items = client.v1.invoice_items.list(params={"customer": charge.stripe_customer_id, "limit": 100})
    for item in items.auto_paging_iter():
        if (item.metadata or {}).get("costwatch_key") == charge.idempotency_key:
            return item.id
        if item.date < since:
            break
    return ""


def pass_through_bill(*, charge: PassThroughCharge) -> PassThroughCharge:
    """Create the charge's invoice item in Stripe, unless it is billed or cannot be billed."""
    with transaction.atomic():
        charge = (
            PassThroughCharge.objects.select_for_update(of=("self",))
            .select_related("tenant", "budget")
            .get(pk=charge.pk)
        )
        if charge.status != PassThroughCharge.Status.PENDING:
            return charge
        customer_id = charge.tenant.stripe_customer_id  # Stripe's "cus_..." id
        if not customer_id:
            charge.status = PassThroughCharge.Status.NOT_BILLABLE
            charge.reason = f"tenant {charge.tenant.slug} has no Stripe customer: nothing was billed"
            charge.save(update_fields=["status", "reason"])
            return charge
        charge.stripe_customer_id = customer_id
        charge.attempts += 1
        try:
            client = stripe_client(max_network_retries=2)
            item_id = _existing_item_id(client, charge) if charge.attempts > 1 else ""
            if not item_id:
                item = client.v1.invoice_items.create(
                    params={
                        "customer": customer_id,
                        "amount": charge.amount_minor,
                        "currency": charge.currency.lower(),
                        "description": (
                            f"AWS costs over budget {charge.budget.name}, {charge.month:%B %Y}: "
                            f"{format_money(charge.overage, charge.currency)} "
                            f"+ {plain_decimal(charge.markup_percent)}% markup"
                        ),
                        "metadata": {
                            "costwatch_key": charge.idempotency_key,
                            "budget": str(charge.budget_id),
                            "month": f"{charge.month:%Y-%m}",
                        },
                    },
                    options={"idempotency_key": charge.idempotency_key},
                )
                item_id = item.id
        except StripeNotConfigured as exc:
            charge.reason = str(exc)
        except stripe.InvalidRequestError as exc:
            # Stripe refuses the request itself (an unknown customer, ...): retrying would not help.
            charge.status = PassThroughCharge.Status.NOT_BILLABLE
            charge.reason = f"Stripe refused the invoice item: {exc.user_message or exc}"
        except stripe.StripeError as exc:
            charge.reason = f"Stripe: {exc.user_message or exc} (retried next run)"
        else:
            charge.status = PassThroughCharge.Status.BILLED
            charge.stripe_invoice_item_id = item_id
            charge.billed_at = timezone.now()
            charge.reason = ""
        charge.save()
    return charge


def pass_through_settle(*, day: date, config: CostwatchConfig) -> list[PassThroughCharge]:
    """Bill every pass-through budget's settled month, and retry charges left pending."""
    month = settled_month(day=day, restatement_days=config.restatement_days)
    charges = []
    for budget in Budget.objects.filter(active=True, pass_through=True).select_related("tenant"):
        charge = pass_through_claim(budget=budget, month=month, config=config)
        if charge is not None and charge.status == PassThroughCharge.Status.PENDING:
            charges.append(pass_through_bill(charge=charge))
    earlier = PassThroughCharge.objects.filter(status=PassThroughCharge.Status.PENDING).exclude(month=month)
    charges.extend(pass_through_bill(charge=charge) for charge in earlier)
    return charges
