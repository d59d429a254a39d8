"""The Stripe webhook inbox: verify, store once per Stripe event id, process once, in any order.

Receiving (the HTTP view) only verifies the signature and stores the raw event; a Celery task runs
`webhook_event_process`, which locks the row, re-fetches the event's object from Stripe (payloads
can be stale and deliveries arrive out of order), mirrors it through dj-stripe and runs the
platform's handler for the event type. The handlers set the tenant's plan from Stripe's *current*
state, so processing an event twice, late or after a newer one ends in the same place.
"""

from __future__ import annotations

import json
import logging
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import stripe
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from djstripe import models as djstripe_models

from core.json_input import json_problem
from core.parsing import MAX_DATETIME, MIN_DATETIME, ParseError, parse_datetime, parse_int
from stripe_sync import mirror
from stripe_sync.client import stripe_client
from stripe_sync.events import payment_publish, subscription_publish
from stripe_sync.mirror import stripe_id
from stripe_sync.models import BillingNotification, WebhookEvent
from stripe_sync.notifications import billing_notification_record
from stripe_sync.subscriptions import ENDED_STATUSES, METERED_STATUSES
from tenants.models import Tenant, TenantChange
from tenants.services import tenant_change_plan

logger = logging.getLogger(__name__)

# Stripe's own default (stripe.Webhook.DEFAULT_TOLERANCE): a signature older than this is refused,
# which is what makes a captured delivery useless for replay attacks.
SIGNATURE_TOLERANCE_SECONDS = 300
# A delivery of an event that is stored but still `received` after this long was never picked up
# (the broker was down when it was first queued): queue it again.
REQUEUE_AFTER = timedelta(seconds=60)
ERROR_MAX_CHARS = 20_000
# Stripe-Signature is "t=...,v1=...[,v1=...][,v0=...]": a few hundred characters at most.
MAX_SIGNATURE_HEADER = 2000
# Stripe's events nest a few levels (expanded objects a few more); deeper is not an event of Stripe's.
MAX_PAYLOAD_DEPTH = 64
MIN_CREATED = int(MIN_DATETIME.timestamp())
MAX_CREATED = int(MAX_DATETIME.timestamp())

THIN_EVENT_OBJECT = "v2.core.event"
# Plan-changing event types that report something that happened (a card attached, a payment
# failed) rather than a state to follow: one that Stripe created before another plan event already
# applied for the tenant is not applied over it (a late card must not undo a newer failure).
PLAN_TRIGGER_TYPES = (
    "payment_method.attached",
    "setup_intent.succeeded",
    "checkout.session.completed",
    "invoice.payment_failed",
)
SUBSCRIPTION_TYPES = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
)


class WebhookRejected(Exception):
    """A delivery that is not a verified Stripe event; answered 400 and not stored."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Received:
    event: WebhookEvent
    created: bool


@dataclass
class Outcome:
    status: str
    result: str
    tenant: Tenant | None = None
    plan_applied: bool = False


@dataclass
class _Context:
    """What a handler works with: the stored event, a Stripe client, and the object re-fetched."""

    event: WebhookEvent
    client: stripe.StripeClient
    obj: dict = field(default_factory=dict)


# --- receiving --------------------------------------------------------------------------------


def webhook_payload_verify(*, body: bytes, signature: str | None, secret: str) -> dict:
    """Check `Stripe-Signature` against the raw body and return the parsed event.

    Snapshot events (`"object": "event"`) and thin v2 notifications (`"object": "v2.core.event"`)
    are signed the same way. Raises WebhookRejected naming what is wrong.
    """
    if not secret:
        logger.error("a Stripe webhook arrived but STRIPE_WEBHOOK_SECRET is not set; refused")
        raise WebhookRejected("webhook_not_configured", "Webhooks are not configured (no signing secret).")
    if not signature:
        raise WebhookRejected("signature_missing", "The Stripe-Signature header is missing.")
    if len(signature) > MAX_SIGNATURE_HEADER or not signature.isascii() or not signature.isprintable():
        # stripe-python compares signatures with hmac.compare_digest, which raises TypeError on
        # non-ASCII text: refuse such a header before it gets there.
        raise WebhookRejected("signature_invalid", "The Stripe-Signature header is not a Stripe signature.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookRejected("invalid_body", "The body is not UTF-8 text.") from None
    try:
        stripe.WebhookSignature.verify_header(text, signature, secret, SIGNATURE_TOLERANCE_SECONDS)
    except stripe.SignatureVerificationError as exc:
        # stripe-python's messages: no matching signature, timestamp outside the tolerance zone, ...
        raise WebhookRejected("signature_invalid", f"Signature verification failed: {exc}") from None
    return webhook_payload_parse(text=text)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _field_problem(payload: dict) -> str | None:
    """Why a field the platform reads from the payload has a type or value it cannot use, or None.

    The one place the payload's shape is checked: receiving (`_event_fields`) and processing
    (`_dispatch`, `_refetch_and_mirror`) read only what passed here.
    """
    if "created" in payload and payload["created"] is not None:
        try:
            _stripe_time(payload["created"])
        except ParseError as exc:
            return f"The event's created {exc}."
    for name in ("api_version",):
        if payload.get(name) is not None and not isinstance(payload[name], str):
            return f"The event's {name} is not a string."
    if payload.get("livemode") is not None and not isinstance(payload["livemode"], bool):
        return "The event's livemode is not true or false."
    if payload["object"] == THIN_EVENT_OBJECT:
        related = payload.get("related_object")
        if related is not None and not isinstance(related, dict):
            return "The event's related_object is not an object."
        if related and related.get("id") is not None and not isinstance(related["id"], str):
            return "The event's related_object.id is not a string."
    else:
        obj = payload["data"]["object"]
        for name in ("id", "object"):
            if obj.get(name) is not None and not isinstance(obj[name], str):
                return f"The event's data.object.{name} is not a string."
    return None


def webhook_payload_parse(*, text: str) -> dict:
    """Parse an event's JSON (already verified, or from an operator's file) and check its shape:
    anything that could not be stored (NUL, unpaired surrogates, non-finite numbers, nesting deeper
    than MAX_PAYLOAD_DEPTH) or read (wrong types in the fields the platform reads) is refused here."""
    try:
        payload = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise WebhookRejected("invalid_body", f"The body is not valid JSON: {exc}") from None
    except RecursionError:
        raise WebhookRejected("invalid_body", "The body is nested too deeply.") from None
    if not isinstance(payload, dict):
        raise WebhookRejected("invalid_body", "The body is not a JSON object.")
    if (problem := json_problem(payload, max_depth=MAX_PAYLOAD_DEPTH)) is not None:
        raise WebhookRejected("invalid_body", f"The body {problem}.")
    if payload.get("object") not in ("event", THIN_EVENT_OBJECT):
        raise WebhookRejected("invalid_body", 'The body is not a Stripe event ("object" is not "event").')
    for name in ("id", "type"):
        if not isinstance(payload.get(name), str) or not payload[name]:
            raise WebhookRejected("invalid_body", f"The event has no {name}.")
    if len(payload["id"]) > 255 or len(payload["type"]) > 255:
        raise WebhookRejected("invalid_body", "The event's id or type is too long.")
    if payload["object"] == "event" and not isinstance(payload.get("data"), dict):
        raise WebhookRejected("invalid_body", "The event has no data.object.")
    if payload["object"] == "event" and not isinstance(payload["data"].get("object"), dict):
        raise WebhookRejected("invalid_body", "The event has no data.object.")
    if (problem := _field_problem(payload)) is not None:
        raise WebhookRejected("invalid_body", problem)
    return payload


def _stripe_time(value: Any) -> datetime | None:
    """An event's `created`: Unix seconds (snapshot events) or ISO-8601 (v2 events), between 2000
    and 2100; None when absent. Raises ParseError otherwise."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if not MIN_CREATED <= value <= MAX_CREATED:
            bounds = f"{MIN_DATETIME:%Y-%m-%d} and {MAX_DATETIME:%Y-%m-%d}"
            raise ParseError(f"must be a Unix time between {bounds}")
        return datetime.fromtimestamp(value, tz=UTC)
    return parse_datetime(value, what="")


def _event_fields(payload: dict) -> dict:
    thin = payload["object"] == THIN_EVENT_OBJECT
    if thin:
        object_id = (payload.get("related_object") or {}).get("id") or ""
    else:
        object_id = payload["data"]["object"].get("id") or ""
    return {
        "type": payload["type"],
        "livemode": bool(payload.get("livemode")),
        "api_version": (payload.get("api_version") or "")[:64],
        "thin": thin,
        "stripe_created": _stripe_time(payload.get("created")),
        "object_id": str(object_id)[:255],
        "payload": payload,
    }


def webhook_event_receive(*, payload: dict, enqueue: bool = True) -> Received:
    """Store a verified event once per Stripe event id and queue its processing after commit.

    Two deliveries of one event racing meet at the unique index: get_or_create inserts in a
    savepoint and, on the conflict, reads the row the other one committed.
    """
    with transaction.atomic():
        event, created = WebhookEvent.objects.get_or_create(
            stripe_id=payload["id"], defaults=_event_fields(payload)
        )
        stale = (
            event.status == WebhookEvent.Status.RECEIVED
            and event.received_at < timezone.now() - REQUEUE_AFTER
        )
        if enqueue and (created or stale):
            transaction.on_commit(partial(webhook_event_enqueue, event_id=event.pk))
    return Received(event=event, created=created)


def webhook_event_enqueue(*, event_id: int) -> None:
    from stripe_sync.tasks.webhooks import process_stripe_event

    process_stripe_event.delay(event_id)


STALE_AFTER = timedelta(minutes=10)


def webhook_events_requeue_stale(*, older_than: timedelta = STALE_AFTER) -> int:
    """Queue again events left `received` or `processing` for longer than `older_than`.

    Their task was lost (a broker that lost its data, a worker killed after the broker gave up on
    it) and Stripe will not deliver them again, having had its 200. Processing is idempotent, so a
    task that is merely slow is harmless to queue twice. Returns how many were queued.
    """
    cutoff = timezone.now() - older_than
    stale = list(
        WebhookEvent.objects.filter(
            status__in=(WebhookEvent.Status.RECEIVED, WebhookEvent.Status.PROCESSING), updated_at__lt=cutoff
        ).values_list("pk", flat=True)[:1000]
    )
    for event_id in stale:
        webhook_event_enqueue(event_id=event_id)
    if stale:
        logger.warning("queued %d Stripe event(s) again whose processing was lost", len(stale))
    return len(stale)


@transaction.atomic
def webhook_event_replay(*, event: WebhookEvent) -> None:
    """Process a stored event again (an operator's replay): back to `received`, queued after commit.

    Harmless on a processed event: handlers follow Stripe's current state, and notifications are
    de-duplicated.
    """
    WebhookEvent.objects.filter(pk=event.pk).update(
        status=WebhookEvent.Status.RECEIVED, error="", updated_at=timezone.now()
    )
    event.status = WebhookEvent.Status.RECEIVED
    transaction.on_commit(partial(webhook_event_enqueue, event_id=event.pk))


# --- processing ---------------------------------------------------------------------------------


def webhook_event_process(*, event_id: int) -> WebhookEvent | None:
    """Process one stored event unless it already was; returns the row (None if it is gone).

    Safe to run any number of times and by several workers at once: the row lock makes a second
    worker wait and then find the event processed. On an error the row is marked failed with the
    traceback and the error is raised again (the task retries with backoff).
    """
    # Visible while the work runs (and left behind if the worker dies, so the next try is clear).
    WebhookEvent.objects.filter(pk=event_id).exclude(status__in=WebhookEvent.FINAL_STATUSES).update(
        status=WebhookEvent.Status.PROCESSING, attempts=F("attempts") + 1, updated_at=timezone.now()
    )
    try:
        with transaction.atomic():
            event = WebhookEvent.objects.select_for_update().filter(pk=event_id).first()
            if event is None or event.is_final:
                return event
            outcome = _dispatch(event)
            event.status = outcome.status
            event.result = outcome.result[:1000]
            event.tenant = outcome.tenant or event.tenant
            event.plan_applied = outcome.plan_applied
            event.error = ""
            event.processed_at = timezone.now()
            event.save(
                update_fields=[
                    "status",
                    "result",
                    "tenant",
                    "plan_applied",
                    "error",
                    "processed_at",
                    "updated_at",
                ]
            )
    except Exception:
        WebhookEvent.objects.filter(pk=event_id).exclude(status__in=WebhookEvent.FINAL_STATUSES).update(
            status=WebhookEvent.Status.FAILED,
            error=traceback.format_exc()[-ERROR_MAX_CHARS:],
            updated_at=timezone.now(),
        )
        logger.exception("processing Stripe event %s failed", event_id)
        raise
    logger.info("Stripe event %s %s: %s (%s)", event.stripe_id, event.type, event.status, event.result)
    return event


def _dispatch(event: WebhookEvent) -> Outcome:
    handlers = _THIN_HANDLERS if event.thin else _HANDLERS
    handler = handlers.get(event.type)
    if handler is None:
        return Outcome(WebhookEvent.Status.IGNORED, f"no handler for {event.type}")
    ctx = _Context(event=event, client=stripe_client(max_network_retries=2))
    if not event.thin:
        # Handlers read only the object as Stripe has it now: one the payload names with another
        # kind than the event type's, or without an id, cannot be fetched and is not acted on.
        stale, kind = event.payload["data"]["object"], _OBJECT_KINDS[event.type]
        if stale.get("object") != kind or not isinstance(stale.get("id"), str) or not stale["id"]:
            return Outcome(
                WebhookEvent.Status.IGNORED,
                f"the event's data.object is not a {kind} with an id; nothing to fetch from Stripe",
            )
        try:
            ctx.obj = _refetch_and_mirror(ctx.client, stale)
        except stripe.InvalidRequestError as exc:
            # A draft deleted since (invoice.created, .updated) is gone at Stripe: nothing to mirror.
            if exc.http_status == 404 and _HANDLERS.get(event.type) is _on_invoice_changed:
                return Outcome(
                    WebhookEvent.Status.IGNORED, f"invoice {stale['id']} no longer exists at Stripe"
                )
            raise
    try:
        return handler(ctx)
    except _NotOurs as why:
        return Outcome(WebhookEvent.Status.IGNORED, f"{why}; nothing to do")


# Stripe objects re-fetched by kind; the payload's copy is only used for its id.
_RETRIEVE = {
    "customer": lambda client, id: client.v1.customers.retrieve(id),
    "subscription": lambda client, id: client.v1.subscriptions.retrieve(id),
    "invoice": lambda client, id: client.v1.invoices.retrieve(id),
    "payment_method": lambda client, id: client.v1.payment_methods.retrieve(id),
    "setup_intent": lambda client, id: client.v1.setup_intents.retrieve(id),
    "payment_intent": lambda client, id: client.v1.payment_intents.retrieve(id),
    "checkout.session": lambda client, id: client.v1.checkout.sessions.retrieve(id),
}
# Kinds stripe_sync.mirror does not cover, mirrored straight through dj-stripe.
_DJSTRIPE_MODELS = {
    "payment_method": djstripe_models.PaymentMethod,
    "setup_intent": djstripe_models.SetupIntent,
    "checkout.session": djstripe_models.Session,
}


def _refetch_and_mirror(client: stripe.StripeClient, stale: dict) -> dict:
    """The event's object as Stripe has it now, mirrored through dj-stripe; the payload's copy for
    kinds the platform neither re-fetches nor mirrors."""
    kind, object_id = stale.get("object", ""), stale.get("id")
    retrieve = _RETRIEVE.get(kind)
    if retrieve is None or not object_id:
        return stale
    current = retrieve(client, object_id)
    if current.get("deleted"):
        return mirror.stripe_dict(current)  # a tombstone ({"id", "deleted": true}): nothing to mirror
    # Subscriptions go through stripe_sync.mirror, which copies current_period_start/end from the
    # items (where API versions since 2025-03-31 put them) to the top level, where dj-stripe 2.11
    # reads them; invoices get their subscription back from parent.subscription_details likewise.
    if mirror.mirror_object(current) is None and kind in _DJSTRIPE_MODELS:
        _DJSTRIPE_MODELS[kind].sync_from_stripe_data(
            mirror.stripe_dict(current), api_key=settings.STRIPE_API_KEY or None
        )
    return mirror.stripe_dict(current)


class _NotOurs(Exception):
    """Nothing to do for this event (no tenant of ours, or the object is no longer in that state);
    the message says why and the event is recorded as ignored."""


def _tenant_for_customer(client: stripe.StripeClient, customer_id: str | None) -> Tenant:
    """The tenant whose Stripe customer this is; raises _NotOurs saying why when there is none.

    First by the link onboarding made (Tenant.stripe_customer), then by the customer's
    `tenant_id` metadata; a tenant found that way and not linked yet is linked to it, so a later
    `tenant_subscription_ensure` cannot make it a second customer.
    """
    if not customer_id:
        raise _NotOurs("the object has no customer")
    tenant = Tenant.objects.filter(stripe_customer__id=customer_id).first()
    if tenant is not None:
        return tenant
    customer = client.v1.customers.retrieve(customer_id)
    if customer.get("deleted"):
        raise _NotOurs(f"customer {customer_id} is deleted")
    tenant_id = str((customer.get("metadata") or {}).get("tenant_id") or "")
    try:
        tenant = Tenant.objects.filter(pk=parse_int(tenant_id, minimum=1, maximum=2**63 - 1)).first()
    except ParseError:  # metadata someone else wrote: "²", "12a", 5,000 digits
        tenant = None
    if tenant is None:
        raise _NotOurs(f"no tenant for customer {customer_id}")
    if tenant.stripe_customer_id is not None:
        raise _NotOurs(
            f"customer {customer_id} names tenant {tenant.slug} in its metadata, "
            f"but that tenant is linked to another customer"
        )
    linked = mirror.mirror_customer(customer)
    Tenant.objects.filter(pk=tenant.pk, stripe_customer__isnull=True).update(stripe_customer=linked)
    tenant.refresh_from_db()
    return tenant


def _superseded(event: WebhookEvent, tenant: Tenant) -> Outcome | None:
    """The outcome "left as is" when a plan event for the tenant that Stripe created after this one
    has already set its plan; None when none has."""
    if event.stripe_created is None:
        return None
    newer = (
        WebhookEvent.objects.filter(
            tenant=tenant,
            type__in=(*PLAN_TRIGGER_TYPES, *SUBSCRIPTION_TYPES),
            plan_applied=True,
            stripe_created__gt=event.stripe_created,
        )
        .exclude(pk=event.pk)
        .order_by("-stripe_created")
        .first()
    )
    if newer is None:
        return None
    return Outcome(
        WebhookEvent.Status.PROCESSED,
        f"{tenant.slug}: left as is; the newer {newer.type} {newer.stripe_id} was already applied",
        tenant,
    )


def _set_plan(ctx: _Context, tenant: Tenant, plan: str, why: str) -> str:
    """Set the tenant's plan for this event; the audit row names the event. Returns a summary."""
    old = tenant.plan
    reason = f"Stripe {ctx.event.type}: {why}"[:500]
    if not tenant_change_plan(tenant=tenant, plan=plan, source=ctx.event.stripe_id, reason=reason):
        return f"{tenant.slug} already {plan}"
    change = TenantChange.objects.filter(
        tenant=tenant, field=TenantChange.Field.PLAN, source=ctx.event.stripe_id
    ).latest("id")
    billing_notification_record(
        kind=BillingNotification.Kind.PLAN_CHANGED,
        key=f"plan_changed:{change.pk}",
        tenant=tenant,
        webhook_event=ctx.event,
        subject=f"Plan changed: {tenant.name} {old} -> {plan}",
        details={"old_plan": old, "new_plan": plan, "reason": reason},
    )
    return f"{tenant.slug}: plan {old} -> {plan}"


def _upgrade(ctx: _Context, customer_id: str | None, why: str) -> Outcome:
    """A payment method is in place: a free tenant goes metered and its metered subscription is made."""
    from stripe_sync.subscriptions import tenant_subscription_ensure

    tenant = _tenant_for_customer(ctx.client, customer_id)
    if (superseded := _superseded(ctx.event, tenant)) is not None:
        return superseded
    summary = _set_plan(ctx, tenant, Tenant.Plan.METERED, why)
    tenant_subscription_ensure(tenant=tenant)
    return Outcome(
        WebhookEvent.Status.PROCESSED, f"{summary}; metered subscription ensured", tenant, plan_applied=True
    )


def _on_payment_method_attached(ctx: _Context) -> Outcome:
    customer_id = stripe_id(ctx.obj.get("customer"))
    if customer_id is None:
        raise _NotOurs(f"payment method {ctx.obj.get('id')} is no longer attached to a customer")
    return _upgrade(ctx, customer_id, f"payment method {ctx.obj['id']} attached")


def _on_setup_intent_succeeded(ctx: _Context) -> Outcome:
    if ctx.obj.get("status") != "succeeded":
        raise _NotOurs(f"setup intent {ctx.obj.get('id')} is {ctx.obj.get('status')} at Stripe")
    return _upgrade(ctx, stripe_id(ctx.obj.get("customer")), f"setup intent {ctx.obj['id']} succeeded")


def _on_checkout_completed(ctx: _Context) -> Outcome:
    if ctx.obj.get("status") != "complete":
        raise _NotOurs(f"checkout session {ctx.obj.get('id')} is {ctx.obj.get('status')} at Stripe")
    return _upgrade(ctx, stripe_id(ctx.obj.get("customer")), f"checkout session {ctx.obj['id']} completed")


def _invoice_details(invoice: dict) -> dict:
    return {
        "invoice": invoice.get("id"),
        "invoice_status": invoice.get("status"),
        "currency": invoice.get("currency"),
        # Stripe's integer minor units (cents), as Stripe sends them.
        "amount_due": invoice.get("amount_due"),
        "amount_paid": invoice.get("amount_paid"),
        "amount_remaining": invoice.get("amount_remaining"),
        "attempt_count": invoice.get("attempt_count"),
        "hosted_invoice_url": invoice.get("hosted_invoice_url"),
    }


def _on_payment_failed(ctx: _Context) -> Outcome:
    """A payment failed: the tenant goes back to free and its metered subscription is canceled,
    unless the invoice has been paid (or voided) since."""
    from stripe_sync.subscriptions import tenant_subscription_cancel

    invoice = ctx.obj
    tenant = _tenant_for_customer(ctx.client, stripe_id(invoice.get("customer")))
    billing_notification_record(
        kind=BillingNotification.Kind.PAYMENT_FAILED,
        key=f"payment_failed:{ctx.event.stripe_id}",
        tenant=tenant,
        webhook_event=ctx.event,
        subject=f"Payment failed: {tenant.name} ({invoice.get('id')})",
        details=_invoice_details(invoice),
    )
    payment_publish(kind="payment.failed", tenant=tenant, event=ctx.event, obj=invoice)
    if invoice.get("status") in ("paid", "void"):
        return Outcome(
            WebhookEvent.Status.PROCESSED,
            f"{tenant.slug}: invoice {invoice['id']} is {invoice['status']} now; plan left as is",
            tenant,
        )
    if (superseded := _superseded(ctx.event, tenant)) is not None:
        return superseded
    why = f"payment of invoice {invoice.get('id')} failed"
    summary = _set_plan(ctx, tenant, Tenant.Plan.FREE, why)
    tenant_subscription_cancel(tenant=tenant, reason=f"Stripe {ctx.event.type} {ctx.event.stripe_id}: {why}")
    return Outcome(
        WebhookEvent.Status.PROCESSED, f"{summary}; metered subscription canceled", tenant, plan_applied=True
    )


def _on_invoice_paid(ctx: _Context) -> Outcome:
    """Recorded: the invoice is mirrored (above) and one payment-succeeded billing event is sent
    per invoice (`invoice.paid` and `invoice.payment_succeeded` both arrive for one payment)."""
    invoice = ctx.obj
    tenant = _tenant_for_customer(ctx.client, stripe_id(invoice.get("customer")))
    if invoice.get("status") != "paid":
        return Outcome(
            WebhookEvent.Status.PROCESSED,
            f"{tenant.slug}: invoice {invoice.get('id')} is {invoice.get('status')} at Stripe",
            tenant,
        )
    billing_notification_record(
        kind=BillingNotification.Kind.PAYMENT_SUCCEEDED,
        key=f"payment_succeeded:{invoice['id']}",
        tenant=tenant,
        webhook_event=ctx.event,
        subject=f"Payment succeeded: {tenant.name} ({invoice['id']})",
        details=_invoice_details(invoice),
    )
    payment_publish(kind="payment.succeeded", tenant=tenant, event=ctx.event, obj=invoice)
    return Outcome(
        WebhookEvent.Status.PROCESSED,
        f"{tenant.slug}: invoice {invoice['id']} paid "
        f"({invoice.get('amount_paid')} {invoice.get('currency')} in minor units)",
        tenant,
    )


def _on_invoice_changed(ctx: _Context) -> Outcome:
    """Mirrored only (above), so the tenant's invoice list (`GET /api/v1/invoices`) follows the
    invoice from finalized to paid, void or uncollectible without waiting for `sync_stripe`."""
    invoice = ctx.obj
    if invoice.get("deleted"):
        return Outcome(WebhookEvent.Status.IGNORED, f"invoice {invoice.get('id')} no longer exists at Stripe")
    tenant = _tenant_for_customer(ctx.client, stripe_id(invoice.get("customer")))
    return Outcome(
        WebhookEvent.Status.PROCESSED,
        f"{tenant.slug}: invoice {invoice.get('id')} mirrored ({invoice.get('status')})",
        tenant,
    )


def _on_invoice_action_required(ctx: _Context) -> Outcome:
    """The invoice's payment needs the customer (3-D Secure): published as payment.action_required."""
    invoice = ctx.obj
    tenant = _tenant_for_customer(ctx.client, stripe_id(invoice.get("customer")))
    if invoice.get("status") in ("paid", "void"):
        return Outcome(
            WebhookEvent.Status.PROCESSED,
            f"{tenant.slug}: invoice {invoice.get('id')} is {invoice.get('status')} now; no action needed",
            tenant,
        )
    payment_publish(kind="payment.action_required", tenant=tenant, event=ctx.event, obj=invoice)
    return Outcome(
        WebhookEvent.Status.PROCESSED,
        f"{tenant.slug}: invoice {invoice.get('id')} needs the customer's action",
        tenant,
    )


# payment_intent.* event type -> (the status the intent must still be in, the outgoing event type)
_INTENT_EVENTS = {
    "payment_intent.succeeded": ({"succeeded"}, "payment.succeeded"),
    "payment_intent.payment_failed": ({"requires_payment_method", "canceled"}, "payment.failed"),
    "payment_intent.requires_action": ({"requires_action"}, "payment.action_required"),
}


def _on_payment_intent(ctx: _Context) -> Outcome:
    """A payment intent of a tenant's customer succeeded, failed or needs the customer's action:
    published as payment.*; the SNS/e-mail billing notification goes out for success and failure.

    A failure or an action that Stripe has moved past (the intent succeeded since) is not published:
    the re-fetched intent tells. A success is one per invoice when the intent names its invoice, so
    `invoice.paid` and `payment_intent.succeeded` for one payment are one payment.succeeded."""
    intent = ctx.obj
    tenant = _tenant_for_customer(ctx.client, stripe_id(intent.get("customer")))
    statuses, kind = _INTENT_EVENTS[ctx.event.type]
    if intent.get("status") not in statuses:
        return Outcome(
            WebhookEvent.Status.PROCESSED,
            f"{tenant.slug}: payment intent {intent.get('id')} is {intent.get('status')} at Stripe now",
            tenant,
        )
    payment_publish(kind=kind, tenant=tenant, event=ctx.event, obj=intent)
    invoice_id = stripe_id(intent.get("invoice"))
    details = {
        "payment_intent": intent.get("id"),
        "invoice": invoice_id,
        "payment_intent_status": intent.get("status"),
        "currency": intent.get("currency"),
        "amount": intent.get("amount"),
        "amount_received": intent.get("amount_received"),
    }
    if kind == "payment.succeeded":
        billing_notification_record(
            kind=BillingNotification.Kind.PAYMENT_SUCCEEDED,
            key=f"payment_succeeded:{invoice_id or intent['id']}",
            tenant=tenant,
            webhook_event=ctx.event,
            subject=f"Payment succeeded: {tenant.name} ({invoice_id or intent['id']})",
            details=details,
        )
    elif kind == "payment.failed":
        billing_notification_record(
            kind=BillingNotification.Kind.PAYMENT_FAILED,
            key=f"payment_failed:{ctx.event.stripe_id}",
            tenant=tenant,
            webhook_event=ctx.event,
            subject=f"Payment failed: {tenant.name} ({intent.get('id')})",
            details=details,
        )
    return Outcome(
        WebhookEvent.Status.PROCESSED,
        f"{tenant.slug}: payment intent {intent.get('id')} {intent.get('status')} "
        f"({intent.get('amount')} {intent.get('currency')} in minor units)",
        tenant,
    )


def _has_live_subscription(client: stripe.StripeClient, customer_id: str, *, other_than: str) -> str | None:
    """Another active or trialing subscription of the customer, if any."""
    for status in sorted(METERED_STATUSES):
        page = client.v1.subscriptions.list(params={"customer": customer_id, "status": status, "limit": 10})
        for sub in page.data:
            if sub.id != other_than:
                return sub.id
    return None


def _on_subscription(ctx: _Context) -> Outcome:
    """The plan follows the subscription's status at Stripe now, not the one in the payload.

    active/trialing: metered. canceled/unpaid/incomplete_expired: free, unless the customer has
    another active or trialing subscription. past_due, incomplete and paused leave the plan as
    it is: Stripe is still retrying or waiting for the customer, and a failed payment already
    moves the tenant to free through `invoice.payment_failed`.
    """
    sub = ctx.obj
    status = sub.get("status")
    customer_id = stripe_id(sub.get("customer"))
    tenant = _tenant_for_customer(ctx.client, customer_id)
    billing_notification_record(
        kind=BillingNotification.Kind.SUBSCRIPTION_CHANGED,
        key=f"subscription_changed:{ctx.event.stripe_id}",
        tenant=tenant,
        webhook_event=ctx.event,
        subject=f"Subscription {status}: {tenant.name} ({sub.get('id')})",
        details={
            "subscription": sub.get("id"),
            "status": status,
            "cancel_at_period_end": sub.get("cancel_at_period_end"),
            "canceled_at": sub.get("canceled_at"),
        },
    )
    subscription_publish(tenant=tenant, event=ctx.event, sub=sub)
    why = f"subscription {sub.get('id')} is {status}"
    applied = True
    if status in METERED_STATUSES:
        summary = _set_plan(ctx, tenant, Tenant.Plan.METERED, why)
    elif status in ENDED_STATUSES:
        other = _has_live_subscription(ctx.client, customer_id, other_than=sub.get("id"))
        if other:
            summary = f"{tenant.slug}: plan left {tenant.plan}; subscription {other} is still live"
        else:
            summary = _set_plan(ctx, tenant, Tenant.Plan.FREE, why)
    else:
        summary = f"{tenant.slug}: plan left {tenant.plan} while the subscription is {status}"
        applied = False
    return Outcome(WebhookEvent.Status.PROCESSED, f"{summary} ({why})", tenant, plan_applied=applied)


def _on_meter_error_report(ctx: _Context) -> Outcome:
    """Stripe refused meter events after accepting them: mark the outbox rows it names.

    A thin notification carries no data: the event is fetched. Stripe lists sample errors (a few
    per error code), so rows beyond the samples are found by reconciliation.
    """
    from stripe_sync.reporting import error_report_samples, usage_reports_mark_rejected

    full = mirror.stripe_dict(ctx.client.v2.core.events.retrieve(ctx.event.stripe_id))
    reason = (full.get("data") or {}).get("reason") or {}
    errors = error_report_samples(reason)
    marked = usage_reports_mark_rejected(errors=errors, source_event=ctx.event.stripe_id) if errors else 0
    return Outcome(
        WebhookEvent.Status.PROCESSED,
        f"{reason.get('error_count', len(errors))} meter event error(s) reported; "
        f"{len(errors)} sample identifier(s); {marked} usage report(s) marked failed",
    )


_HANDLERS = {
    "payment_method.attached": _on_payment_method_attached,
    "setup_intent.succeeded": _on_setup_intent_succeeded,
    "checkout.session.completed": _on_checkout_completed,
    "invoice.payment_failed": _on_payment_failed,
    "invoice.paid": _on_invoice_paid,
    "invoice.payment_succeeded": _on_invoice_paid,
    "invoice.payment_action_required": _on_invoice_action_required,
    "invoice.created": _on_invoice_changed,
    "invoice.finalized": _on_invoice_changed,
    "invoice.updated": _on_invoice_changed,
    "invoice.voided": _on_invoice_changed,
    "invoice.marked_uncollectible": _on_invoice_changed,
    "payment_intent.succeeded": _on_payment_intent,
    "payment_intent.payment_failed": _on_payment_intent,
    "payment_intent.requires_action": _on_payment_intent,
    "customer.subscription.created": _on_subscription,
    "customer.subscription.updated": _on_subscription,
    "customer.subscription.deleted": _on_subscription,
}
# The kind of object each snapshot handler works on (and re-fetches from Stripe).
_OBJECT_KINDS = {
    "payment_method.attached": "payment_method",
    "setup_intent.succeeded": "setup_intent",
    "checkout.session.completed": "checkout.session",
    "invoice.payment_failed": "invoice",
    "invoice.paid": "invoice",
    "invoice.payment_succeeded": "invoice",
    "invoice.payment_action_required": "invoice",
    "invoice.created": "invoice",
    "invoice.finalized": "invoice",
    "invoice.updated": "invoice",
    "invoice.voided": "invoice",
    "invoice.marked_uncollectible": "invoice",
    "payment_intent.succeeded": "payment_intent",
    "payment_intent.payment_failed": "payment_intent",
    "payment_intent.requires_action": "payment_intent",
    "customer.subscription.created": "subscription",
    "customer.subscription.updated": "subscription",
    "customer.subscription.deleted": "subscription",
}
_THIN_HANDLERS = {
    "v1.billing.meter.error_report_triggered": _on_meter_error_report,
    "v1.billing.meter.no_meter_found": _on_meter_error_report,
}
HANDLED_EVENT_TYPES = sorted([*_HANDLERS, *_THIN_HANDLERS])
