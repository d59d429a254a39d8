"""`StripeServer`: a local HTTP server that answers like Stripe's API, for tests.

Start it, point stripe-python at it (`api_base` / `StripeClient(base_addresses={"api": url,
"meter_events": url})`), and drive the platform's code against it; the test controls below shape
its behaviour (rate limits, faults, a clock, checkout completion, billing periods) and let a test
read what it received.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import hmac
import json
import math
import queue
import socket
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from . import paramspec, res_billing, res_core, res_meters, res_portal
from .errors import StripeError, api_error, rate_limited, unrecognized_url
from .formcodec import parse_form
from .routing import Ctx, match
from .state import API_VERSION, IdempotencyEntry, MeterEventRecord, State, new_event, new_id

IDEMPOTENCY_TTL = 24 * 3600
IDEMPOTENCY_IN_USE = (
    "There is currently another in-progress request using this Idempotent Key (that probably means "
    "you submitted twice, and the other request is still going through): {key}. Please try again "
    "later."
)
IDEMPOTENCY_OTHER_ENDPOINT = (
    "Keys for idempotent requests can only be used for the same endpoint they were first used for "
    "('{first}' vs '{now}'). Try using a key other than '{key}' if you meant to execute a different "
    "request."
)
IDEMPOTENCY_OTHER_PARAMS = (
    "Keys for idempotent requests can only be used with the same parameters they were first used "
    "with. Try using a key other than '{key}' if you meant to execute a different request."
)
LOCK_TIMEOUT = (
    "This object cannot be accessed right now because another API request or Stripe process is "
    "currently accessing it. If you see this error intermittently, retry the request. If you see this"
    " error frequently and are making multiple concurrent requests to a single object, make your "
    "requests serially or at a lower rate."
)
NO_API_KEY = (
    "You did not provide an API key. You need to provide your API key in the Authorization header, "
    "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
    "https://stripe.com/docs/api#authentication for details, or we can help at "
    "https://support.stripe.com/."
)
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding"}
_NO_WINDOW = object()  # a fault limited by a count, not by a time window


@dataclass
class RequestRecord:
    """One request the server received, as a test sees it."""

    method: str
    path: str
    query: dict
    params: dict
    headers: dict[str, str]  # lower-cased names
    api_mode: str
    request_id: str
    received_at: float
    idempotency_key: str | None = None
    status: int | None = None
    response: dict | None = None
    duration: float | None = None
    replayed: bool = False
    fault: str | None = None

    @property
    def stripe_version(self) -> str | None:
        return self.headers.get("stripe-version")


@dataclass
class Fault:
    status: int | None = None  # an error answer, or None for delay/drop only
    remaining: int | None = None  # calls left (None: unlimited until `until`)
    until: float | None = None  # time.monotonic() deadline
    path: str | None = None  # path prefix
    method: str | None = None
    when: str = "before"  # "before" the request is handled, or "after" (the change is made, the answer lost)
    delay: float = 0.0
    drop: bool = False
    error: dict | None = None
    headers: dict = field(default_factory=dict)
    name: str = ""

    def applies(self, method: str, path: str, now: float) -> bool:
        if self.until is not None and now > self.until:
            return False
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method and self.method.upper() != method:
            return False
        return not (self.path and not path.startswith(self.path))


class RateLimiter:
    """At most `rps` requests in any sliding second."""

    def __init__(self, rps: float, retry_after: float | None = None):
        self.rps = rps
        self.retry_after = retry_after
        self.stamps: deque[float] = deque()
        self.lock = threading.Lock()
        self.rejected = 0
        self.allowed = 0

    def acquire(self) -> float | None:
        now = time.monotonic()
        with self.lock:
            while self.stamps and self.stamps[0] <= now - 1.0:
                self.stamps.popleft()
            if len(self.stamps) >= self.rps:
                self.rejected += 1
                wait = self.stamps[0] + 1.0 - now
                return self.retry_after if self.retry_after is not None else wait
            self.stamps.append(now)
            self.allowed += 1
            return None


@dataclass
class WebhookDelivery:
    url: str
    event_id: str
    event_type: str
    payload: str
    signature: str
    status: int | None
    body: str
    error: str | None = None
    delivered_at: float = 0.0


@dataclass
class WebhookEndpoint:
    url: str
    secret: str
    enabled_events: tuple[str, ...] = ("*",)
    payload: str = "snapshot"  # "snapshot" (v1 events) or "thin" (v2 events)

    def wants(self, event: dict) -> bool:
        is_thin = event.get("object") == "v2.core.event"
        if is_thin != (self.payload == "thin"):
            return False
        return any(
            p == "*" or p == event["type"] or (p.endswith(".*") and event["type"].startswith(p[:-1]))
            for p in self.enabled_events
        )


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """Stripe's `Stripe-Signature` header: `t=<ts>,v1=<HMAC-SHA256 hex of "<ts>.<payload>">`."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    digest = hmac.new(secret.encode(), f"{ts}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={ts},v1={digest}"


class StripeServer:
    """A local Stripe. `with StripeServer() as stripe_server: ...` or `start()` / `stop()`."""

    DEFAULTS = {
        "meter_value_mode": "integer",  # "integer" (whole numbers) or "decimal" (up to 15 significant digits)
        "v1_meter_event_validation": "sync",  # "sync": 400 on a bad event; "async": 200 and an error report
        "stream_validation": "async",  # the v2 stream: "async" (Stripe's documented behaviour) or "sync"
        "identifier_window": res_meters.IDENTIFIER_WINDOW,
        "past_window": res_meters.PAST_WINDOW,
        "future_window": res_meters.FUTURE_WINDOW,
        "session_ttl": res_meters.SESSION_TTL,
        "stream_max_events": 100,
        "strict_params": True,  # 400 parameter_unknown / parameter_missing from stripe-python's param types
        "reject_concurrent_meter_events": False,  # 409 for overlapping calls on one (customer, meter)
    }

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_keys: set[str] | None = None,
        webhook_timeout: float = 10.0,
    ):
        self.host = host
        self.port = port
        self.api_keys = set(api_keys) if api_keys else None
        self.webhook_timeout = webhook_timeout
        self.state = State()
        self.state.event_listeners.append(self._on_event)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._log_lock = threading.Lock()
        self._fault_lock = threading.Lock()
        self._webhook_queue: queue.Queue = queue.Queue()
        self._webhook_thread: threading.Thread | None = None
        self._pending_deliveries = 0
        self._pending_lock = threading.Condition()
        self._inflight_meter_calls: dict[tuple, int] = {}
        self._init_controls()

    def _init_controls(self) -> None:
        for name, value in self.DEFAULTS.items():
            setattr(self, name, value)
        self._requests: list[RequestRecord] = []
        self._faults: list[Fault] = []
        self.rate_limits: dict[str, RateLimiter | None] = {"api": None, "stream": None}
        self.webhook_endpoints: list[WebhookEndpoint] = []
        self.webhook_deliveries: list[WebhookDelivery] = []
        self.concurrent_meter_event_calls: list[tuple] = []
        self.handler_errors: list[str] = []

    # lifecycle -----------------------------------------------------------------------------------
    def start(self) -> StripeServer:
        if self._httpd is not None:
            return self
        handler = type("Handler", (_Handler,), {"stripe": self})
        httpd = ThreadingHTTPServer((self.host, self.port), handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"stripe-server:{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._webhook_thread = threading.Thread(
            target=self._deliver_loop, name="stripe-webhooks", daemon=True
        )
        self._webhook_thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._webhook_queue.put(None)
        if self._webhook_thread is not None:
            self._webhook_thread.join(timeout=5)

    def reset(self) -> None:
        """Forget every object, request, fault, limit and setting; keep the port."""
        with self.state.lock:
            self.state.reset()
            self.state.time_offset = 0.0
        with self._log_lock, self._fault_lock:
            self._init_controls()

    def __enter__(self) -> StripeServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("StripeServer is not started")
        return f"http://{self.host}:{self.port}"

    # configuration -------------------------------------------------------------------------------
    def configure(self, **settings) -> None:
        """Set any of `DEFAULTS` (e.g. `meter_value_mode="decimal"`, `stream_validation="sync"`)."""
        for name, value in settings.items():
            if name not in self.DEFAULTS:
                raise ValueError(f"unknown setting {name!r}; known: {sorted(self.DEFAULTS)}")
            setattr(self, name, value)

    @property
    def search_delay(self) -> float:
        return self.state.search_delay

    @search_delay.setter
    def search_delay(self, seconds: float) -> None:
        """Seconds before a new or changed object shows up in search (Stripe: usually under a minute)."""
        self.state.search_delay = float(seconds)

    def set_rate_limit(
        self, rps: float | None, *, scope: str = "api", retry_after: float | None = None
    ) -> None:
        """Allow at most `rps` requests per sliding second (None: no limit). `scope` "api" covers every
        endpoint but the v2 meter event stream, which has its own "stream" limit."""
        if scope not in self.rate_limits:
            raise ValueError("scope must be 'api' or 'stream'")
        self.rate_limits[scope] = RateLimiter(rps, retry_after) if rps else None

    # faults --------------------------------------------------------------------------------------
    def add_fault(self, fault: Fault) -> Fault:
        with self._fault_lock:
            self._faults.append(fault)
        return fault

    def _new_fault(
        self,
        name: str,
        path: str | None,
        method: str | None,
        when: str,
        *,
        count: int | None = None,
        seconds: float | object = _NO_WINDOW,
        **effect,
    ) -> Fault:
        """Add a `name` fault for matching calls: the next `count` of them, or those in the next
        `seconds`; `effect` is its answer (status/error/headers, delay, drop)."""
        until = None if seconds is _NO_WINDOW else time.monotonic() + seconds
        return self.add_fault(
            Fault(remaining=count, until=until, path=path, method=method, when=when, name=name, **effect)
        )

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 500,
        path: str | None = None,
        method: str | None = None,
        when: str = "before",
        error: dict | None = None,
        headers: dict | None = None,
    ) -> Fault:
        """Answer the next `count` matching calls with `status` (Stripe's api_error body unless `error`
        gives the error object). `when="after"`: the call takes effect first and its answer is lost."""
        return self._new_fault(
            "fail_next",
            path,
            method,
            when,
            count=count,
            status=status,
            error=error,
            headers=dict(headers or {}),
        )

    def fail_for(
        self,
        seconds: float,
        *,
        status: int = 500,
        path: str | None = None,
        method: str | None = None,
        when: str = "before",
        error: dict | None = None,
    ) -> Fault:
        """Answer every matching call with `status` for `seconds`."""
        return self._new_fault("fail_for", path, method, when, seconds=seconds, status=status, error=error)

    def delay_next(
        self,
        count: int,
        seconds: float,
        *,
        path: str | None = None,
        method: str | None = None,
        when: str = "before",
    ) -> Fault:
        """Hold the next `count` matching answers for `seconds` (client timeouts)."""
        return self._new_fault("delay_next", path, method, when, count=count, delay=seconds)

    def delay_for(
        self,
        duration: float,
        seconds: float,
        *,
        path: str | None = None,
        method: str | None = None,
        when: str = "before",
    ) -> Fault:
        return self._new_fault("delay_for", path, method, when, seconds=duration, delay=seconds)

    def drop_next(
        self, count: int = 1, *, path: str | None = None, method: str | None = None, when: str = "before"
    ) -> Fault:
        """Close the connection without an answer for the next `count` matching calls."""
        return self._new_fault("drop_next", path, method, when, count=count, drop=True)

    def clear_faults(self) -> None:
        with self._fault_lock:
            self._faults.clear()

    def _take_faults(self, method: str, path: str, when: str) -> list[Fault]:
        now = time.monotonic()
        taken = []
        with self._fault_lock:
            for fault in self._faults:
                if fault.when == when and fault.applies(method, path, now):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    taken.append(fault)
            self._faults = [
                f
                for f in self._faults
                if not (f.remaining is not None and f.remaining <= 0)
                and not (f.until is not None and now > f.until)
            ]
        return taken

    # request log ---------------------------------------------------------------------------------
    @property
    def requests(self) -> list[RequestRecord]:
        with self._log_lock:
            return list(self._requests)

    def requests_to(self, path: str, method: str | None = None) -> list[RequestRecord]:
        """Requests whose path starts with `path` (and with `method`, if given)."""
        return [
            r for r in self.requests if r.path.startswith(path) and (method is None or r.method == method)
        ]

    def clear_requests(self) -> None:
        with self._log_lock:
            self._requests.clear()

    # state access --------------------------------------------------------------------------------
    def now(self) -> int:
        return self.state.now_int()

    def advance_time(self, seconds: float) -> None:
        """Move the server's clock (timestamps, 24-hour and 35-day windows, session expiry)."""
        with self.state.lock:
            self.state.time_offset += seconds

    def get(self, object_id: str, expand: list[str] | None = None) -> dict | None:
        with self.state.lock:
            obj = self.state.objects.get(object_id)
            return self.state.render(obj, expand or []) if obj is not None else None

    def objects(self, kind: str, *, include_deleted: bool = False) -> list[dict]:
        """Stored objects of one `object` type (e.g. "customer", "billing.meter"), oldest first."""
        with self.state.lock:
            return [
                self.state.render(o) for o in self.state.all(kind) if include_deleted or not o.get("deleted")
            ]

    def events(self, event_type: str | None = None) -> list[dict]:
        """Every Event the server recorded, oldest first (v1 snapshot events)."""
        with self.state.lock:
            return [
                copy.deepcopy(e)
                for e in self.state.all("event")
                if event_type is None or e["type"] == event_type
            ]

    def v2_events(self, event_type: str | None = None) -> list[dict]:
        with self.state.lock:
            return [
                copy.deepcopy(e)
                for e in self.state.v2_events.values()
                if event_type is None or e["type"] == event_type
            ]

    def meter_events(
        self, *, event_name: str | None = None, customer: str | None = None, include_canceled: bool = False
    ) -> list[MeterEventRecord]:
        """Accepted meter events (v1, v2 and stream), oldest first."""
        with self.state.lock:
            return [
                copy.copy(r)
                for r in self.state.meter_events
                if (event_name is None or r.event_name == event_name)
                and (customer is None or r.customer == customer)
                and (include_canceled or not r.canceled)
            ]

    @property
    def meter_errors(self) -> list[dict]:
        """Events refused asynchronously (stream, or v1 in async mode), with Stripe's error code."""
        with self.state.lock:
            return [dict(e) for e in self.state.meter_errors]

    def meter_totals(
        self, *, event_name: str | None = None, customer: str | None = None, window: int = 3600
    ) -> dict[tuple[str, str, int], Decimal]:
        """{(customer, event_name, window start): aggregated value} with each meter's formula."""
        with self.state.lock:
            groups: dict[tuple[str, str, int], list[MeterEventRecord]] = {}
            for r in self.state.meter_events:
                if (
                    r.canceled
                    or (event_name and r.event_name != event_name)
                    or (customer and r.customer != customer)
                ):
                    continue
                groups.setdefault((r.customer, r.event_name, r.timestamp - r.timestamp % window), []).append(
                    r
                )
            out = {}
            for key, records in groups.items():
                meter = self.state.objects[records[0].meter]
                out[key] = res_meters.aggregate(
                    records, meter["default_aggregation"]["formula"], meter.get("event_time_window")
                )
            return out

    def usage(self, customer: str, event_name: str, start: int = 0, end: int | None = None) -> Decimal:
        """The aggregated value of one customer's events for a meter between `start` and `end`."""
        with self.state.lock:
            meter = next((m for m in self.state.all("billing.meter") if m["event_name"] == event_name), None)
            if meter is None:
                return Decimal(0)
            records = [r for r in self.state.meter_events if r.event_name == event_name]
            records = [
                r
                for r in records
                if r.customer == customer and start <= r.timestamp and (end is None or r.timestamp < end)
            ]
            return res_meters.aggregate(
                records, meter["default_aggregation"]["formula"], meter.get("event_time_window")
            )

    # test controls that act like a user or like time passing -------------------------------------
    def _control_ctx(self) -> Ctx:
        return Ctx(self.state, self, "POST", "/_test", {}, {}, new_id("req", 14), None, "v1", "")

    def complete_checkout_session(
        self, session_id: str, *, card: str = "visa", email: str | None = None
    ) -> dict:
        """The customer completes hosted Checkout with a test card ("visa", "mastercard",
        "charge_fails" (attaches, later charges fail), "declined", or a test card number)."""
        with self.state.lock:
            ctx = self._control_ctx()
            session = res_billing.complete_checkout(ctx, session_id, card, email)
            return self.state.render(session)

    def advance_subscription(self, subscription_id: str) -> dict | None:
        """End the subscription's current period now: invoice metered usage, renew or cancel."""
        with self.state.lock:
            inv = res_billing.advance_subscription(self._control_ctx(), subscription_id)
            return self.state.render(inv) if inv else None

    def run_invoice_automation(self) -> list[str]:
        """Finalize auto-advancing drafts and charge auto-advancing open invoices, as Stripe would."""
        with self.state.lock:
            return res_billing.run_invoice_automation(self._control_ctx())

    def create_payment_method(
        self, customer: str | None = None, *, card: str = "visa", default: bool = False
    ) -> dict:
        """A card payment method, attached to `customer` (and made its default) if given."""
        with self.state.lock:
            ctx = self._control_ctx()
            pm = res_core.new_payment_method(ctx, res_billing.card_number(card))
            if customer:
                cus = self.state.require(customer, "customer", "customer")
                res_core._attach(ctx, pm, cus)
                if default:
                    before = {"invoice_settings": dict(cus["invoice_settings"])}
                    cus["invoice_settings"]["default_payment_method"] = pm["id"]
                    self.state.put(cus)
                    ctx.emit("customer.updated", cus, before)
            return self.state.render(pm)

    def create_payment_intent(
        self,
        customer: str | None,
        *,
        amount: int,
        currency: str = "usd",
        status: str = "succeeded",
        metadata: dict | None = None,
    ) -> dict:
        """A PaymentIntent of `customer` in `status` ("succeeded", "requires_payment_method" after a
        declined attempt, "requires_action"), with the event Stripe sends for it
        (payment_intent.succeeded / payment_failed / requires_action)."""
        with self.state.lock:
            ctx = self._control_ctx()
            if customer:
                self.state.require(customer, "customer", "customer")
            pm = res_core.new_payment_method(ctx, res_billing.card_number("visa"))
            pi = res_core.new_payment_intent(
                ctx,
                customer=customer,
                amount=amount,
                currency=currency,
                status=status,
                payment_method=pm["id"],
                metadata=metadata,
            )
            return self.state.render(pi)

    # webhooks ------------------------------------------------------------------------------------
    sign = staticmethod(sign)

    def add_webhook_endpoint(
        self, url: str, *, secret: str, enabled_events=("*",), payload: str = "snapshot"
    ) -> WebhookEndpoint:
        """Deliver every matching event the server records from now on to `url` (in the background;
        `wait_for_webhooks()` waits for the queue to drain)."""
        endpoint = WebhookEndpoint(url, secret, tuple(enabled_events), payload)
        self.webhook_endpoints.append(endpoint)
        return endpoint

    def _on_event(self, event: dict) -> None:
        for endpoint in self.webhook_endpoints:
            if endpoint.wants(event):
                if event.get("object") == "event":
                    event["pending_webhooks"] = event.get("pending_webhooks", 0) + 1
                with self._pending_lock:
                    self._pending_deliveries += 1
                self._webhook_queue.put((endpoint, copy.deepcopy(event)))

    def _deliver_loop(self) -> None:
        while True:
            item = self._webhook_queue.get()
            if item is None:
                return
            endpoint, event = item
            try:
                self._post_event(endpoint.url, event, endpoint.secret, None)
            finally:
                with self._pending_lock:
                    self._pending_deliveries -= 1
                    self._pending_lock.notify_all()

    def wait_for_webhooks(self, timeout: float = 5.0) -> bool:
        """Wait until every queued automatic delivery was attempted; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._pending_lock:
            while self._pending_deliveries > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._pending_lock.wait(left)
        return True

    def _post_event(self, url: str, event: dict, secret: str, timestamp: int | None) -> WebhookDelivery:
        payload = json.dumps(event, indent=2)
        signature = sign(payload, secret, timestamp)
        request = urllib.request.Request(  # noqa: S310 - a test URL the caller chose
            url,
            data=payload.encode(),
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                "Accept": "*/*; q=0.5, application/xml",
                "Cache-Control": "no-cache",
                "Stripe-Signature": signature,
            },
        )
        status, body, error = None, "", None
        try:
            with urllib.request.urlopen(request, timeout=self.webhook_timeout) as response:  # noqa: S310
                status, body = response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            error = str(exc)
        delivery = WebhookDelivery(
            url, event["id"], event["type"], payload, signature, status, body, error, time.time()
        )
        with self._log_lock:
            self.webhook_deliveries.append(delivery)
        return delivery

    def build_event(
        self,
        event_type: str,
        data_object: dict | str,
        *,
        previous_attributes: dict | None = None,
        created: int | None = None,
    ) -> dict:
        """Record a v1 Event (retrievable at GET /v1/events/{id}) without delivering it. `data_object`
        is an object dict or the id of a stored object (its current state is used)."""
        with self.state.lock:
            if isinstance(data_object, str):
                if data_object not in self.state.objects:
                    raise KeyError(f"no stored object {data_object!r}")
                obj = self.state.render(data_object)
            else:
                obj = copy.deepcopy(data_object)
            event = new_event(
                event_type,
                obj,
                previous_attributes,
                created=created if created is not None else self.state.now_int(),
                pending_webhooks=1,
            )
            self.state.put(event)
            return copy.deepcopy(event)

    def send_webhook(
        self,
        url: str,
        event_type: str,
        data_object: dict | str,
        *,
        secret: str,
        timestamp: int | None = None,
        duplicate: bool = False,
        previous_attributes: dict | None = None,
    ) -> list[WebhookDelivery]:
        """POST a signed Stripe Event to `url` now (twice with `duplicate=True`); returns the deliveries.
        `timestamp` sets the signature's `t=` (e.g. an old one for a stale-signature test)."""
        event = self.build_event(event_type, data_object, previous_attributes=previous_attributes)
        deliveries = [self._post_event(url, event, secret, timestamp)]
        if duplicate:
            deliveries.append(self._post_event(url, event, secret, timestamp))
        return deliveries

    def resend_event(
        self, url: str, event_id: str, *, secret: str, timestamp: int | None = None
    ) -> WebhookDelivery:
        """Deliver an already recorded v1 or v2 event again (duplicates, out-of-order replays)."""
        with self.state.lock:
            event = self.state.get(event_id, "event") or self.state.v2_events.get(event_id)
            if event is None:
                raise KeyError(f"no event {event_id!r}")
            event = copy.deepcopy(event)
        if event.get("object") == "v2.core.event":
            event = {k: v for k, v in event.items() if k != "data"}
        return self._post_event(url, event, secret, timestamp)

    def send_thin_webhook(
        self, url: str, event_id: str, *, secret: str, timestamp: int | None = None
    ) -> WebhookDelivery:
        """Deliver a v2 ("thin") event notification, e.g. `v1.billing.meter.error_report_triggered`."""
        return self.resend_event(url, event_id, secret=secret, timestamp=timestamp)

    # HTTP handling -------------------------------------------------------------------------------
    def _authenticate(self, headers: dict[str, str], route_name: str | None, api_mode: str) -> str:
        raw = headers.get("authorization", "")
        token = ""
        if raw.lower().startswith("bearer "):
            token = raw[7:].strip()
        elif raw.lower().startswith("basic "):
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                token = base64.b64decode(raw[6:].strip()).decode().split(":", 1)[0]
        if not token:
            raise StripeError(401, NO_API_KEY)
        if route_name == "/v2/billing/meter_event_stream":
            with self.state.lock:
                session = self.state.sessions.get(token)
                now = self.state.now()
            if session is None:
                raise StripeError(
                    401,
                    "The meter event stream requires a meter event session token "
                    "(POST /v2/billing/meter_event_session); the token given is not one.",
                    type="invalid_request_error",
                    code="unauthorized",
                )
            if now >= session["_expires"]:
                raise StripeError(
                    401,
                    "The meter event session has expired. Create a new meter event session.",
                    type="temporary_session_expired",
                    code="billing_meter_event_session_expired",
                )
            return token
        valid = (
            token in self.api_keys
            if self.api_keys is not None
            else token.startswith(("sk_test_", "rk_test_"))
        )
        if not valid:
            masked = token[:8] + "*" * max(len(token) - 12, 4) + token[-4:] if len(token) > 12 else token
            raise StripeError(401, f"Invalid API Key provided: {masked}")
        return token

    def _parse(self, method: str, api_mode: str, query: str, body: bytes, content_type: str) -> dict:
        params = parse_form(query) if query else {}
        if method in ("GET", "DELETE"):
            return params
        if api_mode == "v2":
            if not body.strip():
                return params
            try:
                data = json.loads(body)
            except ValueError:
                raise StripeError(400, "Invalid JSON in the request body.") from None
            if not isinstance(data, dict):
                raise StripeError(400, "The request body must be a JSON object.")
            return {**params, **data}
        if "application/json" in content_type:
            raise StripeError(
                400,
                "Invalid request: Stripe's v1 API takes application/x-www-form-urlencoded "
                "request bodies, not JSON.",
            )
        params.update(parse_form(body.decode("utf-8", errors="replace")))
        return params

    def _meter_call_key(self, params: dict) -> tuple | None:
        event_name = params.get("event_name")
        payload = params.get("payload")
        if not isinstance(event_name, str) or not isinstance(payload, dict):
            return None
        with self.state.lock:
            meter = res_meters.active_meter(self.state, event_name)
        key = meter["customer_mapping"]["event_payload_key"] if meter else "stripe_customer_id"
        return (payload.get(key), event_name)

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes):
        """Answer one request: (status, response headers, body bytes) or None to drop the connection."""
        try:
            return self._handle(method, raw_path, headers, body)
        except Exception:  # noqa: BLE001 - a server bug answers 500 and is kept for the test to see
            text = traceback.format_exc()
            self.handler_errors.append(text)
            print(text, file=sys.stderr)  # noqa: T201 - a server bug should be visible in the test output
            return 500, {"Request-Id": new_id("req", 14)}, json.dumps(api_error().body()).encode()

    def _handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes):
        started = time.monotonic()
        parts = urlsplit(raw_path)
        path = parts.path.rstrip("/") or "/"
        request_id = new_id("req", 14)
        api_mode = "v2" if path.startswith("/v2/") else "v1"
        record = RequestRecord(
            method,
            path,
            dict(parse_qsl(parts.query, keep_blank_values=True)),
            {},
            dict(headers),
            api_mode,
            request_id,
            time.time(),
            headers.get("idempotency-key"),
        )
        with self._log_lock:
            self._requests.append(record)
        out_headers = {
            "Request-Id": request_id,
            "Stripe-Version": headers.get("stripe-version") or API_VERSION,
        }
        if record.idempotency_key:
            out_headers["Idempotency-Key"] = record.idempotency_key
        meter_keys: set = set()
        idem_entry: IdempotencyEntry | None = None
        idem_key = None

        def finish(status: int, payload, extra: dict | None = None, *, save: bool = False):
            data = json.dumps(payload, indent=2).encode()
            hdrs = {**out_headers, **(extra or {})}
            if save and idem_entry is not None:
                idem_entry.status, idem_entry.body, idem_entry.headers = status, data, dict(hdrs)
                idem_entry.in_flight = False
            record.status = status
            record.response = payload
            record.duration = time.monotonic() - started
            return status, hdrs, data

        def fail(error: StripeError):
            return finish(error.status, error.body(api_mode, request_id), error.headers)

        try:
            route, path_args, _known = match(method, path)
            try:
                token = self._authenticate(headers, route.name if route else None, api_mode)
                scope = "stream" if route and route.name == "/v2/billing/meter_event_stream" else "api"
                limiter = self.rate_limits.get(scope)
                if limiter is not None:
                    wait = limiter.acquire()
                    if wait is not None:
                        error = rate_limited(api_mode)
                        error.headers = {
                            "Retry-After": str(max(1, math.ceil(wait))),
                            "Stripe-Rate-Limited-Reason": "global-rate",
                        }
                        return fail(error)
            except StripeError as error:
                return fail(error)
            for fault in self._take_faults(method, path, "before"):
                record.fault = fault.name
                if fault.delay:
                    time.sleep(fault.delay)
                if fault.drop:
                    record.status = None
                    return None
                if fault.status:
                    error = StripeError(fault.status, **self._fault_error(fault))
                    error.headers.update(fault.headers)
                    return fail(error)
            if route is None:
                return fail(unrecognized_url(method, path))
            try:
                params = self._parse(method, api_mode, parts.query, body, headers.get("content-type", ""))
                record.params = params
                if self.strict_params and route.params:
                    params = paramspec.check(params, paramspec.load(route.params), api_mode)
            except StripeError as error:
                return fail(error)
            if method == "POST" or (api_mode == "v2" and method == "DELETE"):
                idem_key = record.idempotency_key
            if idem_key:
                try:
                    idem_entry, replay = self._idempotency(idem_key, method, path, params, request_id)
                except StripeError as error:
                    return fail(error)
                if replay is not None:
                    record.replayed = True
                    record.status = replay.status
                    record.response = json.loads(replay.body)
                    record.duration = time.monotonic() - started
                    replay_headers = {
                        **replay.headers,
                        "Request-Id": request_id,
                        "Idempotent-Replayed": "true",
                        "Original-Request": replay.request_id,
                    }
                    return replay.status, replay_headers, replay.body
            if route.name in ("/v1/billing/meter_events", "/v2/billing/meter_event_stream"):
                # Which (customer, event name) pairs this call reports for; a pair already in
                # another call in flight is recorded (and refused with reject_concurrent_meter_events).
                bodies = params.get("events") if route.name.startswith("/v2") else [params]
                meter_keys = {
                    key
                    for key in (self._meter_call_key(b) for b in bodies or [] if isinstance(b, dict))
                    if key is not None
                }
                with self._log_lock:
                    busy = [key for key in meter_keys if self._inflight_meter_calls.get(key, 0)]
                    for key in meter_keys:
                        self._inflight_meter_calls[key] = self._inflight_meter_calls.get(key, 0) + 1
                    self.concurrent_meter_event_calls.extend(busy)
                if busy and self.reject_concurrent_meter_events:
                    self._drop_idempotency(idem_key, idem_entry)
                    idem_entry = None
                    return fail(StripeError(409, LOCK_TIMEOUT, code="lock_timeout"))
            ctx = Ctx(
                self.state,
                self,
                method,
                path,
                params,
                headers,
                request_id,
                idem_key,
                api_mode,
                token,
                path_args,
            )
            save = False
            try:
                with self.state.lock:
                    result = route.handler(ctx)
                status, payload = result if isinstance(result, tuple) else (200, result)
                response = (status, payload, None)
                save = True
            except StripeError as error:
                response = (error.status, error.body(api_mode, request_id), error.headers)
                save = error.status == 402 or error.status >= 500
            except Exception:  # noqa: BLE001 - a bug in the server must answer 500, not hang the client
                text = traceback.format_exc()
                self.handler_errors.append(text)
                print(text, file=sys.stderr)  # noqa: T201 - a server bug should be visible in the test output
                err = api_error()
                response = (500, err.body(api_mode, request_id), None)
            if not save:
                self._drop_idempotency(idem_key, idem_entry)
                idem_entry = None
            answer = finish(response[0], response[1], response[2], save=save)
            for fault in self._take_faults(method, path, "after"):
                record.fault = fault.name
                if fault.delay:
                    time.sleep(fault.delay)
                if fault.drop:
                    record.status = None
                    return None
                if fault.status:
                    error = StripeError(fault.status, **self._fault_error(fault))
                    error.headers.update(fault.headers)
                    hdrs = {**out_headers, **error.headers}
                    record.status = fault.status
                    record.response = error.body(api_mode, request_id)
                    return fault.status, hdrs, json.dumps(record.response, indent=2).encode()
            return answer
        finally:
            if idem_entry is not None and idem_entry.in_flight:
                self._drop_idempotency(idem_key, idem_entry)
            with self._log_lock:
                for key in meter_keys:
                    left = self._inflight_meter_calls.get(key, 1) - 1
                    if left > 0:
                        self._inflight_meter_calls[key] = left
                    else:
                        self._inflight_meter_calls.pop(key, None)

    def _idempotency(self, key: str, method: str, path: str, params: dict, request_id: str):
        """(new in-flight entry, None) for a first use; (None, stored entry) for a replay; StripeError for
        a key in use, used on another endpoint, or used with other parameters."""
        if len(key) > 255:
            raise StripeError(
                400, "Idempotency-Key must be at most 255 characters long.", type="idempotency_error"
            )
        fingerprint = json.dumps(params, sort_keys=True, default=str)
        with self.state.lock:
            now = self.state.now()
            entry = self.state.idempotency.get(key)
            if entry is not None and now - entry.created > IDEMPOTENCY_TTL and not entry.in_flight:
                entry = None
            if entry is None:
                fresh = IdempotencyEntry(method, path, fingerprint, now, request_id=request_id)
                self.state.idempotency[key] = fresh
                return fresh, None
        if entry.in_flight:
            raise StripeError(
                409,
                IDEMPOTENCY_IN_USE.format(key=key),
                type="idempotency_error",
                code="idempotency_key_in_use",
            )
        if (entry.method, entry.path) != (method, path):
            raise StripeError(
                400,
                IDEMPOTENCY_OTHER_ENDPOINT.format(
                    first=f"{entry.method} {entry.path}", now=f"{method} {path}", key=key
                ),
                type="idempotency_error",
            )
        if entry.params != fingerprint:
            raise StripeError(400, IDEMPOTENCY_OTHER_PARAMS.format(key=key), type="idempotency_error")
        return None, entry

    def _drop_idempotency(self, key: str | None, entry: IdempotencyEntry | None) -> None:
        if key and entry is not None:
            with self.state.lock:
                if self.state.idempotency.get(key) is entry:
                    del self.state.idempotency[key]

    @staticmethod
    def _fault_error(fault: Fault) -> dict:
        if fault.error:
            error = dict(fault.error)
            return {
                "message": error.pop("message", "An unknown error occurred"),
                "type": error.pop("type", "api_error"),
                "code": error.pop("code", None),
                "param": error.pop("param", None),
                "extra": error,
            }
        if fault.status == 429:
            limited = rate_limited()
            return {
                "message": limited.message,
                "type": limited.type,
                "code": limited.code,
                "headers": {"Retry-After": "1"},
            }
        if fault.status and fault.status < 500:
            return {"message": f"Simulated {fault.status} error from the local Stripe server."}
        return {"message": "An unknown error occurred", "type": "api_error"}

    # admin over HTTP (for processes that cannot reach the Python object) -------------------------
    def handle_admin(self, method: str, raw_path: str, body: bytes):
        parts = urlsplit(raw_path)
        path = parts.path.rstrip("/")
        query = dict(parse_qsl(parts.query))
        try:
            data = json.loads(body) if body.strip() else {}
        except ValueError:
            return 400, {"error": "body must be JSON"}
        try:
            if path == "/_test/reset" and method == "POST":
                self.reset()
                return 200, {"ok": True}
            if path == "/_test/config" and method == "POST":
                self.configure(**{k: v for k, v in data.items() if k != "search_delay"})
                if "search_delay" in data:
                    self.search_delay = data["search_delay"]
                return 200, {k: getattr(self, k) for k in self.DEFAULTS}
            if path == "/_test/rate_limit" and method == "POST":
                self.set_rate_limit(
                    data.get("rps"), scope=data.get("scope", "api"), retry_after=data.get("retry_after")
                )
                return 200, {"ok": True}
            if path == "/_test/faults" and method == "POST":
                kind = data.pop("kind", "fail_next")
                allowed = {"fail_next", "fail_for", "delay_next", "delay_for", "drop_next"}
                if kind not in allowed:
                    return 400, {"error": f"kind must be one of {sorted(allowed)}"}
                getattr(self, kind)(**data)
                return 200, {"ok": True}
            if path == "/_test/faults" and method == "DELETE":
                self.clear_faults()
                return 200, {"ok": True}
            if path == "/_test/requests" and method == "GET":
                return 200, {"data": [_record_json(r) for r in self.requests]}
            if path == "/_test/clock" and method == "POST":
                self.advance_time(float(data.get("advance", 0)))
                return 200, {"now": self.now()}
            if path == "/_test/meter_events" and method == "GET":
                return 200, {
                    "data": [
                        _meter_json(r)
                        for r in self.meter_events(
                            event_name=query.get("event_name"), customer=query.get("customer")
                        )
                    ]
                }
            if path == "/_test/meter_totals" and method == "GET":
                totals = self.meter_totals(event_name=query.get("event_name"), customer=query.get("customer"))
                return 200, {
                    "data": [
                        {"customer": c, "event_name": e, "hour": h, "value": str(v)}
                        for (c, e, h), v in sorted(totals.items())
                    ]
                }
            if path.startswith("/_test/objects/") and method == "GET":
                return 200, {"data": self.objects(path.split("/")[-1])}
            if (
                path.startswith("/_test/checkout_sessions/")
                and path.endswith("/complete")
                and method == "POST"
            ):
                session_id = path.split("/")[3]
                return 200, self.complete_checkout_session(
                    session_id, card=data.get("card", "visa"), email=data.get("email")
                )
            if path.startswith("/_test/subscriptions/") and path.endswith("/advance") and method == "POST":
                return 200, {"invoice": self.advance_subscription(path.split("/")[3])}
            if path == "/_test/webhook_endpoints" and method == "POST":
                self.add_webhook_endpoint(
                    data["url"],
                    secret=data["secret"],
                    enabled_events=data.get("enabled_events", ["*"]),
                    payload=data.get("payload", "snapshot"),
                )
                return 200, {"ok": True}
        except StripeError as error:
            return error.status, error.body()
        except (TypeError, ValueError, KeyError) as exc:
            return 400, {"error": str(exc)}
        return 404, {"error": f"unknown test control {method} {path}"}


def _record_json(r: RequestRecord) -> dict:
    return {
        "method": r.method,
        "path": r.path,
        "params": r.params,
        "idempotency_key": r.idempotency_key,
        "status": r.status,
        "request_id": r.request_id,
        "received_at": r.received_at,
        "replayed": r.replayed,
        "fault": r.fault,
        "stripe_version": r.stripe_version,
    }


def _meter_json(r: MeterEventRecord) -> dict:
    return {
        "identifier": r.identifier,
        "event_name": r.event_name,
        "meter": r.meter,
        "customer": r.customer,
        "value": str(r.value),
        "timestamp": r.timestamp,
        "created": r.created,
        "source": r.source,
        "canceled": r.canceled,
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "stripe-local"
    sys_version = ""
    stripe: StripeServer  # set on the subclass made in StripeServer.start

    def setup(self):
        super().setup()
        # Headers and body go out in two writes; without this, Nagle's algorithm and the client's delayed
        # ACK add ~40 ms to every answer on a kept-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):
        return

    def _respond(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        if self.path.startswith("/_test/"):
            status, payload = self.stripe.handle_admin(self.command, self.path, body)
            data = json.dumps(payload, indent=2, default=str).encode()
            self._write(status, {}, data)
            return
        if self.path.startswith("/p/session/") and self.command == "GET":
            token = urlsplit(self.path).path.rsplit("/", 1)[-1]
            with self.stripe.state.lock:
                status, page = res_portal.portal_page(self.stripe.state, token)
            self._write(status, {}, page.encode(), content_type="text/html; charset=utf-8")
            return
        result = self.stripe.handle(self.command, self.path, headers, body)
        if result is None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
            return
        status, out_headers, data = result
        self._write(status, out_headers, data)

    def _write(self, status: int, headers: dict, data: bytes, content_type: str = "application/json") -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                if name.lower() not in _HOP_HEADERS:
                    self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = _respond
    do_POST = _respond
    do_DELETE = _respond
    do_PUT = _respond
    do_PATCH = _respond
