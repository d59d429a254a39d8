"""Sends pending outbox rows to Stripe as meter events, within Stripe's limits.

- Rows go out through the v2 meter event stream, up to 100 events per call (Stripe's limit), with a
  session token renewed before it expires. A call the stream refuses as a whole (400) is resent event
  by event through v1 meter events, so that each bad event gets Stripe's own message and is marked
  failed, not retried; "an event already exists with identifier" means Stripe has it: sent.
- One call at a time per (customer, meter): a sender leases the (tenant, meter) balances it sends for
  (renewed while it works), and a concurrent sender skips leased pairs; within a sender, up to
  CALLS_IN_FLIGHT stream calls are in flight at once (worker threads wait for Stripe; this thread does
  every database step), never two carrying rows of one pair. A sender killed mid-call
  leaves its rows pending and its lease expires; the resend carries the same identifiers and values.
- Each row's timestamp is worked out again at every send: the hour's start, or the start of the
  tenant's metered subscription if it started during that hour (read once per call's rows), never
  older than Stripe takes (reporting.report_timestamp). Before a
  call, its rows are marked as having an attempt of unknown outcome (cleared when Stripe answers);
  a row still unknown more than DEDUP_SAFE after its first attempt is checked against Stripe's
  summaries first (reconciliation), and only what is missing is sent, under a new identifier.
- First, the rows of lowered hours (`correcting`) are canceled at Stripe (reporting.usage_reports_correct);
  an hour's replacement row is not due while any of them is left.
- Calls stay within STRIPE_MAX_REQUESTS_PER_SECOND in any second, each counted from its answer (`_Limiter`:
  the budget is used whole, with no idle gaps or headroom); a 429 waits for Retry-After; 5xx, timeouts
  and connection errors retry with exponential backoff and jitter, then defer the rows; a run of
  failures opens the circuit breaker (stripe_sync.circuit), which stops the run.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import stripe
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from core.metrics import STRIPE_REPORTS
from stripe_sync.catalog import CUSTOMER_PAYLOAD_KEY, VALUE_PAYLOAD_KEY
from stripe_sync.circuit import (
    CircuitOpen,
    circuit_check,
    circuit_failure,
    circuit_get,
    circuit_is_open,
    circuit_success,
)
from stripe_sync.client import stripe_client
from stripe_sync.models import ReportingBalance, UsageReport
from stripe_sync.reporting import pairs_q, report_timestamp, subscription_starts, usage_reports_correct

logger = logging.getLogger(__name__)

STREAM_MAX_EVENTS = 100
PAIRS_PER_CLAIM = 100
TRIES_PER_CALL = 4  # in-run tries of one call on 5xx/timeouts before its rows are deferred
MAX_RETRY_AFTER = 60.0  # seconds: a longer Retry-After defers the rows instead of sleeping
DUPLICATE_IDENTIFIER = "An event already exists with identifier"
SESSION_RENEW_MARGIN = timedelta(seconds=60)
# Stripe drops a repeated identifier for about 24 hours after it received it; past this since the
# first attempt, a row whose outcome is unknown is checked against Stripe before it is sent again.
DEDUP_SAFE = timedelta(hours=23)


def lease_seconds() -> int:
    return settings.STRIPE_REPORTING_LEASE_SECONDS


@dataclass
class SendResult:
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    calls: int = 0
    rate_limited: int = 0  # 429 answers
    server_errors: int = 0  # 5xx, timeouts, connection errors
    circuit_open: bool = False
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "errors"} | {"errors": self.errors[:5]}


# Stripe counts the calls it receives in a sliding second. A call reaches Stripe before its answer comes
# back, so a call started more than a second after the answer of an earlier one reaches Stripe more than a
# second after it, whatever the network's delays: the limiter counts each call from its answer (and a call
# still waiting for one as counting now). The margin is for clocks, not for jitter.
LIMIT_WINDOW_MARGIN = 0.01  # seconds
# Calls to Stripe the sender keeps going at once (rows of one (tenant, meter) are never in two of them):
# enough to keep the rate limit busy while the database work of the next and previous calls is done.
CALLS_IN_FLIGHT = 4
# A sender reads the breaker (kept in the database, shared by every worker) again after this long, or
# at once after a failure; while it last found it closed with no failures, a success writes nothing.
# So one that another worker opens stops this sender within a second, at two fewer queries per call.
BREAKER_RECHECK_SECONDS = 1.0


class _Limiter:
    """At most STRIPE_MAX_REQUESTS_PER_SECOND calls in any second as Stripe counts them, for the whole
    process (every thread). A call may start while fewer than `rps` calls are unanswered or answered
    within the last second; so a run's first calls go at once and the budget is used to the full, with
    no spacing to leave idle and no headroom for jitter. A fractional rate (0.5/s) is one call per
    1 / rps seconds."""

    def __init__(self):
        self.condition = threading.Condition()
        self.unanswered = 0
        self.answered: deque[float] = deque()  # monotonic moments of answers inside the window

    @staticmethod
    def _budget() -> tuple[int, float]:
        rps = float(settings.STRIPE_MAX_REQUESTS_PER_SECOND)
        calls = max(1, math.ceil(rps))
        return calls, calls / rps + LIMIT_WINDOW_MARGIN

    def acquire(self) -> None:
        with self.condition:
            while True:
                calls, window = self._budget()
                now = time.monotonic()
                while self.answered and self.answered[0] <= now - window:
                    self.answered.popleft()
                if self.unanswered + len(self.answered) < calls:
                    self.unanswered += 1
                    return
                timeout = self.answered[0] + window - now if self.answered else None
                self.condition.wait(timeout)

    def release(self) -> None:
        with self.condition:
            self.unanswered -= 1
            self.answered.append(time.monotonic())
            self.condition.notify_all()


LIMITER = _Limiter()


def _limited(fn: Callable[[], object]) -> object:
    """One try of a call to Stripe, inside the rate limit (any thread; no database work)."""
    LIMITER.acquire()
    try:
        return fn()
    finally:
        LIMITER.release()


class _Defer(Exception):
    """Stop trying these rows in this run (they stay pending for a later one).

    `ambiguous`: a try of the call may have reached Stripe (5xx, timeout, connection lost), so
    Stripe may hold the events; a refusal before processing (429, authentication) is not.
    """

    def __init__(self, message: str, *, ambiguous: bool = False):
        super().__init__(message)
        self.ambiguous = ambiguous


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter: ~0.5 s, 1 s, 2 s ... capped at 30 s."""
    return random.uniform(0, min(30.0, 0.5 * 2**attempt))  # noqa: S311 (jitter, not security)


def _retry_after(error: stripe.StripeError) -> float:
    value = (error.headers or {}).get("retry-after") or (error.headers or {}).get("Retry-After")
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 1.0


class MeterEventSender:
    """Calls to Stripe with pacing, 429 waits, backoff and the breaker (`call`), and the sending of
    outbox rows as meter events; its counts go to `result`. Reconciliation uses `call` too."""

    def __init__(self, result: SendResult, sleep: Callable[[float], None]):
        self.result = result
        self.sleep = sleep
        self.client = stripe_client()
        self.session_client: stripe.StripeClient | None = None
        self.session_expires: datetime | None = None
        # Worker threads for calls in flight, kept for the sender's life: each keeps its HTTP
        # connection to Stripe open from one call to the next (stripe-python's RequestsClient keeps a
        # session per thread).
        self.pool: ThreadPoolExecutor | None = None
        self.breaker_clean_until = 0.0  # monotonic: till then the breaker is known closed, no failures

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None

    # -- one call to Stripe, with pacing, 429 waits, backoff and the breaker -------------------
    def call(self, fn: Callable[[], object], *, tried: Future | None = None) -> object:
        """`fn` inside the rate limit, retried as below. `tried`: its first try, already started
        (by `send_rows`, counted, after the breaker was checked); its outcome is taken as that try's."""
        server_failures = 0
        ambiguous = False
        while True:
            try:
                if tried is not None:
                    first, tried = tried, None
                    answer = first.result()
                else:
                    self.breaker_check()
                    self.result.calls += 1
                    answer = _limited(fn)
            except stripe.RateLimitError as error:
                self.result.rate_limited += 1
                wait = _retry_after(error)
                if wait > MAX_RETRY_AFTER:
                    raise _Defer(f"rate limited for {wait:.0f} s", ambiguous=ambiguous) from error
                self.sleep(wait)
                continue
            except (stripe.APIConnectionError, stripe.APIError, stripe.AuthenticationError) as error:
                self.result.server_errors += 1
                message = f"{type(error).__name__}: {error.user_message or error}"
                ambiguous = ambiguous or not isinstance(error, stripe.AuthenticationError)
                self.breaker_clean_until = 0.0
                opened = circuit_failure(message)
                if opened is not None:
                    raise CircuitOpen(opened) from error
                server_failures += 1
                if server_failures >= TRIES_PER_CALL or isinstance(error, stripe.AuthenticationError):
                    raise _Defer(message, ambiguous=ambiguous) from error
                self.sleep(_backoff(server_failures))
                continue
            if time.monotonic() >= self.breaker_clean_until:
                circuit_success()
            return answer

    def breaker_check(self) -> None:
        """Raise CircuitOpen while the breaker is open (read at most every BREAKER_RECHECK_SECONDS
        while it is clean)."""
        now = time.monotonic()
        if now < self.breaker_clean_until:
            return
        breaker = circuit_get()
        if circuit_is_open(breaker):
            raise CircuitOpen(breaker)
        if breaker.failures == 0 and breaker.open_until is None:
            self.breaker_clean_until = now + BREAKER_RECHECK_SECONDS

    def stream(self) -> stripe.StripeClient:
        now = timezone.now()
        if self.session_client is None or self.session_expires - SESSION_RENEW_MARGIN <= now:
            session = self.call(lambda: self.client.v2.billing.meter_event_session.create())
            self.session_client = stripe_client(api_key=session.authentication_token)
            self.session_expires = _moment(session.expires_at)
        return self.session_client

    # -- sending rows ---------------------------------------------------------------------
    def send_rows(self, rows: list[UsageReport], *, progress: Callable[[], None] = lambda: None) -> None:
        """Send `rows` in stream calls of up to STREAM_MAX_EVENTS, up to CALLS_IN_FLIGHT at once.

        This thread does all the database work (the in-flight mark before a call, the outcome after
        it, retries, one-by-one fallbacks, deferrals) while worker threads wait for Stripe's answers,
        so the rate limit is kept busy without gaps between calls. Rows of one (tenant, meter) are
        never in two calls at once. `progress` runs after each call's rows are settled (the lease
        renewal). A CircuitOpen stops the run after the calls already going have been settled.
        """
        if not rows:
            return
        starts = subscription_starts({row.tenant_id for row in rows})
        size = STREAM_MAX_EVENTS
        waiting = deque(rows[i : i + size] for i in range(0, len(rows), size))
        going: deque[tuple[list[UsageReport], set, tuple]] = deque()
        busy: set[tuple[int, int]] = set()
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=CALLS_IN_FLIGHT, thread_name_prefix="stripe-send")
        pool = self.pool
        try:
            while waiting or going:
                chunk = _next_free(waiting, busy) if len(going) < CALLS_IN_FLIGHT else None
                if chunk is not None:
                    pairs = {(row.tenant_id, row.meter_id) for row in chunk}
                    busy |= pairs
                    going.append((chunk, pairs, self._start(pool, chunk, starts)))
                    continue
                chunk, pairs, tried = going.popleft()
                self._settle(chunk, starts, tried)
                busy -= pairs
                progress()
        finally:
            # Stopped early (the breaker opened): what Stripe already answered is recorded; the
            # rest stays pending (marked in flight: resent with the same identifiers).
            for chunk, _, (_, _, future) in going:
                if future.exception() is None:
                    _mark_sent(chunk, {"api": "v2.billing.meter_event_stream"})
                    self.result.sent += len(chunk)

    def _start(self, pool: ThreadPoolExecutor, rows: list[UsageReport], starts) -> tuple:
        """The first try of one stream call, started in a worker thread: (client, events, future)."""
        self.breaker_check()
        client = self.stream()
        events = [_event(row) for row in _in_flight(rows, starts)]
        self.result.calls += 1
        future = pool.submit(
            _limited, lambda: client.v2.billing.meter_event_stream.create({"events": events})
        )
        return client, events, future

    def _settle(self, rows: list[UsageReport], starts, tried: tuple) -> None:
        """The outcome of a started call: sent, retried (`call`), one by one, or deferred."""
        try:
            self.send(rows, starts, tried=tried)
        except _Defer as error:
            _defer(rows, str(error), ambiguous=error.ambiguous)
            self.result.deferred += len(rows)
            self.result.errors.append(str(error))

    def send(self, rows: list[UsageReport], starts=None, *, tried: tuple | None = None) -> None:
        """One stream call of `rows` (retried), or, if the stream refuses it, one call per row.
        `tried`: (client, events, future) of a try already started (`_start`)."""
        if starts is None:
            starts = subscription_starts({row.tenant_id for row in rows})
        for _ in range(3):
            client = None
            try:
                if tried is not None:
                    (client, events, future), tried = tried, None
                else:
                    client, future = self.stream(), None
                    events = [_event(row) for row in _in_flight(rows, starts)]
                self.call(
                    lambda c=client, e=events: c.v2.billing.meter_event_stream.create({"events": e}),
                    tried=future,
                )
            except stripe.TemporarySessionExpiredError:
                if self.session_client is client:  # not renewed meanwhile by another call's expiry
                    self.session_client = None
                continue
            except stripe.InvalidRequestError:
                self.send_one_by_one(rows, starts)
                return
            _mark_sent(rows, {"api": "v2.billing.meter_event_stream"})
            self.result.sent += len(rows)
            return
        raise _Defer("the meter event session kept expiring")

    def send_one_by_one(self, rows: list[UsageReport], starts: dict[int, datetime] | None = None) -> None:
        if starts is None:
            starts = subscription_starts({row.tenant_id for row in rows})
        for row in rows:
            _in_flight([row], starts)
            params = {**_event(row), "timestamp": int(row.timestamp.timestamp())}
            try:
                answer = self.call(lambda p=params: self.client.v1.billing.meter_events.create(params=p))
            except stripe.InvalidRequestError as error:
                message = error.user_message or str(error)
                if DUPLICATE_IDENTIFIER in message:
                    _mark_sent([row], {"api": "v1.billing.meter_events", "duplicate": True})
                    self.result.sent += 1
                    continue
                _mark_failed(row, error.code or "invalid_request", message)
                self.result.failed += 1
                self.result.errors.append(f"{row.identifier}: {message}")
                continue
            _mark_sent([row], {"api": "v1.billing.meter_events", "created": answer.get("created")})
            self.result.sent += 1


def _next_free(waiting: deque, busy: set) -> list[UsageReport] | None:
    """The first waiting chunk none of whose (tenant, meter) pairs is in a call going now (taken out
    of `waiting`), or None."""
    for index, chunk in enumerate(waiting):
        if index >= 2 * CALLS_IN_FLIGHT:
            return None
        if not any((row.tenant_id, row.meter_id) in busy for row in chunk):
            del waiting[index]
            return chunk
    return None


def _moment(value) -> datetime:
    """A v2 timestamp (RFC 3339 text) or a v1 one (Unix seconds) as an aware datetime."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _in_flight(rows: list[UsageReport], starts: dict[int, datetime]) -> list[UsageReport]:
    """Before a call that carries these rows: their timestamps worked out again for now (a resend
    never reuses a stamp Stripe no longer takes, and stamps the hour a subscription started at its
    start even if the row was written before it was known; `starts` is `subscription_starts` of the
    rows' tenants), and, written ahead, that an attempt is under way whose outcome is unknown until
    Stripe answers (a crash, timeout or lost answer leaves it so) and when the first attempt was
    (Stripe de-duplicates identifiers for about 24 hours)."""
    now = timezone.now()
    restamped = []
    for row in rows:
        stamp = report_timestamp(hour=row.hour, now=now, subscription_start=starts.get(row.tenant_id))
        if stamp != row.timestamp:
            row.timestamp = stamp
            restamped.append(row)
    if restamped:
        UsageReport.objects.bulk_update(restamped, ["timestamp"])
    UsageReport.objects.filter(pk__in=[r.pk for r in rows]).update(
        outcome_unknown=True, first_attempt_at=Coalesce("first_attempt_at", Value(now))
    )
    return rows


def _event(row: UsageReport) -> dict:
    return {
        "event_name": row.event_name,
        "identifier": row.identifier,
        "payload": {CUSTOMER_PAYLOAD_KEY: row.customer_id, VALUE_PAYLOAD_KEY: str(row.value)},
        "timestamp": row.timestamp.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }


def _mark_sent(rows: list[UsageReport], response: dict) -> None:
    STRIPE_REPORTS.labels("sent").inc(len(rows))
    now = timezone.now()
    UsageReport.objects.filter(pk__in=[r.pk for r in rows], status=UsageReport.Status.PENDING).update(
        status=UsageReport.Status.SENT,
        sent_at=now,
        outcome_unknown=False,
        attempts=F("attempts") + 1,
        stripe_response=response,
        error_code="",
        error_message="",
        updated_at=now,
    )


def _mark_failed(row: UsageReport, code: str, message: str) -> None:
    STRIPE_REPORTS.labels("failed").inc()
    UsageReport.objects.filter(pk=row.pk, status=UsageReport.Status.PENDING).update(
        status=UsageReport.Status.FAILED,
        outcome_unknown=False,
        attempts=F("attempts") + 1,
        error_code=code[:100],
        error_message=message,
        updated_at=timezone.now(),
    )


def _defer(rows: list[UsageReport], message: str, *, ambiguous: bool = True) -> None:
    """Leave rows pending, to be tried again after a backoff that grows with their attempts.

    Unless the failure was `ambiguous`, Stripe did not process the call: rows whose outcome was
    known before this attempt are known again."""
    STRIPE_REPORTS.labels("deferred").inc(len(rows))
    now = timezone.now()
    if not ambiguous:
        UsageReport.objects.filter(pk__in=[r.pk for r in rows if not r.outcome_unknown]).update(
            outcome_unknown=False
        )
    by_attempts = defaultdict(list)  # rows of one chunk mostly share their attempts: one update
    for row in rows:
        by_attempts[row.attempts].append(row.pk)
    for attempts, pks in by_attempts.items():
        delay = min(3600, 30 * 2 ** min(attempts, 7))
        UsageReport.objects.filter(pk__in=pks, status=UsageReport.Status.PENDING).update(
            attempts=F("attempts") + 1,
            next_attempt_at=now + timedelta(seconds=delay),
            error_message=message,
            updated_at=now,
        )


def _past_dedup(row: UsageReport, now: datetime) -> bool:
    """An attempt of this pending row may have reached Stripe, and the first was long enough ago
    that Stripe may no longer drop a copy of it as a duplicate."""
    return (
        row.outcome_unknown and row.first_attempt_at is not None and row.first_attempt_at < now - DEDUP_SAFE
    )


def _due(now: datetime) -> Q:
    # A lowered hour's new total waits until its earlier events are canceled at Stripe.
    correcting = UsageReport.objects.filter(
        status=UsageReport.Status.CORRECTING,
        tenant_id=OuterRef("tenant_id"),
        meter_id=OuterRef("meter_id"),
        hour=OuterRef("hour"),
    )
    return (
        Q(status=UsageReport.Status.PENDING)
        & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        & ~Exists(correcting)
    )


def _due_rows(pairs: list[tuple[int, int]], now: datetime) -> list[UsageReport]:
    """The due rows of these pairs (as `_due`), by pair and id. The hours being corrected are read
    apart (the partial index usage_report_correcting) and left out here: as an anti-join in the same
    statement, an outbox whose statistics predate its pending rows was once planned as a scan of
    those rows per pending row (73 s for 10,000 rows)."""
    pending = (
        UsageReport.objects.filter(status=UsageReport.Status.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .filter(pairs_q(pairs))
        .order_by("tenant_id", "meter_id", "id")
    )
    correcting = set(
        UsageReport.objects.filter(status=UsageReport.Status.CORRECTING)
        .filter(pairs_q(pairs))
        .order_by()
        .values_list("tenant_id", "meter_id", "hour")
    )
    return [row for row in pending if (row.tenant_id, row.meter_id, row.hour) not in correcting]


def _claim(now: datetime) -> list[tuple[int, int]]:
    """Lease up to PAIRS_PER_CLAIM (tenant, meter) pairs that have due rows and no other sender."""
    due_rows = UsageReport.objects.filter(
        _due(now), tenant_id=OuterRef("tenant_id"), meter_id=OuterRef("meter_id")
    )
    with transaction.atomic():
        balances = list(
            ReportingBalance.objects.select_for_update(skip_locked=True)
            .filter(Q(sending_until__isnull=True) | Q(sending_until__lt=now))
            .filter(Exists(due_rows))
            .order_by("id")[:PAIRS_PER_CLAIM]
        )
        ReportingBalance.objects.filter(pk__in=[b.pk for b in balances]).update(
            sending_until=now + timedelta(seconds=lease_seconds())
        )
    return [(b.tenant_id, b.meter_id) for b in balances]


def _renew(pairs: list[tuple[int, int]]) -> None:
    ReportingBalance.objects.filter(pairs_q(pairs)).update(
        sending_until=timezone.now() + timedelta(seconds=lease_seconds())
    )


def _release(pairs: list[tuple[int, int]]) -> None:
    ReportingBalance.objects.filter(pairs_q(pairs)).update(sending_until=None)


def usage_reports_send(
    *, sleep: Callable[[float], None] = time.sleep, max_rows: int | None = None
) -> SendResult:
    """Send every due pending row; returns what happened. Stops early if the breaker opens."""
    result = SendResult()
    try:
        circuit_check()
    except CircuitOpen as error:
        result.circuit_open = True
        result.errors.append(str(error))
        return result
    usage_reports_correct()  # lowered hours: cancel their events first, then their new totals go
    sender = MeterEventSender(result, sleep)
    try:
        _send_claimed(sender, result, max_rows)
    finally:
        sender.close()
    return result


def _send_claimed(sender: MeterEventSender, result: SendResult, max_rows: int | None) -> None:
    """Claim (tenant, meter) pairs with due rows and send their rows, until none is left."""
    handled = 0
    while max_rows is None or handled < max_rows:
        now = timezone.now()
        pairs = _claim(now)
        if not pairs:
            break
        try:
            rows = _due_rows(pairs, now)
            stale = [r for r in rows if _past_dedup(r, now)]
            if stale:
                # Stripe may hold these and no longer recognizes their identifiers: ask its
                # summaries first, send only what is missing (under new identifiers).
                from stripe_sync.reconciliation import usage_reports_check_at_stripe

                rows = [r for r in rows if not _past_dedup(r, now)]
                try:
                    rows += usage_reports_check_at_stripe(sender, stale)
                except _Defer as error:
                    # Stripe could not be asked: they stay pending and unknown, checked next run.
                    _defer(stale, f"checking Stripe's summaries first: {error}", ambiguous=True)
                    result.deferred += len(stale)
                    result.errors.append(str(error))
                rows.sort(key=lambda r: (r.tenant_id, r.meter_id, r.id))
            renewed = [time.monotonic()]

            def renew(pairs=pairs, renewed=renewed):
                # the lease is renewed when a quarter of it has gone, not after every call
                if time.monotonic() - renewed[0] > lease_seconds() / 4:
                    _renew(pairs)
                    renewed[0] = time.monotonic()

            sender.send_rows(rows, progress=renew)
            handled += len(rows)
        except CircuitOpen as error:
            result.circuit_open = True
            result.errors.append(str(error))
            logger.error("usage reporting stopped: %s", error)
            break
        finally:
            _release(pairs)
