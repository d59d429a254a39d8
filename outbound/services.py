"""Writes of outgoing webhooks: publish an event, manage endpoints, send and replay deliveries.

Publishing writes rows only, in the caller's transaction; sending happens after commit, in a worker
(outbound.tasks), in the Beat sweep or in `deliver_webhooks`, all through `webhook_delivery_send`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from kombu.exceptions import KombuError
from standardwebhooks import Webhook

from core.json_input import text_problem
from outbound.events import EVENT_TYPES, event_types_validate
from outbound.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookMessage,
    signing_secret_new,
)

logger = logging.getLogger(__name__)

# Standard Webhooks' (and Svix's) schedule: the first attempt at once, then these delays after each
# failure; after the last, the delivery gives up (about 27.5 hours after the first attempt).
RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
CONNECT_TIMEOUT = 5.0  # seconds
MIN_LEASE = timedelta(seconds=60)
# Retries due within this are queued with a countdown; later ones wait for the every-minute sweep.
QUEUE_RETRIES_WITHIN = timedelta(minutes=5)
RESPONSE_READ_BYTES = 4096
USER_AGENT = "billing-platform-webhooks/1"
SWEEP_BATCH = 500


def lease() -> timedelta:
    """How long a claimed delivery is held: longer than a whole attempt (connect + read timeouts), so
    a live sender never loses it; a sender killed mid-send leaves it to be claimed again after this."""
    return max(MIN_LEASE, timedelta(seconds=CONNECT_TIMEOUT + settings.WEBHOOKS_TIMEOUT + 30))


# --- publish ------------------------------------------------------------------------------------


def webhook_event_publish(*, type: str, data: dict, key: str, tenant=None) -> WebhookMessage | None:
    """Publish an event to every enabled endpoint subscribed to `type`; None if `key` was published before.

    Writes the message and its pending deliveries in the caller's transaction (a rolled-back caller
    sends nothing) and queues them after commit. `tenant`, when given, is any object with `.pk`,
    `.slug` and `.external_id`. Raises ValueError for an unknown type or data that is not JSON;
    never for a delivery problem.
    """
    if type not in EVENT_TYPES:
        raise ValueError(f"Unknown webhook event type {type!r}.")
    if not key or len(key) > 255:
        raise ValueError("A webhook event needs a de-duplication key of 1 to 255 characters.")
    now = timezone.now()
    body = _body(type, data, now)
    with transaction.atomic():
        if WebhookMessage.objects.filter(key=key).exists():
            return None
        try:
            with transaction.atomic():  # a savepoint: a concurrent publisher of this key may win
                message = WebhookMessage.objects.create(
                    type=type,
                    payload=body,
                    key=key,
                    tenant_id=getattr(tenant, "pk", None),
                    tenant_slug=getattr(tenant, "slug", "") or "",
                    tenant_external_id=getattr(tenant, "external_id", "") or "",
                    created_at=now,
                )
        except IntegrityError:
            return None
        endpoints = [e for e in WebhookEndpoint.objects.filter(enabled=True) if e.receives(type)]
        deliveries = WebhookDelivery.objects.bulk_create(
            [WebhookDelivery(endpoint=e, message=message, next_attempt_at=now) for e in endpoints]
        )
        _enqueue_after_commit([d.pk for d in deliveries])
    return message


def _body(type: str, data: dict, now: datetime) -> dict:
    """The message as Standard Webhooks sends it: type, timestamp and data, as JSON values."""
    try:
        return json.loads(
            json.dumps(
                {"type": type, "timestamp": _iso(now), "data": data}, cls=DjangoJSONEncoder, allow_nan=False
            )
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"The data of a {type} webhook event is not JSON-serialisable: {exc}") from exc


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _enqueue_after_commit(delivery_ids: list[int]) -> None:
    if delivery_ids:
        transaction.on_commit(partial(webhook_deliveries_enqueue, delivery_ids=delivery_ids), robust=True)


def webhook_deliveries_enqueue(*, delivery_ids: list[int], countdown: float | None = None) -> None:
    """Queue a send task per delivery. A broker that is down loses nothing: the Beat sweep finds them."""
    from outbound.tasks import deliver_webhook

    for delivery_id in delivery_ids:
        try:
            deliver_webhook.apply_async((delivery_id,), countdown=countdown)
        except (KombuError, OSError):  # the broker is down; the rows stay pending for the sweep
            logger.warning("could not queue webhook delivery %s; the sweep will send it", delivery_id)


# --- endpoints ----------------------------------------------------------------------------------


def _forbidden_address(address: str) -> bool:
    """Link-local (169.254.0.0/16 and fe80::/10: the cloud's instance metadata, credentials
    included), multicast and unspecified addresses are never a webhook endpoint. Loopback and
    private addresses are allowed: the SaaS's app may well live inside its network."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_link_local or ip.is_multicast or ip.is_unspecified


def webhook_destination_problem(url: str) -> str | None:
    """Why the platform refuses to send to `url` now, or None: its host is, or resolves to, a
    forbidden address. Checked at every attempt, so a name that later resolves there is refused."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError):
        return None  # unresolvable: the request itself fails and says so
    for *_, sockaddr in infos:
        if _forbidden_address(str(sockaddr[0])):
            return f"refused: {host} is, or resolves to, {sockaddr[0]} (link-local, multicast or unspecified)"
    return None


def webhook_url_validate(url: str) -> str:
    """An http(s) URL; plain http only when settings.WEBHOOKS_ALLOW_HTTP; never a link-local,
    multicast or unspecified host. ValidationError otherwise."""
    url = (url or "").strip()
    max_length = WebhookEndpoint._meta.get_field("url").max_length
    if len(url) > max_length:
        raise ValidationError(f"At most {max_length} characters.")
    URLValidator(schemes=["http", "https"], message="Enter an http:// or https:// URL.")(url)
    if _forbidden_address(urlsplit(url).hostname or ""):
        raise ValidationError(
            "Webhook URLs may not point at link-local (169.254.0.0/16, fe80::/10: the cloud's instance "
            "metadata), multicast or unspecified addresses."
        )
    if urlsplit(url).scheme == "http" and not settings.WEBHOOKS_ALLOW_HTTP:
        raise ValidationError(
            "Webhook URLs must use https:// (plain http is allowed only with WEBHOOKS_ALLOW_HTTP=true)."
        )
    return url


def _clean_types(event_types) -> list[str]:
    try:
        return event_types_validate(event_types)
    except ValueError as exc:
        raise ValidationError({"event_types": str(exc)}) from None


DESCRIPTION_MAX = WebhookEndpoint._meta.get_field("description").max_length


def _clean_description(description) -> str:
    description = (description or "").strip()
    if len(description) > DESCRIPTION_MAX:
        raise ValidationError({"description": f"At most {DESCRIPTION_MAX} characters."})
    if problem := text_problem(description):
        raise ValidationError({"description": f"The description {problem}."})
    return description


def _clean_url(url) -> str:
    try:
        return webhook_url_validate(url)
    except ValidationError as exc:
        raise ValidationError({"url": exc.messages}) from None


def webhook_endpoint_create(*, url: str, event_types, description: str = "") -> WebhookEndpoint:
    """A new enabled endpoint with a fresh signing secret (`endpoint.secret`: show it once)."""
    return WebhookEndpoint.objects.create(
        url=_clean_url(url),
        event_types=_clean_types(event_types),
        description=_clean_description(description),
    )


def webhook_endpoint_update(*, endpoint: WebhookEndpoint, **changes) -> WebhookEndpoint:
    """Change url, event_types, description or enabled; enabling clears the disabled reason."""
    fields = []
    if "url" in changes:
        endpoint.url = _clean_url(changes["url"])
        fields.append("url")
    if "event_types" in changes:
        endpoint.event_types = _clean_types(changes["event_types"])
        fields.append("event_types")
    if "description" in changes:
        endpoint.description = _clean_description(changes["description"])
        fields.append("description")
    if "enabled" in changes and bool(changes["enabled"]) != endpoint.enabled:
        if changes["enabled"]:
            return _save(webhook_endpoint_enable(endpoint=endpoint), fields)
        endpoint.enabled = False
        endpoint.disabled_at = timezone.now()
        endpoint.disabled_reason = "Disabled by hand."
        fields += ["enabled", "disabled_at", "disabled_reason"]
    return _save(endpoint, fields)


def _save(endpoint: WebhookEndpoint, fields: list[str]) -> WebhookEndpoint:
    if fields:
        endpoint.save(update_fields=[*fields, "updated_at"])
    return endpoint


def webhook_endpoint_enable(*, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """Enable again (after automatic disabling): its open deliveries resume, its failure clock restarts."""
    endpoint.enabled = True
    endpoint.disabled_at = None
    endpoint.disabled_reason = ""
    endpoint.failing_since = None
    endpoint.save(update_fields=["enabled", "disabled_at", "disabled_reason", "failing_since", "updated_at"])
    due = list(
        WebhookDelivery.objects.filter(
            endpoint=endpoint, status__in=WebhookDelivery.OPEN_STATUSES, next_attempt_at__lte=timezone.now()
        ).values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    _enqueue_after_commit(due)
    return endpoint


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """Remove an endpoint with its pending deliveries and its delivery log."""
    endpoint.delete()


ROTATION_OVERLAP = timedelta(hours=24)


def webhook_endpoint_rotate_secret(*, endpoint: WebhookEndpoint) -> str:
    """A new signing secret, used from the next attempt on; returns it (show it once).

    For ROTATION_OVERLAP after it, every attempt is signed with the old secret too (Standard Webhooks
    allows several signatures in one header), so a receiver still on the old secret verifies them.
    """
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_until = timezone.now() + ROTATION_OVERLAP
    endpoint.secret = signing_secret_new()
    endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_until", "updated_at"])
    return endpoint.secret


TEST_EVENT_TYPE = "tenant.updated"


def webhook_endpoint_send_test(*, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """Send one test message to this endpoint only, whatever it subscribes to.

    Its type is `tenant.updated` with `"test": true` in data, so a receiver's handler of that type can
    recognise it; its key is unique, so it is never de-duplicated.
    """
    now = timezone.now()
    body = _body(TEST_EVENT_TYPE, {"test": True, "endpoint_id": endpoint.pk}, now)
    with transaction.atomic():
        message = WebhookMessage.objects.create(
            type=TEST_EVENT_TYPE, payload=body, key=f"test:{endpoint.pk}:{uuid.uuid4().hex}", created_at=now
        )
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint, message=message, trigger=WebhookDelivery.Trigger.TEST, next_attempt_at=now
        )
        _enqueue_after_commit([delivery.pk])
    return delivery


def webhook_delivery_replay(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery's message again to its endpoint, as a new delivery (same message id).

    Receivers de-duplicate by `webhook-id`: a replay is for one that lost or mishandled it.
    """
    with transaction.atomic():
        replay = WebhookDelivery.objects.create(
            endpoint_id=delivery.endpoint_id,
            message_id=delivery.message_id,
            trigger=WebhookDelivery.Trigger.REPLAY,
            next_attempt_at=timezone.now(),
        )
        _enqueue_after_commit([replay.pk])
    return replay


# --- sending ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    status_code: int | None
    latency_ms: int
    excerpt: str
    error: str

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _open(now: datetime) -> Q:
    """Open, on an enabled endpoint, not leased by a live sender."""
    return (
        Q(status__in=WebhookDelivery.OPEN_STATUSES)
        & Q(endpoint_id__in=WebhookEndpoint.objects.filter(enabled=True).values("pk"))
        & (Q(leased_until__isnull=True) | Q(leased_until__lt=now))
    )


def _due(now: datetime) -> Q:
    return _open(now) & Q(next_attempt_at__lte=now)


def _claim(delivery_id: int, *, now: datetime, force: bool = False) -> bool:
    """Take a delivery for one attempt: exactly one of any number of concurrent senders wins.

    A conditional UPDATE on the row itself: PostgreSQL re-checks its conditions on the row a
    concurrent claimer just changed, so the loser finds it leased and changes nothing. It counts the
    attempt and leases the delivery (a sender killed mid-send leaves it to be claimed after lease()).
    """
    condition = _open(now) if force else _due(now)
    return (
        WebhookDelivery.objects.filter(condition, pk=delivery_id).update(
            attempts=F("attempts") + 1, leased_until=now + lease(), last_attempt_at=now
        )
        == 1
    )


def webhook_delivery_send(*, delivery_id: int, force: bool = False) -> WebhookDelivery | None:
    """Make one attempt of a delivery if it is due and nobody else is sending it; None if not sent."""
    now = timezone.now()
    if not _claim(delivery_id, now=now, force=force):
        return None
    delivery = WebhookDelivery.objects.select_related("endpoint", "message").filter(pk=delivery_id).first()
    if delivery is None:  # its endpoint was deleted meanwhile
        return None
    response = _post(delivery, now=now)
    try:
        _record(delivery, response, attempted_at=now)
    except IntegrityError:  # the endpoint (and so the delivery) was deleted while it was being sent
        logger.info("webhook delivery %s was deleted while it was sent", delivery_id)
        return None
    return delivery


def _post(delivery: WebhookDelivery, *, now: datetime) -> Response:
    message, endpoint = delivery.message, delivery.endpoint
    body = json.dumps(message.payload, separators=(",", ":"), ensure_ascii=False)
    secrets = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_until and now < endpoint.previous_secret_until:
        secrets.append(endpoint.previous_secret)
    signature = " ".join(Webhook(secret).sign(message.public_id, now, body) for secret in secrets)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message.public_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    started = time.monotonic()
    if problem := webhook_destination_problem(endpoint.url):
        return Response(None, _elapsed_ms(started), "", problem)
    try:
        with requests.post(
            endpoint.url,
            data=body.encode(),
            headers=headers,
            timeout=(CONNECT_TIMEOUT, settings.WEBHOOKS_TIMEOUT),
            allow_redirects=False,
            stream=True,
        ) as answer:
            raw = answer.raw.read(RESPONSE_READ_BYTES, decode_content=True) or b""
            latency = _elapsed_ms(started)
            excerpt = raw.decode(answer.encoding or "utf-8", errors="replace")
            code = answer.status_code
            error = "" if 200 <= code < 300 else f"HTTP {code}"
            if 300 <= code < 400:
                error += f" (a redirect, not followed, to {answer.headers.get('location', '?')})"
            return Response(code, latency, _bounded(excerpt), error)
    except requests.RequestException as exc:
        return Response(None, _elapsed_ms(started), "", _bounded(f"{type(exc).__name__}: {exc}"))


def _elapsed_ms(started: float) -> int:
    return max(0, round((time.monotonic() - started) * 1000))


def _bounded(text: str) -> str:
    limit = WebhookAttempt.RESPONSE_EXCERPT_CHARS
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _record(delivery: WebhookDelivery, response: Response, *, attempted_at: datetime) -> None:
    now = timezone.now()
    endpoint = delivery.endpoint
    with transaction.atomic():
        WebhookAttempt.objects.create(
            delivery=delivery,
            number=delivery.attempts,
            attempted_at=attempted_at,
            succeeded=response.ok,
            status_code=response.status_code,
            latency_ms=response.latency_ms,
            response_excerpt=response.excerpt,
            error=response.error,
        )
        delivery.last_status_code = response.status_code
        delivery.last_latency_ms = response.latency_ms
        delivery.last_error = response.error
        delivery.leased_until = None
        if response.ok:
            delivery.status = WebhookDelivery.Status.SUCCEEDED
            delivery.next_attempt_at = None
            delivery.finished_at = now
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=None, last_success_at=now)
        elif delivery.attempts >= MAX_ATTEMPTS:
            delivery.status = WebhookDelivery.Status.GAVE_UP
            delivery.next_attempt_at = None
            delivery.finished_at = now
        else:
            delivery.status = WebhookDelivery.Status.FAILED
            delivery.next_attempt_at = attempted_at + RETRY_DELAYS[delivery.attempts - 1]
        delivery.save(
            update_fields=[
                "status", "next_attempt_at", "finished_at", "leased_until",
                "last_status_code", "last_latency_ms", "last_error",
            ]
        )  # fmt: skip
        if not response.ok:
            _note_failure(endpoint_id=endpoint.pk, error=response.error, now=now)
    if delivery.status == WebhookDelivery.Status.FAILED:
        delay = (delivery.next_attempt_at - now).total_seconds()
        if delay <= QUEUE_RETRIES_WITHIN.total_seconds():
            # Short retries are queued with a countdown; longer ones wait for the sweep (every minute).
            transaction.on_commit(
                partial(webhook_deliveries_enqueue, delivery_ids=[delivery.pk], countdown=max(delay, 0)),
                robust=True,
            )


def disable_after() -> timedelta:
    return timedelta(days=settings.WEBHOOKS_DISABLE_AFTER_DAYS)


def _note_failure(*, endpoint_id: int, error: str, now: datetime) -> None:
    """Start the endpoint's failure clock; disable it when it has failed, with no success, for too long."""
    WebhookEndpoint.objects.filter(pk=endpoint_id, failing_since__isnull=True).update(failing_since=now)
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)
    if endpoint.enabled and endpoint.failing_since <= now - disable_after():
        endpoint.enabled = False
        endpoint.disabled_at = now
        endpoint.disabled_reason = (
            f"Disabled automatically: every delivery failed since {_iso(endpoint.failing_since)} "
            f"({settings.WEBHOOKS_DISABLE_AFTER_DAYS} days or more without a success). "
            f"Last error: {error or 'unknown'}"
        )
        endpoint.save(update_fields=["enabled", "disabled_at", "disabled_reason", "updated_at"])
        logger.warning("webhook endpoint %s disabled: %s", endpoint.pk, endpoint.disabled_reason)


@dataclass(frozen=True)
class SweepResult:
    sent: int
    succeeded: int
    failed: int


def webhook_deliveries_send_due(
    *, include_not_due: bool = False, limit: int = SWEEP_BATCH, seconds: float | None = None
) -> SweepResult:
    """Send every due delivery on an enabled endpoint (with `include_not_due`, every open one).

    Safe to run in several processes at once: each delivery is claimed before it is sent. With
    `seconds`, no new delivery is started after that long (the every-minute sweep ends before the
    next one starts; what is left is still due next time).
    """
    now = timezone.now()
    deadline = None if seconds is None else time.monotonic() + seconds
    query = _open(now) if include_not_due else _due(now)
    ids = list(
        WebhookDelivery.objects.filter(query)
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    sent = succeeded = 0
    for delivery_id in ids:
        if deadline is not None and time.monotonic() >= deadline:
            break
        delivery = webhook_delivery_send(delivery_id=delivery_id, force=include_not_due)
        if delivery is None:
            continue
        sent += 1
        succeeded += delivery.status == WebhookDelivery.Status.SUCCEEDED
    return SweepResult(sent=sent, succeeded=succeeded, failed=sent - succeeded)
