"""Seed 000's event bus: BILLING and ONBOARD events consumed from an SQS queue.

Seed 000 (the serverless SaaS billing reference) puts two kinds of events on EventBridge:
`{"TenantID": "Tenant0", "Quantity": 5}` (detail-type BILLING) and
`{"TenantID": "Tenant0", "ExternalSubscriptionIdentifier": "si_..."}` (detail-type ONBOARD). A rule
sends them to an SQS queue, directly or through an SNS topic, or a producer sends them to the queue
raw. A message body is one of:

- an EventBridge event, as a rule's SQS target delivers it (`{"version", "id", "detail-type",
  "source", "time", "detail": {...}}`): its idempotency key is `eventbridge:<id>`, its time `time`;
- an SNS notification (`{"Type": "Notification", "MessageId", "Message": "<JSON text>"}`, raw message
  delivery off) holding an EventBridge event (keyed as above) or a raw event (`sns:<MessageId>`);
- a raw event, whose keys tell its type (`Quantity`: BILLING, `ExternalSubscriptionIdentifier`:
  ONBOARD, which may be null for a tenant without a subscription to link): `sqs:<MessageId>`.

A BILLING event becomes one usage event of the queue's meter through the ingestion services
(metering.ingest: same limits, same idempotency table), so a redelivered message is a duplicate and
changes nothing. An ONBOARD event creates or finds the tenant whose external id is `TenantID` and,
given an identifier, checks it at Stripe and links the tenant's customer and subscription. Stripe is
stripe_sync's, which metering must not import: stripe_sync registers the linking function in
`subscription_links` from its AppConfig.ready.

Delivery is at least once. A message is deleted only after its effect is committed; one that cannot be
processed is left in the queue (visible again after its visibility timeout; after the queue's
maxReceiveCount, SQS's redrive policy moves it to the dead-letter queue), counted on its UsageQueue row
with the last error, and logged in one line with its message id.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from botocore.exceptions import BotoCoreError, ClientError
from django.db import IntegrityError
from django.db.models import F, Q
from django.utils import timezone
from django.utils.text import slugify

from core.aws import AwsError, aws_call, aws_client, error_code
from core.json_input import json_loads_exact, text_problem
from core.validation import one_line
from metering.ingest import EventsInvalid, UsageLimitExceeded, usage_events_record, usage_events_validate
from metering.models import Meter, UsageQueue
from tenants.models import Tenant
from tenants.selectors import tenant_by_api_ref
from tenants.services import TenantError, tenant_create

logger = logging.getLogger(__name__)

BILLING = "BILLING"
ONBOARD = "ONBOARD"
# SQS returns at most 10 messages per ReceiveMessage and waits at most 20 seconds (long polling).
SQS_BATCH = 10
MAX_WAIT_SECONDS = 20
# The socket read of a long poll lasts the whole wait: the client's read timeout must outlast it.
READ_TIMEOUT_MARGIN_SECONDS = 10
MAX_TENANT_ID_LENGTH = 255  # Tenant.external_id
SOURCE_LENGTH = 64  # TenantChange.source
IDENTIFIER_PREFIXES = ("si_", "sub_")
_NO_QUEUE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
# https://sqs.<region>.amazonaws.com/<account>/<name> and the legacy <region>.queue.amazonaws.com.
_QUEUE_REGION = re.compile(r"^(?:sqs\.([a-z0-9-]+)|([a-z0-9-]+)\.queue)\.amazonaws\.com(?:\.cn)?$")


class BusEventRefused(Exception):
    """This message cannot be processed; the message (one line) says why. It stays in the queue."""


class UsageQueueError(Exception):
    """The queue cannot be consumed at all (no such queue, unknown meter); one line for the operator."""


@dataclass(frozen=True)
class BusEvent:
    kind: str  # BILLING or ONBOARD
    key: str  # idempotency key: eventbridge:<id>, sns:<MessageId> or sqs:<MessageId>
    tenant_ref: str
    quantity: object = None  # BILLING: as sent (checked by ingestion)
    identifier: str | None = None  # ONBOARD: si_... or sub_..., or None
    time: str | None = None  # EventBridge's `time`; None: now

    @property
    def source(self) -> str:
        """What a tenant's history names as the cause of a change."""
        return self.key[:SOURCE_LENGTH]


# --- Linking a subscription (filled by stripe_sync) --------------------------------------------------

LinkFunction = Callable[..., str]


class SubscriptionLinks:
    """How an ONBOARD event's ExternalSubscriptionIdentifier is checked at Stripe and linked.

    stripe_sync registers its function in AppConfig.ready (the pattern of core.commands'
    command_errors), so metering never imports stripe_sync. The function takes `tenant`, `identifier`
    and `source` (keywords), raises BusEventRefused when the identifier cannot be linked, and returns
    a line saying what it linked.
    """

    def __init__(self) -> None:
        self._link: LinkFunction | None = None

    def register(self, link: LinkFunction) -> None:
        self._link = link

    def link(self, *, tenant: Tenant, identifier: str, source: str) -> str:
        if self._link is None:
            raise BusEventRefused(
                "ExternalSubscriptionIdentifier needs Stripe (the stripe_sync app), which is not installed"
            )
        return self._link(tenant=tenant, identifier=identifier, source=source)


subscription_links = SubscriptionLinks()


# --- Parsing a message body ---------------------------------------------------------------------------


def _json(text: str, what: str) -> dict:
    try:
        value = json_loads_exact(text)
    except (ValueError, TypeError) as exc:
        raise BusEventRefused(f"{what} is not JSON: {one_line(exc)[:200]}") from None
    except RecursionError:
        raise BusEventRefused(f"{what} is nested too deeply") from None
    if not isinstance(value, dict):
        raise BusEventRefused(f"{what} is not a JSON object")
    return value


def _envelope_id(value, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BusEventRefused(f"{what} is missing")
    if (problem := text_problem(value)) is not None:
        raise BusEventRefused(f"{what} {problem}")
    return value


def _is_eventbridge(value: dict) -> bool:
    return "detail-type" in value and "detail" in value


def _from_eventbridge(event: dict) -> BusEvent:
    key = "eventbridge:" + _envelope_id(event.get("id"), "the EventBridge event's id")
    kind = event.get("detail-type")
    if kind not in (BILLING, ONBOARD):
        shown = kind if isinstance(kind, str) else json.dumps(kind, default=str)
        raise BusEventRefused(f"detail-type {shown[:100]!r} is neither {BILLING} nor {ONBOARD}")
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise BusEventRefused("the EventBridge event's detail is not an object")
    moment = event.get("time")
    if moment is not None and not isinstance(moment, str):
        raise BusEventRefused("the EventBridge event's time is not a string")
    return _event(kind, key, detail, time=moment)


def _from_raw(detail: dict, key: str) -> BusEvent:
    billing, onboard = "Quantity" in detail, "ExternalSubscriptionIdentifier" in detail
    if billing == onboard:
        raise BusEventRefused(
            "a raw event holds either Quantity (BILLING) or ExternalSubscriptionIdentifier (ONBOARD, may "
            "be null)" + (", not both" if billing else "; this one has neither")
        )
    return _event(BILLING if billing else ONBOARD, key, detail, time=None)


def _event(kind: str, key: str, detail: dict, *, time: str | None) -> BusEvent:
    tenant_ref = detail.get("TenantID")
    if not isinstance(tenant_ref, str) or not tenant_ref.strip():
        raise BusEventRefused("TenantID is required: a non-empty string")
    if len(tenant_ref) > MAX_TENANT_ID_LENGTH:
        raise BusEventRefused(f"TenantID must be at most {MAX_TENANT_ID_LENGTH} characters")
    if (problem := text_problem(tenant_ref)) is not None:
        raise BusEventRefused(f"TenantID {problem}")
    if kind == BILLING:
        if detail.get("Quantity") is None:
            raise BusEventRefused("Quantity is required in a BILLING event: a number")
        return BusEvent(BILLING, key, tenant_ref, quantity=detail["Quantity"], time=time)
    identifier = detail.get("ExternalSubscriptionIdentifier")
    if identifier is not None and (
        not isinstance(identifier, str)
        or not identifier.startswith(IDENTIFIER_PREFIXES)
        or len(identifier) > 255
        or text_problem(identifier) is not None
    ):
        raise BusEventRefused(
            "ExternalSubscriptionIdentifier must be a Stripe subscription item id (si_...) or "
            "subscription id (sub_...)"
        )
    return BusEvent(ONBOARD, key, tenant_ref, identifier=identifier, time=time)


def bus_message_parse(*, body: str, message_id: str) -> BusEvent:
    """The event an SQS message body carries (EventBridge, SNS or raw); BusEventRefused if none."""
    value = _json(body, "the message body")
    if _is_eventbridge(value):
        return _from_eventbridge(value)
    if value.get("Type") == "Notification" and "Message" in value:
        sns_id = _envelope_id(value.get("MessageId"), "the SNS notification's MessageId")
        if not isinstance(value["Message"], str):
            raise BusEventRefused("the SNS notification's Message is not a string")
        inner = _json(value["Message"], "the SNS notification's Message")
        if _is_eventbridge(inner):
            return _from_eventbridge(inner)
        return _from_raw(inner, "sns:" + sns_id)
    if "Type" in value and "TenantID" not in value:
        raise BusEventRefused(f"an SNS message of Type {str(value['Type'])[:50]!r} carries no event")
    return _from_raw(value, "sqs:" + _envelope_id(message_id, "the SQS MessageId"))


# --- Applying an event ----------------------------------------------------------------------------------


def _tenant(ref: str) -> Tenant | None:
    try:
        return tenant_by_api_ref(ref=ref)
    except Tenant.DoesNotExist:
        return None


def _active_tenant(ref: str) -> Tenant:
    tenant = _tenant(ref)
    if tenant is None:
        raise BusEventRefused(f"no tenant with external id or slug {ref[:100]!r}")
    if not tenant.is_active:
        raise BusEventRefused(f"tenant {tenant.slug} is suspended")
    return tenant


def _invalid(invalid: EventsInvalid) -> str:
    problems = next(iter(invalid.errors.values()), {})
    names = {"quantity": "Quantity", "timestamp": "time", "id": "the event id", "meter": "the meter"}
    return "; ".join(
        f"{names.get(field, field)} {message}" for field, messages in problems.items() for message in messages
    )


def _billing_apply(event: BusEvent, meter: Meter, now: datetime) -> bool:
    """Record the usage event; True if it is new, False if it was recorded before."""
    tenant = _active_tenant(event.tenant_ref)
    payload = {"id": event.key, "meter": meter.code, "quantity": event.quantity, "timestamp": event.time}
    try:
        valid = usage_events_validate(payload=payload, now=now, tenant=tenant)
    except EventsInvalid as invalid:
        raise BusEventRefused(_invalid(invalid)) from None
    try:
        return usage_events_record(tenant=tenant, events=valid, now=now).accepted == 1
    except UsageLimitExceeded as exceeded:
        # Left in the queue like any refusal: the redrive policy moves it aside, an operator decides.
        raise BusEventRefused(f"usage limit: {exceeded}") from None


def _free_slug(ref: str) -> str:
    base = (slugify(ref) or "tenant")[:56]
    slug, suffix = base, 1
    while Tenant.objects.filter(Q(slug=slug) | Q(external_id=slug)).exists():
        suffix += 1
        slug = f"{base}-{suffix}"
    return slug


def _tenant_find_or_create(event: BusEvent) -> Tenant:
    tenant = _tenant(event.tenant_ref)
    if tenant is not None:
        return tenant
    try:
        return tenant_create(
            name=event.tenant_ref[:200],
            slug=_free_slug(event.tenant_ref),
            external_id=event.tenant_ref,
            source=event.source,
        )
    except (TenantError, IntegrityError) as exc:
        # Another consumer created it (or took the slug) a moment ago: find it, or try again later.
        tenant = _tenant(event.tenant_ref)
        if tenant is None:
            raise BusEventRefused(f"cannot create tenant {event.tenant_ref[:100]!r}: {exc}") from None
        return tenant


def _onboard_apply(event: BusEvent) -> None:
    tenant = _tenant_find_or_create(event)
    if not tenant.is_active:
        raise BusEventRefused(f"tenant {tenant.slug} is suspended")
    if event.identifier is not None:
        summary = subscription_links.link(tenant=tenant, identifier=event.identifier, source=event.source)
        logger.info("usage queue: %s: %s", event.key, summary)


def bus_event_apply(*, event: BusEvent, meter: Meter, now: datetime) -> bool:
    """Carry out the event; True if it changed something new, False for a billing duplicate.
    Committed when it returns; BusEventRefused when it cannot be carried out."""
    if event.kind == BILLING:
        return _billing_apply(event, meter, now)
    _onboard_apply(event)
    return True


# --- Consuming a queue --------------------------------------------------------------------------------


@dataclass
class ConsumeResult:
    received: int = 0
    processed: int = 0
    duplicates: int = 0
    failed: int = 0
    last_error: str = ""

    def summary(self) -> str:
        return (
            f"received {self.received}, processed {self.processed}, duplicates {self.duplicates}, "
            f"failed {self.failed} (left in the queue)"
        )


def queue_region(url: str) -> str | None:
    """The region of an SQS queue URL on AWS; None elsewhere (moto, a local endpoint)."""
    from urllib.parse import urlsplit

    match = _QUEUE_REGION.match((urlsplit(url).hostname or "").lower())
    return (match.group(1) or match.group(2)) if match else None


def queue_url_check(url: str) -> str:
    url = url.strip()
    if not re.match(r"^https?://[^/\s]+/\S+$", url):
        raise UsageQueueError(
            f"{url[:200]!r} is not an SQS queue URL (https://sqs.<region>.amazonaws.com/...)"
        )
    return url


def _sqs(url: str, wait_seconds: int):
    return aws_client(
        "sqs", region=queue_region(url), read_timeout=wait_seconds + READ_TIMEOUT_MARGIN_SECONDS
    )


def _aws(call, *, what: str, url: str):
    try:
        return aws_call(call, what=what)
    except ClientError as exc:
        if error_code(exc) in _NO_QUEUE_CODES:
            raise UsageQueueError(f"no SQS queue {url}") from None
        raise


def _failure(
    result: ConsumeResult, url: str, message: dict, reason: str, *, unexpected: bool = False
) -> None:
    """Count the failure, keep it as the last error, and log one record naming the message (never
    its body); an unexpected error's record carries its traceback (one JSON line in production)."""
    result.failed += 1
    result.last_error = f"message {message.get('MessageId', '?')}: {reason}"[:500]
    (logger.error if unexpected else logger.warning)(
        "usage queue %s: message %s not processed (receive %s), left for redrive: %s",
        url.rsplit("/", 1)[-1],
        message.get("MessageId", "?"),
        message.get("Attributes", {}).get("ApproximateReceiveCount", "?"),
        reason,
        exc_info=unexpected,
    )


def _handle(result: ConsumeResult, url: str, meter: Meter, message: dict) -> bool:
    """Process one message; True when it may be deleted."""
    try:
        event = bus_message_parse(body=message.get("Body", ""), message_id=message.get("MessageId", ""))
        new = bus_event_apply(event=event, meter=meter, now=timezone.now())
    except BusEventRefused as exc:
        _failure(result, url, message, one_line(exc))
        return False
    except Exception as exc:  # noqa: BLE001 - logged with its traceback; the message stays for another try
        _failure(
            result, url, message, f"unexpected {type(exc).__name__}: {one_line(exc)[:300]}", unexpected=True
        )
        return False
    if new:
        result.processed += 1
    else:
        result.duplicates += 1
    return True


def _delete(client, url: str, deletable: list[dict]) -> None:
    entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(deletable)]
    response = _aws(
        lambda: client.delete_message_batch(QueueUrl=url, Entries=entries),
        what="SQS DeleteMessageBatch",
        url=url,
    )
    for failed in response.get("Failed", []):
        # The effect is committed: the message comes back once more and is then a duplicate.
        logger.warning(
            "usage queue %s: message %s processed but not deleted (%s); its redelivery changes nothing",
            url.rsplit("/", 1)[-1],
            deletable[int(failed["Id"])].get("MessageId", "?"),
            failed.get("Code", "error"),
        )


def _record(queue: UsageQueue | None, batch: ConsumeResult, *, polled_at) -> None:
    if queue is None:
        return
    fields = {
        "received": F("received") + batch.received,
        "processed": F("processed") + batch.processed,
        "duplicates": F("duplicates") + batch.duplicates,
        "failed": F("failed") + batch.failed,
        "last_polled_at": polled_at,
    }
    if batch.last_error:
        fields.update(last_error=batch.last_error, last_error_at=timezone.now())
    UsageQueue.objects.filter(pk=queue.pk).update(**fields)


def usage_queue_consume(
    *,
    url: str,
    meter: Meter,
    max_messages: int = 1000,
    wait_seconds: int = 10,
    once: bool = False,
    visibility_timeout: int | None = None,
    queue: UsageQueue | None = None,
) -> ConsumeResult:
    """Receive messages from the queue until it is empty (or `max_messages`; `once`: one receive)
    and apply each; delete those whose effect is committed, leave the others to SQS's redrive.

    `queue`, when given, gets the counts and the last error (the UsageQueue row of this URL).
    """
    url = queue_url_check(url)
    wait_seconds = max(0, min(wait_seconds, MAX_WAIT_SECONDS))
    client = _sqs(url, wait_seconds)
    total = ConsumeResult()
    polled_at = timezone.now()
    seen: set[str] = set()
    while total.received < max_messages:
        params = {
            "QueueUrl": url,
            "MaxNumberOfMessages": min(SQS_BATCH, max_messages - total.received),
            "WaitTimeSeconds": wait_seconds,
            "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
        }
        if visibility_timeout is not None:
            params["VisibilityTimeout"] = visibility_timeout
        response = _aws(lambda p=params: client.receive_message(**p), what="SQS ReceiveMessage", url=url)
        messages = response.get("Messages", [])
        batch = ConsumeResult(received=len(messages))
        deletable = [message for message in messages if _handle(batch, url, meter, message)]
        if deletable:
            _delete(client, url, deletable)
        _record(queue, batch, polled_at=polled_at)
        for name in ("received", "processed", "duplicates", "failed"):
            setattr(total, name, getattr(total, name) + getattr(batch, name))
        total.last_error = batch.last_error or total.last_error
        # A message back within this run (a failure with a visibility timeout of 0) ends the run:
        # receiving it again and again would only spend its retries.
        repeated = any(message.get("MessageId") in seen for message in messages)
        seen.update(message.get("MessageId") for message in messages)
        if once or not messages or repeated:
            break
    if total.received == 0:
        _record(queue, total, polled_at=polled_at)
    return total


def usage_queue_consume_configured(
    *, queue: UsageQueue, max_messages: int = 1000, wait_seconds: int = 10
) -> ConsumeResult:
    """Consume one configured queue; a failure of the whole poll is kept on its row, then raised."""
    try:
        return usage_queue_consume(
            url=queue.url,
            meter=queue.meter,
            max_messages=max_messages,
            wait_seconds=wait_seconds,
            visibility_timeout=queue.visibility_timeout,
            queue=queue,
        )
    except (UsageQueueError, AwsError, ClientError, BotoCoreError) as exc:
        UsageQueue.objects.filter(pk=queue.pk).update(
            last_error=f"poll failed: {one_line(exc)}"[:500], last_error_at=timezone.now()
        )
        raise


def usage_queues_consume(*, max_messages: int = 1000, wait_seconds: int = 5) -> dict[str, str]:
    """Consume every enabled queue (the periodic task); one queue failing does not stop the others."""
    outcomes = {}
    for queue in UsageQueue.objects.filter(enabled=True).select_related("meter"):
        try:
            result = usage_queue_consume_configured(
                queue=queue, max_messages=max_messages, wait_seconds=wait_seconds
            )
        except (UsageQueueError, AwsError, ClientError, BotoCoreError) as exc:
            logger.warning("usage queue %s: poll failed: %s", queue.url, one_line(exc))
            outcomes[queue.url] = f"poll failed: {one_line(exc)}"
            continue
        outcomes[queue.url] = result.summary()
    return outcomes
