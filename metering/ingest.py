"""Usage ingestion: validate a batch all-or-nothing, store it once per (tenant, event id).

Validation is plain Python rather than DRF serializers: it runs for every event of every batch,
and a serializer per event costs more than the database insert it guards.
"""

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Context, Decimal

from django.db import OperationalError, connection, transaction
from django.db.models import Sum

from core.json_input import json_problem, printable, text_problem
from core.parsing import ParseError, parse_datetime, parse_decimal
from metering.models import QUANTITY_DECIMAL_PLACES, Meter, PendingHour, UsageEvent
from tenants.models import Tenant

MAX_BATCH = 1000
MAX_BODY_BYTES = 1024 * 1024
MAX_EVENT_ID_LENGTH = 100
MAX_PROPERTIES_BYTES = 8 * 1024
# Stripe accepts meter events up to 35 days old and 5 minutes in the future.
BACKFILL_WINDOW = timedelta(days=35)
FUTURE_SKEW = timedelta(minutes=5)
# Aggregation (minute 2), reporting (minute 10), a failed run or a pair waiting a little can take
# longer than an hour, so the outbox, reconciliation and recomputes look this much further back than
# ingestion accepts: every hour ingestion accepted is still reported.
REPORTING_LAG = timedelta(days=2)
REPORTABLE_WINDOW = BACKFILL_WINDOW + REPORTING_LAG
# A Stripe meter event value carries at most 15 significant digits: a quantity has at most 15 digits
# in all (before and after the point, trailing zeros not counted), at most 12 of them after it.
QUANTITY_DIGITS = 15
QUANTITY_PLACES = QUANTITY_DECIMAL_PLACES
# An hour's total must be billable too: the outbox sends a change of more than one meter event's
# value as several events (stripe_sync.reporting), at most MAX_PARTS_PER_HOUR of them.
STRIPE_MAX_EVENT_VALUE = 10**QUANTITY_DIGITS - 1
MAX_PARTS_PER_HOUR = 100
MAX_HOUR_TOTAL = STRIPE_MAX_EVENT_VALUE * MAX_PARTS_PER_HOUR
# A batch adding less than this to one (meter, hour) is not checked against the hour's stored total:
# at the default INGEST_RATE_LIMIT (100/s, 360,000 requests an hour) such batches cannot bring an
# hour past MAX_HOUR_TOTAL (3.6e16 < 1e17); larger ones are checked against the stored events (a
# pair that still overflows is held and shown in admin by the outbox, never lost).
HOUR_CHECK_THRESHOLD = 10**11
# Levels of `properties` (the object itself is level 1); deeper is refused.
MAX_PROPERTIES_DEPTH = 20
_MISSING = object()
EVENT_FIELDS = frozenset({"id", "meter", "quantity", "timestamp", "properties"})
METER_CACHE_SECONDS = 10.0
EXACT = Context(prec=200)


class EventsInvalid(Exception):
    """The batch is rejected whole. `errors` maps an event's index (None: a single event) to
    {field: [messages]}."""

    def __init__(self, errors: dict):
        super().__init__("invalid events")
        self.errors = errors


@dataclass(slots=True, frozen=True)
class ValidEvent:
    event_id: str
    meter_id: int
    timestamp: datetime
    quantity: Decimal
    properties_json: str


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int


class _MeterCache:
    """Meter codes change rarely and are read on every request: keep them a few seconds in
    process, and reload at once on an unknown code so a new meter works immediately."""

    def __init__(self):
        self._by_code: dict[str, int] = {}
        self._loaded_at = float("-inf")

    def lookup(self, codes: set[str]) -> dict[str, int]:
        now = time.monotonic()
        stale = now - self._loaded_at > METER_CACHE_SECONDS
        if stale or not codes <= self._by_code.keys():
            self._by_code = dict(Meter.objects.values_list("code", "id"))
            self._loaded_at = now
        return self._by_code

    def clear(self) -> None:
        self._loaded_at = float("-inf")


meter_cache = _MeterCache()


def _quantity(value) -> Decimal | str:
    """The quantity as a Decimal, or the reason it is refused. Omitted means 1; null is refused (a
    client that sends null most likely lost a value, and counting it as 1 would hide that)."""
    if value is _MISSING:
        return Decimal(1)
    if value is None:
        return "must be a number; omit the field for 1"
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str | float):
        return "must be a number (or a string holding one)"
    try:
        quantity = parse_decimal(value, max_digits=QUANTITY_DIGITS, max_places=QUANTITY_PLACES, what="")
    except ParseError as exc:
        return str(exc)
    if quantity < 0:
        return "must not be negative"
    return quantity


def _timestamp(value, now: datetime) -> datetime | str:
    if value is None:
        return now
    try:
        moment = parse_datetime(value, what="", naive_is_utc=False)
    except ParseError as exc:
        return str(exc)
    if moment < now - BACKFILL_WINDOW:
        return "is more than 35 days in the past; Stripe does not accept usage that old"
    if moment > now + FUTURE_SKEW:
        return "is more than 5 minutes in the future"
    return moment


# One encoder for all events: json.dumps(..., separators=...) builds a new one per call.
_encode_properties = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode


def _properties(value) -> tuple[str, str | None]:
    """The properties as JSON text, or ("", why they are refused)."""
    if value is None:
        return "{}", None
    if not isinstance(value, dict):
        return "", "must be an object"
    if (problem := json_problem(value, max_depth=MAX_PROPERTIES_DEPTH)) is not None:
        return "", problem
    return _encode_properties(value), None


def _same(first: ValidEvent, second: ValidEvent) -> bool:
    """Two events of one batch with one id say the same thing (key order of properties aside)."""
    return (first.meter_id, first.timestamp, first.quantity) == (
        second.meter_id,
        second.timestamp,
        second.quantity,
    ) and json.loads(first.properties_json) == json.loads(second.properties_json)


def usage_events_validate(*, payload, now: datetime, tenant: Tenant | None = None) -> list[ValidEvent]:
    """Check every event of the request; raise EventsInvalid listing every problem.

    With `tenant`, also check that no hour of a sum meter would pass what Stripe can bill.
    """
    if isinstance(payload, dict) and "events" in payload:
        extra = set(payload) - {"events"}
        if extra:
            raise EventsInvalid({None: {printable(name): ["unknown field"] for name in sorted(extra)}})
        raw_events = payload["events"]
        if not isinstance(raw_events, list):
            raise EventsInvalid({None: {"events": ["must be a list of events"]}})
        if not raw_events:
            raise EventsInvalid({None: {"events": ["must hold at least one event"]}})
        if len(raw_events) > MAX_BATCH:
            raise EventsInvalid(
                {None: {"events": [f"holds {len(raw_events)} events; the limit is {MAX_BATCH}"]}}
            )
        indexed = True
    elif isinstance(payload, dict):
        raw_events, indexed = [payload], False
    else:
        raise EventsInvalid({None: {"non_field_errors": ['expected an event object or {"events": [...]}']}})

    codes = {e.get("meter") for e in raw_events if isinstance(e, dict) and isinstance(e.get("meter"), str)}
    meters = meter_cache.lookup(codes)
    errors: dict = {}
    valid: list[ValidEvent] = []
    # The first event of each id: a later one with the same id must say the same (then it counts as
    # a duplicate, as a resend would); one that differs makes the batch ambiguous and is refused.
    first_by_id: dict[str, tuple[int, ValidEvent]] = {}
    for index, raw in enumerate(raw_events):
        problems: dict[str, list[str]] = {}
        if not isinstance(raw, dict):
            errors[index if indexed else None] = {"non_field_errors": ["must be an object"]}
            continue
        for name in raw.keys() - EVENT_FIELDS:
            problems[printable(name)] = ["unknown field"]

        event_id = raw.get("id")
        if not isinstance(event_id, str) or not event_id.strip():
            problems["id"] = ["is required: a non-empty string, unique per event"]
        elif len(event_id) > MAX_EVENT_ID_LENGTH:
            problems["id"] = [f"must be at most {MAX_EVENT_ID_LENGTH} characters"]
        elif (problem := text_problem(event_id)) is not None:
            problems["id"] = [problem]

        code = raw.get("meter")
        meter_id = meters.get(code) if isinstance(code, str) else None
        if not isinstance(code, str) or not code:
            problems["meter"] = ["is required: the code of a meter"]
        elif (problem := text_problem(code)) is not None:
            problems["meter"] = [problem]
        elif meter_id is None:
            problems["meter"] = [f"unknown meter {code[:100]!r}"]

        quantity = _quantity(raw.get("quantity", _MISSING))
        if isinstance(quantity, str):
            problems["quantity"] = [quantity]

        timestamp = _timestamp(raw.get("timestamp"), now)
        if isinstance(timestamp, str):
            problems["timestamp"] = [timestamp]

        properties_json, problem = _properties(raw.get("properties"))
        if problem is not None:
            problems["properties"] = [problem]
        elif len(properties_json.encode()) > MAX_PROPERTIES_BYTES:
            problems["properties"] = [f"must be at most {MAX_PROPERTIES_BYTES} bytes as JSON"]

        if not problems:
            event = ValidEvent(event_id, meter_id, timestamp, quantity, properties_json)
            first = first_by_id.setdefault(event_id, (index, event))
            if first[0] != index and not _same(first[1], event):
                problems["id"] = [
                    f"events {first[0]} and {index} have the same id with different content; "
                    "an id names one event"
                ]
        if problems:
            errors[index if indexed else None] = problems
        elif not errors:
            valid.append(event)
    if errors:
        raise EventsInvalid(errors)
    if tenant is not None and (errors := _hour_total_problems(tenant.pk, valid)):
        raise EventsInvalid({(index if indexed else None): problems for index, problems in errors.items()})
    return valid


def _hour_total_problems(tenant_id: int, events: list[ValidEvent]) -> dict[int, dict[str, list[str]]]:
    """Events that would bring an hour of a sum meter past MAX_HOUR_TOTAL, by index."""
    added: dict[tuple[int, datetime], Decimal] = {}
    for event in events:
        key = (event.meter_id, _hour(event.timestamp))
        added[key] = added.get(key, Decimal(0)) + event.quantity
    large = {key: total for key, total in added.items() if total >= HOUR_CHECK_THRESHOLD}
    if not large:
        return {}
    sum_meters = dict(
        Meter.objects.filter(pk__in={m for m, _ in large}, aggregation=Meter.Aggregation.SUM).values_list(
            "pk", "code"
        )
    )
    over = set()
    for (meter_id, hour), total in large.items():
        if meter_id not in sum_meters:
            continue
        stored = UsageEvent.objects.filter(
            tenant_id=tenant_id,
            meter_id=meter_id,
            timestamp__gte=hour,
            timestamp__lt=hour + timedelta(hours=1),
        ).aggregate(total=Sum("quantity"))["total"] or Decimal(0)
        if stored + total > MAX_HOUR_TOTAL:
            over.add((meter_id, hour))
    return {
        index: {
            "quantity": [
                f"would bring the total of meter {sum_meters[event.meter_id]!r} for the hour "
                f"{_hour(event.timestamp):%Y-%m-%dT%H:00Z} past {MAX_HOUR_TOTAL}, more than Stripe can bill"
            ]
        }
        for index, event in enumerate(events)
        if (event.meter_id, _hour(event.timestamp)) in over
    }


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


_PG_INSERT = """
WITH new AS (
    INSERT INTO metering_usageevent
        (tenant_id, meter_id, event_id, "timestamp", quantity, properties, received_at)
    SELECT %(tenant)s, u.meter_id, u.event_id, u.ts, u.quantity, u.properties::jsonb, %(now)s
    FROM unnest(%(meter_ids)s::bigint[], %(event_ids)s::varchar[], %(timestamps)s::timestamptz[],
                %(quantities)s::numeric[], %(properties)s::text[])
         AS u(meter_id, event_id, ts, quantity, properties)
    ORDER BY u.event_id
    ON CONFLICT (tenant_id, event_id) DO NOTHING
    RETURNING meter_id, "timestamp"
), pending AS (
    INSERT INTO metering_pendinghour (tenant_id, meter_id, hour, marked_at)
    SELECT DISTINCT %(tenant)s, meter_id, date_trunc('hour', "timestamp", 'UTC'), %(now)s::timestamptz
    FROM new
    ORDER BY 2, 3
    ON CONFLICT (tenant_id, meter_id, hour) DO UPDATE SET marked_at = EXCLUDED.marked_at
    RETURNING 1
)
SELECT (SELECT count(*) FROM new), (SELECT count(*) FROM pending)
"""


def _array_literal(values, *, quote: bool) -> str:
    """A PostgreSQL array literal: one parameter instead of a thousand adapted by psycopg."""
    if not quote:
        return "{" + ",".join(values) + "}"
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


def _record_postgresql(tenant_id: int, events: list[ValidEvent], now: datetime) -> int:
    # One statement: insert the new events (a duplicate id is skipped; a concurrent insert of the
    # same id waits for the other transaction and is then skipped) and mark their hours pending.
    # The pending upsert takes a row lock that aggregation's claim respects (see aggregation.py).
    # Rows go in sorted order so that two overlapping batches lock in the same order. The arrays
    # travel as literals: adapting each element in Python cost a third of a batch request.
    params = {
        "tenant": tenant_id,
        "now": now,
        "meter_ids": _array_literal((str(e.meter_id) for e in events), quote=False),
        "event_ids": _array_literal((e.event_id for e in events), quote=True),
        "timestamps": _array_literal((e.timestamp.isoformat() for e in events), quote=False),
        "quantities": _array_literal((str(e.quantity) for e in events), quote=False),
        "properties": _array_literal((e.properties_json for e in events), quote=True),
    }
    with connection.cursor() as cursor:
        cursor.execute(_PG_INSERT, params)
        accepted, _ = cursor.fetchone()
    return accepted


def _record_portable(tenant_id: int, events: list[ValidEvent], now: datetime) -> int:
    # SQLite runs write transactions one at a time (BEGIN IMMEDIATE), so look-then-insert is exact.
    ids = [e.event_id for e in events]
    seen = set(
        UsageEvent.objects.filter(tenant_id=tenant_id, event_id__in=ids).values_list("event_id", flat=True)
    )
    new = []
    for event in events:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        new.append(event)
    UsageEvent.objects.bulk_create(
        UsageEvent(
            tenant_id=tenant_id,
            meter_id=e.meter_id,
            event_id=e.event_id,
            timestamp=e.timestamp,
            quantity=e.quantity,
            properties=json.loads(e.properties_json),
            received_at=now,
        )
        for e in new
    )
    hours = sorted({(e.meter_id, _hour(e.timestamp)) for e in new})
    PendingHour.objects.bulk_create(
        [PendingHour(tenant_id=tenant_id, meter_id=m, hour=h, marked_at=now) for m, h in hours],
        update_conflicts=True,
        unique_fields=["tenant", "meter", "hour"],
        update_fields=["marked_at"],
    )
    return len(new)


def usage_events_record(*, tenant: Tenant, events: list[ValidEvent], now: datetime) -> IngestResult:
    """Store the events not seen before for this tenant; committed when this returns."""
    for attempt in range(3):
        try:
            if connection.vendor == "postgresql":
                # One statement, atomic on its own (and in autocommit, committed on return):
                # wrapping it in atomic() only added BEGIN/COMMIT round trips.
                accepted = _record_postgresql(tenant.pk, events, now)
            else:
                with transaction.atomic():
                    accepted = _record_portable(tenant.pk, events, now)
            break
        except OperationalError as exc:
            # Two batches that share event ids and hours can still deadlock in rare orders;
            # PostgreSQL aborts one of them, which is safe to run again.
            if attempt == 2 or "deadlock" not in str(exc).lower():
                raise
    return IngestResult(accepted=accepted, duplicates=len(events) - accepted)
