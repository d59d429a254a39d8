"""Usage ingestion: validate a batch all-or-nothing, store it once per (tenant, event id).

Validation is plain Python rather than DRF serializers: it runs for every event of every batch,
and a serializer per event costs more than the database insert it guards. The API's usual bodies go
faster still: msgspec decodes them into typed structs (events_body_decode) and _validate_typed
settles them in one short loop; anything it cannot settle takes the general checks below, which
word every error.
"""

import hashlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, localcontext

import msgspec
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import Sum

from core.json_input import json_loads_exact_fast, json_problem, printable, text_problem
from core.money import plain_decimal
from core.parsing import (
    MAX_DATETIME,
    MAX_YEAR,
    MIN_DATETIME,
    MIN_YEAR,
    ParseError,
    parse_datetime,
    parse_decimal,
)
from metering.estimates import month_bounds
from metering.eventstore import event_store
from metering.hourly import hour_start
from metering.models import (
    QUANTITY_DECIMAL_PLACES,
    REFUSABLE_AGGREGATIONS,
    Meter,
    PlanMeterAllowance,
    UsageEvent,
)
from metering.usage import usage_totals
from tenants.models import Tenant
from tenants.selectors import tenants_by_api_refs

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
# A tuple, not `int | Decimal | ...`: isinstance with a union builds it on every call (microseconds
# per event on the hot path).
_NUMERIC = (int, Decimal, str, float)
EVENT_FIELDS = frozenset({"id", "meter", "quantity", "timestamp", "properties", "tenant"})
METER_CACHE_SECONDS = 10.0
EXACT = Context(prec=200)
# The largest whole quantity of at most QUANTITY_DIGITS digits.
_MAX_PLAIN_INT = 10**QUANTITY_DIGITS - 1


class EventsInvalid(Exception):
    """The batch is rejected whole. `errors` maps an event's index (None: a single event) to
    {field: [messages]}."""

    def __init__(self, errors: dict):
        super().__init__("invalid events")
        self.errors = errors


class EventsAlreadyStored(Exception):
    """An all-new recording (usage_events_record(all_new=True)) met events already stored: nothing
    was stored. `indexes`: those events."""

    def __init__(self, indexes: list[int]):
        super().__init__("events already stored")
        self.indexes = indexes


class EventsForbidden(Exception):
    """A tenant key's batch names another tenant: refused whole (403). `indexes`: the events that do
    (None: a single event)."""

    def __init__(self, indexes: list):
        super().__init__("A tenant key acts only for its own tenant.")
        self.indexes = indexes


class UsageLimitExceeded(Exception):
    """A batch would take a tenant's usage of a meter past its plan's hard limit, and the plan
    refuses events beyond it: nothing of the batch was stored (403)."""

    def __init__(
        self, *, meter: str, limit: Decimal, usage: Decimal, requested: Decimal, period_end: datetime
    ):
        self.meter, self.limit, self.usage, self.requested = meter, limit, usage, requested
        self.period_end = period_end
        super().__init__(
            f"meter {meter!r} is limited to {plain_decimal(limit)} per billing period on this plan: "
            f"usage is {plain_decimal(usage)} and these events add {plain_decimal(requested)}; nothing was "
            f"stored. The period ends {period_end.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}."
        )


class ValidEvent(msgspec.Struct, frozen=True):
    """A checked event, ready to store. A frozen msgspec Struct rather than a frozen dataclass: it
    is built once per event of every batch, in C about eight times faster."""

    event_id: str
    meter_id: int
    timestamp: datetime
    quantity: Decimal
    properties_json: str
    # The tenant the event named (or the calling tenant's); None: the tenant given to
    # usage_events_record.
    tenant_id: int | None = None


@dataclass(slots=True, frozen=True)
class MeterRef:
    """What ingestion needs of a meter: its id, and where an event without a quantity finds one."""

    id: int
    value_path: tuple[str, ...] = ()

    @property
    def value_field(self) -> str:
        """The value property as errors name it: `properties.usage.tokens`."""
        return "properties." + ".".join(self.value_path)


def value_path(value_property: str) -> tuple[str, ...]:
    """`tokens`, `usage.tokens` or OpenMeter's `$.usage.tokens` -> the keys to walk; '' -> ()."""
    if not value_property:
        return ()
    return tuple(value_property.removeprefix("$.").split("."))


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int


class _MeterCache:
    """Meter codes change rarely and are read on every request: keep them a few seconds in
    process, and reload at once on an unknown code so a new meter works immediately."""

    def __init__(self):
        self._by_code: dict[str, MeterRef] = {}
        self._loaded_at = float("-inf")
        self._allowance_rows: dict = {}
        self._refusing: dict[int, dict[str, Decimal]] = {}
        self._allowances_loaded_at = float("-inf")
        self._meters: dict[str, Meter] = {}
        self._meters_loaded_at = float("-inf")

    def lookup(self, codes: set[str]) -> dict[str, MeterRef]:
        now = time.monotonic()
        stale = now - self._loaded_at > METER_CACHE_SECONDS
        if stale or not codes <= self._by_code.keys():
            self._by_code = {
                code: MeterRef(pk, value_path(prop))
                for code, pk, prop in Meter.objects.values_list("code", "id", "value_property")
            }
            self._loaded_at = now
        return self._by_code

    def _allowances_load(self) -> None:
        now = time.monotonic()
        if now - self._allowances_loaded_at <= METER_CACHE_SECONDS:
            return
        rows = {(row.plan, row.meter_id): row for row in PlanMeterAllowance.objects.select_related("meter")}
        refusing: dict[int, dict[str, Decimal]] = {}
        for (plan, meter_id), row in rows.items():
            if (
                row.at_limit == PlanMeterAllowance.AtLimit.REFUSE
                and row.hard_limit is not None
                and row.meter.aggregation in REFUSABLE_AGGREGATIONS
            ):
                refusing.setdefault(meter_id, {})[plan] = row.hard_limit
        self._allowance_rows, self._refusing, self._allowances_loaded_at = rows, refusing, now

    def allowance_rows(self) -> dict:
        """Every PlanMeterAllowance row by (plan, meter id) (metering.allowances.PlanRows): a handful
        of rows, read every few seconds; metering.allowances clears it on a change in this process."""
        self._allowances_load()
        return self._allowance_rows

    def refusing_limits(self) -> dict[int, dict[str, Decimal]]:
        """{meter id: {plan: hard limit}} of the plans that refuse events beyond a limit (count and
        sum meters only), from the same rows."""
        self._allowances_load()
        return self._refusing

    def _meters_load(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._meters_loaded_at > METER_CACHE_SECONDS:
            self._meters = {m.code: m for m in Meter.objects.prefetch_related("filters")}
            self._meters_loaded_at = now

    def meter(self, code: str) -> Meter | None:
        """The meter with its filters (for reads such as the entitlements), kept like the codes; an
        unknown code reloads at once."""
        self._meters_load(force=code not in self._meters)
        return self._meters.get(code)

    def meters(self) -> list[Meter]:
        """Every meter with its filters, by code."""
        self._meters_load()
        return sorted(self._meters.values(), key=lambda meter: meter.code)

    def clear(self) -> None:
        self._loaded_at = float("-inf")
        self._allowances_loaded_at = float("-inf")
        self._meters_loaded_at = float("-inf")


meter_cache = _MeterCache()


def _quantity(value) -> Decimal | str:
    """The quantity as a Decimal, or the reason it is refused. Omitted means 1; null is refused (a
    client that sends null most likely lost a value, and counting it as 1 would hide that)."""
    if type(value) is int and 0 <= value <= _MAX_PLAIN_INT:
        # The usual quantity, a small whole number: what parse_decimal would answer, without it.
        return Decimal(value)
    if value is _MISSING:
        return Decimal(1)
    if value is None:
        return "must be a number; omit the field for 1"
    if isinstance(value, bool) or not isinstance(value, _NUMERIC):
        return "must be a number (or a string holding one)"
    try:
        quantity = parse_decimal(value, max_digits=QUANTITY_DIGITS, max_places=QUANTITY_PLACES, what="")
    except ParseError as exc:
        return str(exc)
    if quantity < 0:
        return "must not be negative"
    return quantity


def _property_value(properties, path: tuple[str, ...]):
    """The value at `path` inside the event's properties, or _MISSING."""
    value = properties
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _value_quantity(properties, meter: "MeterRef", code: str) -> Decimal | str:
    """The quantity an event without one takes from its meter's value property."""
    value = _property_value(properties, meter.value_path)
    if value is _MISSING:
        return f"is required: meter {code[:100]!r} takes the quantity from it when the event has none"
    if value is None:
        return "must be a number (or a string holding one), not null"
    return _quantity(value)


def _plain_utc_moment(text: str) -> datetime | None:
    """The usual timestamp, "2026-11-21T10:00:00.123Z" (an ISO-8601 date-time in UTC without
    surrounding blanks), as parse_datetime reads it, or None for anything else, which
    parse_datetime then reads or refuses with its message."""
    if len(text) > 32 or text[-1:] != "Z" or not text.isascii() or not text.isprintable():
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    # A "Z" date-time is aware UTC; only the year range is left of parse_datetime's checks.
    if moment.tzinfo is not UTC or not MIN_YEAR <= moment.year <= MAX_YEAR:
        return None
    return moment


def _timestamp(value, now: datetime) -> datetime | str:
    if value is None:
        return now
    if type(value) is str and (moment := _plain_utc_moment(value)) is not None:
        pass
    elif isinstance(value, datetime):
        # From a translation (metering.compat: Lago's unix seconds), never from JSON: aware, UTC.
        moment = value
    else:
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


# msgspec writes exactly these bytes for str, int, bool, None and Decimal values (Decimals as JSON
# strings, as default=str does; metering/tests/test_ingest_fast_paths.py compares both), in C.
_encode_flat = msgspec.json.Encoder().encode
_FLAT_TYPES = frozenset({str, int, bool, type(None), Decimal})
_TOO_LARGE = f"must be at most {MAX_PROPERTIES_BYTES} bytes as JSON"


def _flat_properties(value: dict) -> bytes | None:
    """The JSON of properties holding only plain values (one level: str, int, bool, null, finite
    Decimal) and no NUL, or None when they hold anything else (then the full checks decide)."""
    for item in value.values():
        if type(item) not in _FLAT_TYPES or (type(item) is Decimal and not item.is_finite()):
            return None
    try:
        encoded = _encode_flat(value)
    except (TypeError, ValueError, UnicodeError, OverflowError):  # e.g. an unpaired surrogate
        return None
    # A NUL in a key or a value is written as \u0000 (so is a text that spells it out, which only
    # sends that event to the full checks).
    return None if b"\\u0000" in encoded else encoded


def _properties(value) -> tuple[str, str | None]:
    """The properties as JSON text, or ("", why they are refused): not an object, a value that
    cannot be stored (json_problem), or more than MAX_PROPERTIES_BYTES as JSON."""
    if value is None:
        return "{}", None
    if not isinstance(value, dict):
        return "", "must be an object"
    if (encoded := _flat_properties(value)) is not None:
        return ("", _TOO_LARGE) if len(encoded) > MAX_PROPERTIES_BYTES else (encoded.decode(), None)
    if (problem := json_problem(value, max_depth=MAX_PROPERTIES_DEPTH)) is not None:
        return "", problem
    text = _encode_properties(value)
    if len(text.encode()) > MAX_PROPERTIES_BYTES:
        return "", _TOO_LARGE
    return text, None


def _same(first: ValidEvent, second: ValidEvent) -> bool:
    """Two events of one batch with one id say the same thing (key order of properties aside)."""
    return (first.meter_id, first.timestamp, first.quantity) == (
        second.meter_id,
        second.timestamp,
        second.quantity,
    ) and json.loads(first.properties_json) == json.loads(second.properties_json)


def _tenant_problem(ref, *, tenant: Tenant | None, named: dict[str, Tenant], required: bool):
    """(tenant id or None, problem or None, foreign) for an event's `tenant` field."""
    if ref is _MISSING or ref is None:
        if tenant is not None:
            return tenant.pk, None, False
        if required:
            return None, "is required with a platform key: the tenant's external id or slug", False
        return None, None, False
    if not isinstance(ref, str) or not ref:
        return None, "must be a non-empty string: the tenant's external id or slug", False
    if tenant is not None:
        # A tenant key may name its own tenant, by external id or slug; another one is refused.
        if ref in (tenant.slug, tenant.external_id):
            return tenant.pk, None, False
        return None, None, True
    found = named.get(ref)
    if found is None:
        return None, f"no tenant with external id or slug {ref[:100]!r}", False
    if not found.is_active:
        return None, f"tenant {ref[:100]!r} is suspended; its usage is not accepted", False
    return found.pk, None, False


class _TypedEvent(msgspec.Struct, forbid_unknown_fields=True):
    """An event as most clients send it, read and type-checked by msgspec in C: whole-number
    quantity, text timestamp, properties of plain values one level deep. Anything else does not
    decode into it and takes the general path."""

    id: str
    meter: str
    quantity: int | msgspec.UnsetType = msgspec.UNSET
    timestamp: str | None = None
    properties: dict[str, str | int | bool | None] | None = None
    tenant: str | msgspec.UnsetType | None = msgspec.UNSET


class _TypedBatch(msgspec.Struct, forbid_unknown_fields=True):
    events: list[_TypedEvent]


_decode_typed_batch = msgspec.json.Decoder(_TypedBatch).decode
_decode_typed_event = msgspec.json.Decoder(_TypedEvent).decode
_ONE = Decimal(1)
# Decimals are immutable: the usual small quantities are shared, not built per event.
_SMALL_DECIMALS = tuple(Decimal(i) for i in range(1024))


class EventsBody:
    """A body of POST /api/v1/events that decoded into the typed events above; `body` is kept for
    the general path, which reads it again when the fast checks do not settle every event."""

    __slots__ = ("body", "events", "indexed")

    def __init__(self, body: bytes, events: list[_TypedEvent], indexed: bool):
        self.body, self.events, self.indexed = body, events, indexed

    def payload(self):
        """The body as json_loads_exact reads it (it is valid JSON: msgspec read it)."""
        return json_loads_exact_fast(self.body)


def events_body_decode(body: bytes):
    """A request body for usage_events_validate: an EventsBody when it has the usual shape, else
    the JSON value as json_loads_exact reads it (raising what it raises: ValueError,
    UnicodeDecodeError, RecursionError)."""
    # A batch names "events" first; trying the likelier shape first saves a failed decode (the
    # order changes only the time: a body either shape refuses goes to the general path).
    batch_first = b'"events"' in body[:64]
    for decode in (_decode_batch, _decode_event) if batch_first else (_decode_event, _decode_batch):
        try:
            return decode(body)
        except msgspec.DecodeError:
            pass
    return json_loads_exact_fast(body)


def _decode_batch(body: bytes) -> "EventsBody":
    return EventsBody(body, _decode_typed_batch(body).events, True)


def _decode_event(body: bytes) -> "EventsBody":
    return EventsBody(body, [_decode_typed_event(body)], False)


def _validate_typed(events: list[_TypedEvent], now: datetime, tenant: Tenant) -> list[ValidEvent] | None:
    """The tenant's valid events when every event passes the checks of usage_events_validate
    (they are the same checks, on values whose types msgspec has checked), or None as soon as
    one does not or might not: then the general path checks the batch again and says why."""
    if not 1 <= len(events) <= MAX_BATCH:
        return None
    meters = meter_cache.lookup({event.meter for event in events})
    own_id, names = tenant.pk, (tenant.slug, tenant.external_id)
    # _timestamp's window inside parse_datetime's range: one comparison per event.
    earliest, latest = max(now - BACKFILL_WINDOW, MIN_DATETIME), min(now + FUTURE_SKEW, MAX_DATETIME)
    unset, small, fromisoformat = msgspec.UNSET, _SMALL_DECIMALS, datetime.fromisoformat
    valid: list[ValidEvent] = []
    index_by_id: dict[str, int] = {}
    for index, raw in enumerate(events):
        ref = raw.tenant
        if ref is not unset and ref is not None and (not ref or ref not in names):
            return None
        event_id = raw.id
        # msgspec refuses unpaired surrogates: a NUL is the only text problem left.
        if not event_id or len(event_id) > MAX_EVENT_ID_LENGTH or event_id.isspace() or "\x00" in event_id:
            return None
        meter = meters.get(raw.meter)
        if meter is None:
            return None
        value = raw.quantity
        if value is unset:
            if meter.value_path:
                return None
            quantity = _ONE
        elif 0 <= value < len(small):
            quantity = small[value]
        elif 0 <= value <= _MAX_PLAIN_INT:
            quantity = Decimal(value)
        else:
            return None
        text = raw.timestamp
        if text is None:
            moment = now
        else:
            # _plain_utc_moment inline (a call per event is measurable here).
            if len(text) > 32 or text[-1:] != "Z" or not text.isascii() or not text.isprintable():
                return None
            try:
                moment = fromisoformat(text)
            except ValueError:
                return None
            if moment.tzinfo is not UTC or not earliest <= moment <= latest:
                return None
        if raw.properties is None:
            properties_json = "{}"
        else:
            encoded = _encode_flat(raw.properties)
            if len(encoded) > MAX_PROPERTIES_BYTES or b"\\u0000" in encoded:
                return None
            properties_json = encoded.decode()
        event = ValidEvent(event_id, meter.id, moment, quantity, properties_json, own_id)
        # Every event so far is valid, so valid[i] is event i.
        first = index_by_id.setdefault(event_id, index)
        if first != index and not _same(valid[first], event):
            return None
        valid.append(event)
    if _hour_total_problems(valid):
        return None
    return valid


def usage_events_validate(
    *, payload, now: datetime, tenant: Tenant | None = None, tenant_required: bool = False
) -> list[ValidEvent]:
    """Check every event of the request; raise EventsInvalid listing every problem.

    `tenant`: the calling tenant (a tenant key): an event may name it in `tenant` (external id or
    slug); an event naming another raises EventsForbidden. Without it, an event's `tenant` names the
    tenant it belongs to (a platform key; all refs resolved in one query), required when
    `tenant_required`; an unknown or suspended tenant is a problem of that event's `tenant`.
    When every event's tenant is known, also check that no hour of a sum meter would pass what
    Stripe can bill.

    `payload`: the decoded JSON, or an EventsBody (events_body_decode), checked in C and one short
    loop when it holds a tenant's usual events, else read again and checked here.
    """
    if isinstance(payload, EventsBody):
        if tenant is not None and (valid := _validate_typed(payload.events, now, tenant)) is not None:
            return valid
        payload = payload.payload()
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
    named: dict[str, Tenant] = {}
    if tenant is None:
        refs = {e["tenant"] for e in raw_events if isinstance(e, dict) and isinstance(e.get("tenant"), str)}
        if refs:
            named = tenants_by_api_refs(refs=refs)
    errors: dict = {}
    foreign: list = []
    valid: list[ValidEvent] = []
    # The first event of each (tenant, id): a later one with the same id must say the same (then it
    # counts as a duplicate, as a resend would); one that differs makes the batch ambiguous.
    first_by_id: dict = {}
    for index, raw in enumerate(raw_events):
        problems: dict[str, list[str]] = {}
        if not isinstance(raw, dict):
            errors[index if indexed else None] = {"non_field_errors": ["must be an object"]}
            continue
        if not EVENT_FIELDS.issuperset(raw):
            for name in raw.keys() - EVENT_FIELDS:
                problems[printable(name)] = ["unknown field"]

        ref = raw.get("tenant", _MISSING)
        if ref is _MISSING and tenant is not None:
            tenant_id = tenant.pk  # a tenant key's event as before platform keys: no per-event cost
        else:
            tenant_id, problem, other = _tenant_problem(
                ref, tenant=tenant, named=named, required=tenant_required
            )
            if other:
                foreign.append(index if indexed else None)
            elif problem is not None:
                problems["tenant"] = [problem]

        event_id = raw.get("id")
        if not isinstance(event_id, str) or not event_id.strip():
            problems["id"] = ["is required: a non-empty string, unique per event"]
        elif len(event_id) > MAX_EVENT_ID_LENGTH:
            problems["id"] = [f"must be at most {MAX_EVENT_ID_LENGTH} characters"]
        elif (problem := text_problem(event_id)) is not None:
            problems["id"] = [problem]

        code = raw.get("meter")
        meter = meters.get(code) if isinstance(code, str) else None
        if meter is not None:
            pass  # a stored meter's code: a non-empty text PostgreSQL took, so without NUL or surrogates
        elif not isinstance(code, str) or not code:
            problems["meter"] = ["is required: the code of a meter"]
        elif (problem := text_problem(code)) is not None:
            problems["meter"] = [problem]
        elif meter is None:
            problems["meter"] = [f"unknown meter {code[:100]!r}"]

        raw_quantity = raw.get("quantity", _MISSING)
        if raw_quantity is _MISSING and meter is not None and meter.value_path:
            quantity = _value_quantity(raw.get("properties"), meter, code)
            if isinstance(quantity, str):
                problems[meter.value_field] = [quantity]
        else:
            quantity = _quantity(raw_quantity)
            if isinstance(quantity, str):
                problems["quantity"] = [quantity]

        timestamp = _timestamp(raw.get("timestamp"), now)
        if isinstance(timestamp, str):
            problems["timestamp"] = [timestamp]

        properties_json, problem = _properties(raw.get("properties"))
        if problem is not None:
            problems["properties"] = [problem]

        if not problems:
            event = ValidEvent(event_id, meter.id, timestamp, quantity, properties_json, tenant_id)
            # Keyed by the id alone when every event is the calling tenant's (no tuple per event).
            first = first_by_id.setdefault(
                event_id if tenant is not None else (tenant_id, event_id), (index, event)
            )
            if first[0] != index and not _same(first[1], event):
                problems["id"] = [
                    f"events {first[0]} and {index} have the same id with different content; "
                    "an id names one event"
                ]
        if problems:
            errors[index if indexed else None] = problems
        elif not errors:
            valid.append(event)
    if foreign:
        # Before any 400: a tenant key learns nothing about another tenant's events.
        raise EventsForbidden(foreign)
    if errors:
        raise EventsInvalid(errors)
    known = tenant is not None or all(event.tenant_id is not None for event in valid)
    if known and (errors := _hour_total_problems(valid)):
        raise EventsInvalid({(index if indexed else None): problems for index, problems in errors.items()})
    return valid


def _hour_total_problems(events: list[ValidEvent]) -> dict[int, dict[str, list[str]]]:
    """Events that would bring an hour of a sum meter past MAX_HOUR_TOTAL (per tenant), by index."""
    # Quantities are not negative: no (tenant, meter, hour) adds more than the whole batch.
    if sum(event.quantity for event in events) < HOUR_CHECK_THRESHOLD:
        return {}
    added: dict[tuple[int, int, datetime], Decimal] = {}
    for event in events:
        key = (event.tenant_id, event.meter_id, hour_start(event.timestamp))
        added[key] = added.get(key, Decimal(0)) + event.quantity
    large = {key: total for key, total in added.items() if total >= HOUR_CHECK_THRESHOLD}
    if not large:
        return {}
    sum_meters = dict(
        Meter.objects.filter(pk__in={m for _, m, _ in large}, aggregation=Meter.Aggregation.SUM).values_list(
            "pk", "code"
        )
    )
    over = set()
    for (tenant_id, meter_id, hour), total in large.items():
        if meter_id not in sum_meters:
            continue
        stored = UsageEvent.objects.filter(
            tenant_id=tenant_id,
            meter_id=meter_id,
            timestamp__gte=hour,
            timestamp__lt=hour + timedelta(hours=1),
        ).aggregate(total=Sum("quantity"))["total"] or Decimal(0)
        if stored + total > MAX_HOUR_TOTAL:
            over.add((tenant_id, meter_id, hour))
    return {
        index: {
            "quantity": [
                f"would bring the total of meter {sum_meters[event.meter_id]!r} for the hour "
                f"{hour_start(event.timestamp):%Y-%m-%dT%H:00Z} past {MAX_HOUR_TOTAL}, "
                "more than Stripe can bill"
            ]
        }
        for index, event in enumerate(events)
        if (event.tenant_id, event.meter_id, hour_start(event.timestamp)) in over
    }


def _tenant_ids(tenant: Tenant | None, events: list[ValidEvent]) -> list[int]:
    """Each event's tenant: the one it named, else `tenant`."""
    if tenant is None and any(e.tenant_id is None for e in events):
        raise ValueError("an event names no tenant and no tenant was given")
    return [tenant.pk if e.tenant_id is None else e.tenant_id for e in events]


def usage_events_stored_indexes(*, events: list[ValidEvent], tenant: Tenant | None = None) -> list[int]:
    """The indexes of the events whose (tenant, id) is already stored (one query)."""
    if not events:
        return []
    tenant_ids = _tenant_ids(tenant, events)
    stored = event_store().stored_keys(tenant_ids, events)
    return [i for i, (t, e) in enumerate(zip(tenant_ids, events, strict=True)) if (t, e.event_id) in stored]


class _SomeStored(Exception):
    """Raised inside the transaction of an all-new recording to roll it back."""


def _refusing_pairs(tenant: Tenant | None, tenant_ids: list[int], events: list[ValidEvent]) -> dict:
    """{(tenant id, meter id): hard limit} of the batch's pairs whose plan refuses events beyond a
    limit. Nothing but a look at the cache when no plan refuses on the batch's meters."""
    refusing = meter_cache.refusing_limits()
    if not refusing:
        return {}
    meter_ids = {event.meter_id for event in events}.intersection(refusing)
    if not meter_ids:
        return {}
    # The calling tenant's plan as authentication loaded it (seconds old at most); others' read here.
    plans = {tenant.pk: tenant.plan} if tenant is not None else {}
    others = set(tenant_ids) - plans.keys()
    if others:
        plans.update(Tenant.objects.filter(pk__in=others).values_list("pk", "plan"))
    pairs = {}
    for tenant_id, event in zip(tenant_ids, events, strict=True):
        if event.meter_id in meter_ids:
            limit = refusing[event.meter_id].get(plans.get(tenant_id))
            if limit is not None:
                pairs[(tenant_id, event.meter_id)] = limit
    return pairs


def _lock_key(tenant_id: int, meter_id: int) -> int:
    """A signed 64-bit advisory lock key for (tenant, meter), namespaced so no other lock shares it."""
    digest = hashlib.blake2b(f"usage-limit:{tenant_id}:{meter_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _record_within_limits(
    tenant_ids: list[int], events: list[ValidEvent], now: datetime, limits: dict, *, all_new: bool
) -> int:
    """Store the batch unless it takes a refusing pair past its limit (UsageLimitExceeded, nothing
    stored). Exact under concurrency: batches of one (tenant, meter) take a transaction-level
    advisory lock (PostgreSQL; SQLite runs write transactions one at a time), then read the period's
    usage, insert, and add only the events actually inserted, so a resent batch (duplicates) is
    never refused. Count and sum meters only: usage after = usage before + the new events' value."""
    meters = Meter.objects.prefetch_related("filters").in_bulk({meter_id for _, meter_id in limits})
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # One order for every transaction, so two batches never wait on each other crosswise.
                for key in sorted(_lock_key(*pair) for pair in limits):
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
        periods = {
            (tenant_id, event.meter_id, month_bounds(event.timestamp)[0])
            for tenant_id, event in zip(tenant_ids, events, strict=True)
            if (tenant_id, event.meter_id) in limits
        }
        before = usage_totals(keys=periods, meters=meters)
        inserted = event_store().record(tenant_ids, events, now, returning=True)
        if all_new and len(inserted) < len(events):
            raise _SomeStored
        new_rows: dict[int, list] = defaultdict(list)
        for row in inserted:
            if (row[1], row[2]) in limits:
                new_rows[row[2]].append(row)
        added: dict[tuple, Decimal] = defaultdict(Decimal)
        with localcontext(prec=100):
            for meter_id, rows in new_rows.items():
                values = event_store().rows_values(meters[meter_id], rows)
                for (tenant_id, hour), (value, _) in values.items():
                    added[(tenant_id, meter_id, month_bounds(hour)[0])] += value
            for key in sorted(added):
                tenant_id, meter_id, start = key
                limit, usage = limits[(tenant_id, meter_id)], before.get(key, Decimal(0))
                if added[key] > 0 and usage + added[key] > limit:
                    raise UsageLimitExceeded(
                        meter=meters[meter_id].code,
                        limit=limit,
                        usage=usage,
                        requested=added[key],
                        period_end=month_bounds(start)[1],
                    )
    return len(inserted)


def usage_events_record(
    *, events: list[ValidEvent], now: datetime, tenant: Tenant | None = None, all_new: bool = False
) -> IngestResult:
    """Store the events not seen before for their tenant (the one each named, else `tenant`), in
    one statement: a mixed-tenant batch is all-or-nothing too. Committed when this returns.

    `all_new`: store them only if none was stored before, else store nothing and raise
    EventsAlreadyStored naming them (Lago's answer to a repeated transaction id). Repeats inside
    `events` are the caller's to refuse first.

    A batch that would take a tenant's usage of a meter past a hard limit its plan refuses beyond
    (metering.allowances) stores nothing and raises UsageLimitExceeded."""
    tenant_ids = _tenant_ids(tenant, events)
    limits = _refusing_pairs(tenant, tenant_ids, events)
    for attempt in range(3):
        try:
            if limits:
                accepted = _record_within_limits(tenant_ids, events, now, limits, all_new=all_new)
            elif all_new:
                # The insert runs as usual and is rolled back when it skipped any event: no extra
                # query when all are new (the usual case), and no race with a concurrent insert.
                with transaction.atomic():
                    accepted = event_store().record(tenant_ids, events, now)
                    if accepted < len(events):
                        raise _SomeStored
            else:
                accepted = event_store().record(tenant_ids, events, now)
            break
        except _SomeStored:
            raise EventsAlreadyStored(usage_events_stored_indexes(events=events, tenant=tenant)) from None
        except OperationalError as exc:
            # Two batches that share event ids and hours can still deadlock in rare orders;
            # PostgreSQL aborts one of them, which is safe to run again.
            if attempt == 2 or "deadlock" not in str(exc).lower():
                raise
        except IntegrityError as exc:
            # A partition this process believed in is gone (dropped by retention or a test's
            # rollback): forget what it knew; the next attempt creates what is missing.
            if attempt == 2 or "no partition of relation" not in str(exc):
                raise
            event_store().forget_partitions()
    return IngestResult(accepted=accepted, duplicates=len(events) - accepted)
