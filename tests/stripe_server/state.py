"""The server's memory: stored objects, events, meter events, idempotency results, and the helpers
every resource handler shares (ids, rendering with `expand`, list pagination, metadata rules)."""

from __future__ import annotations

import base64
import copy
import json
import secrets
import string
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from .errors import StripeError, invalid, invalid_integer, no_such_param

API_VERSION = "2026-08-26.dahlia"  # stripe-python 15.6's pinned version; echoed when none is sent
_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    return f"{prefix}_{''.join(secrets.choice(_ALPHABET) for _ in range(length))}"


def iso(ts: float) -> str:
    """v2 timestamps: RFC 3339 with milliseconds and Z."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


def parse_iso(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def as_int(params: dict, name: str, default=None, *, minimum=None, maximum=None):
    if name not in params or params[name] in (None, ""):
        return default
    value = params[name]
    if isinstance(value, bool):
        raise invalid_integer(name, value)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise invalid_integer(name, value) from None
    if minimum is not None and number < minimum:
        raise invalid(
            name, f"This value must be greater than or equal to {minimum}.", "parameter_invalid_integer"
        )
    if maximum is not None and number > maximum:
        raise invalid(
            name, f"This value must be less than or equal to {maximum}.", "parameter_invalid_integer"
        )
    return number


def as_bool(params: dict, name: str, default=None):
    if name not in params:
        return default
    value = params[name]
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise invalid(name, f"Invalid boolean: {value}")


def as_decimal(value, name: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise invalid(name, f"Invalid decimal: {value}") from None
    if not number.is_finite():
        raise invalid(name, f"Invalid decimal: {value}")
    return number


def json_number(value: Decimal):
    """A Decimal as a JSON number: an int when whole, else a float."""
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def apply_metadata(existing: dict | None, incoming, param: str = "metadata") -> dict:
    """Stripe's metadata update rules: merge; "" as a value drops that key; "" as the whole param
    clears everything. At most 50 keys, keys up to 40 characters, values up to 500."""
    result = dict(existing or {})
    if incoming is None:
        return result
    if incoming == "" or incoming == []:
        return {}
    if not isinstance(incoming, dict):
        raise invalid(param, f"Invalid object: {param} must be an object.")
    for key, value in incoming.items():
        if "[" in key or "]" in key:
            raise invalid(f"{param}[{key}]", "Metadata keys may not contain square brackets.")
        if len(key) > 40:
            raise invalid(f"{param}[{key}]", "Metadata keys can be at most 40 characters long.")
        if not isinstance(value, str):
            value = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        if value == "":
            result.pop(key, None)
            continue
        if len(value) > 500:
            raise invalid(f"{param}[{key}]", "Metadata values can be at most 500 characters long.")
        result[key] = value
    if len(result) > 50:
        raise invalid(param, "Metadata can have at most 50 keys.")
    return result


@dataclass
class MeterEventRecord:
    """One meter event Stripe accepted (v1, v2 or the v2 stream)."""

    identifier: str
    event_name: str
    meter: str
    customer: str
    value: Decimal
    timestamp: int
    created: float
    source: str
    payload: dict
    canceled: bool = False
    canceled_at: float | None = None


@dataclass
class IdempotencyEntry:
    method: str
    path: str
    params: object
    created: float
    status: int | None = None
    body: bytes | None = None
    headers: dict = field(default_factory=dict)
    request_id: str = ""
    in_flight: bool = True


# Fields Stripe only returns when asked for with `expand` ("includable" fields).
INCLUDABLE: dict[str, dict[str, Callable]] = defaultdict(dict)
# Per-type adjustments applied to every rendered copy (e.g. an invoice embeds at most 10 lines).
RENDER_HOOKS: dict[str, Callable[[State, dict], None]] = {}


class State:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.time_offset = 0.0
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.objects: dict[str, dict] = {}
            self.seq: dict[str, int] = {}
            self.types: dict[str, list[str]] = defaultdict(list)
            self.counter = 0
            self.meter_events: list[MeterEventRecord] = []
            self.identifiers: dict[str, MeterEventRecord] = {}
            self.sessions: dict[str, dict] = {}
            self.idempotency: dict[str, IdempotencyEntry] = {}
            self.search_versions: dict[str, list[tuple[float, dict]]] = {}
            self.v2_events: dict[str, dict] = {}
            self.meter_errors: list[dict] = []
            self.adjustments: list[dict] = []
            self.invoice_sequences: dict[str, int] = {}
            self.meta: dict[str, dict] = defaultdict(dict)  # server-side facts not in an object's JSON
            self.event_listeners: list[Callable[[dict], None]] = getattr(self, "event_listeners", [])
            self.search_delay = 0.0

    # clock ---------------------------------------------------------------------------------------
    def now(self) -> float:
        return time.time() + self.time_offset

    def now_int(self) -> int:
        return int(self.now())

    # storage -------------------------------------------------------------------------------------
    def put(self, obj: dict) -> dict:
        oid = obj["id"]
        if oid not in self.objects:
            self.counter += 1
            self.seq[oid] = self.counter
            self.types[obj["object"]].append(oid)
        self.objects[oid] = obj
        self._index(obj)
        return obj

    def _index(self, obj: dict) -> None:
        versions = self.search_versions.setdefault(obj["id"], [])
        versions.append((self.now() + self.search_delay, copy.deepcopy(obj)))
        # Keep the newest visible version and everything not yet visible.
        now = self.now()
        visible = [i for i, (at, _) in enumerate(versions) if at <= now]
        if len(visible) > 1:
            del versions[: visible[-1]]

    def searchable(self, oid: str) -> dict | None:
        now = self.now()
        found = None
        for at, snapshot in self.search_versions.get(oid, []):
            if at <= now:
                found = snapshot
        return found

    def get(self, oid, kind: str | None = None) -> dict | None:
        if not isinstance(oid, str):
            return None
        obj = self.objects.get(oid)
        if obj is None or (kind is not None and obj.get("object") != kind):
            return None
        return obj

    def require(self, oid, kind: str, param: str, label: str | None = None) -> dict:
        obj = self.get(oid, kind)
        if obj is None or obj.get("deleted"):
            raise no_such_param(label or kind, str(oid), param)
        return obj

    def all(self, kind: str) -> list[dict]:
        return [self.objects[i] for i in self.types.get(kind, [])]

    # rendering -----------------------------------------------------------------------------------
    def render(self, obj: dict | str, expand: Iterable[str] = ()) -> dict:
        if isinstance(obj, str):
            obj = self.objects[obj]
        out = copy.deepcopy(obj)
        hook = RENDER_HOOKS.get(out.get("object", ""))
        if hook is not None:
            hook(self, out)
        paths = [p.split(".") for p in expand or ()]
        includable = INCLUDABLE.get(out.get("object", ""), {})
        heads = {p[0] for p in paths}
        for name in list(out):
            if name in includable and name not in heads:
                out.pop(name)
        for name, fn in includable.items():
            if name in heads and not out.get("deleted"):
                out[name] = fn(self, obj)
        for parts in paths:
            out = self._expand(out, parts)
        return out

    def _expand(self, value, parts: list[str]):
        if not parts or not isinstance(value, dict):
            return value
        head, rest = parts[0], parts[1:]
        if value.get("object") in ("list", "search_result") and head == "data":
            value["data"] = [self._expand(item, rest) for item in value.get("data", [])]
            return value
        includable = INCLUDABLE.get(value.get("object", ""), {})
        if head in includable and head not in value and "id" in value and value["id"] in self.objects:
            value[head] = includable[head](self, self.objects[value["id"]])
        if head not in value:
            return value
        child = value[head]
        if isinstance(child, str) and child in self.objects:
            child = self.render(child, [".".join(rest)] if rest else [])
            value[head] = child
            return value
        if isinstance(child, list):
            expanded = []
            for item in child:
                if isinstance(item, str) and item in self.objects:
                    item = self.render(item, [".".join(rest)] if rest else [])
                elif rest:
                    item = self._expand(item, rest)
                expanded.append(item)
            value[head] = expanded
            return value
        if rest:
            value[head] = self._expand(child, rest)
        return value

    # lists ---------------------------------------------------------------------------------------
    def newest_first(self, objs: Iterable[dict]) -> list[dict]:
        return sorted(objs, key=lambda o: (o.get("created", 0), self.seq.get(o["id"], 0)), reverse=True)

    def list_page(
        self, objs: Iterable[dict], params: dict, url: str, *, ordered: bool = False, label: str = "object"
    ) -> dict:
        items = list(objs) if ordered else self.newest_first(objs)
        items = filter_created(items, params.get("created"))
        limit = as_int(params, "limit", 10, minimum=1, maximum=100)
        after, before = params.get("starting_after"), params.get("ending_before")
        ids = [o["id"] for o in items]
        if after:
            if after not in ids:
                raise no_such_param(label, after, "starting_after")
            page = items[ids.index(after) + 1 :]
            has_more = len(page) > limit
            page = page[:limit]
        elif before:
            if before not in ids:
                raise no_such_param(label, before, "ending_before")
            page = items[: ids.index(before)]
            has_more = len(page) > limit
            page = page[-limit:]
        else:
            has_more = len(items) > limit
            page = items[:limit]
        expand = [p[len("data.") :] for p in params.get("expand") or [] if p.startswith("data.")]
        return {
            "object": "list",
            "data": [self.render(o, expand) for o in page],
            "has_more": has_more,
            "url": url,
        }

    def search_page(self, objs: list[dict], params: dict, url: str) -> dict:
        limit = as_int(params, "limit", 10, minimum=1, maximum=100)
        offset = 0
        page_token = params.get("page")
        if page_token:
            try:
                offset = int(base64.urlsafe_b64decode(page_token.encode()).decode().split(":")[1])
            except (ValueError, IndexError):
                raise invalid("page", f"Invalid page: {page_token}") from None
        ordered = self.newest_first(objs)
        page = ordered[offset : offset + limit]
        has_more = len(ordered) > offset + limit
        expand = [p[len("data.") :] for p in params.get("expand") or [] if p.startswith("data.")]
        out = {
            "object": "search_result",
            "data": [self.render(self.objects[o["id"]], expand) for o in page],
            "has_more": has_more,
            "next_page": (
                base64.urlsafe_b64encode(f"page:{offset + limit}".encode()).decode() if has_more else None
            ),
            "url": url,
        }
        if "total_count" in (params.get("expand") or []):
            out["total_count"] = len(ordered)
        return out

    # events --------------------------------------------------------------------------------------
    def emit(
        self, event_type: str, obj: dict, previous: dict | None = None, request: dict | None = None
    ) -> dict:
        event = new_event(event_type, self.render(obj), previous, created=self.now_int(), request=request)
        self.put(event)
        for listener in list(self.event_listeners):
            listener(event)
        return event

    def emit_v2(self, event_type: str, data: dict, related: dict | None) -> dict:
        event = {
            "id": new_id("evt_test", 40),
            "object": "v2.core.event",
            "type": event_type,
            "created": iso(self.now()),
            "livemode": False,
            "context": None,
            "reason": None,
            "related_object": related,
            "data": data,
        }
        self.v2_events[event["id"]] = event
        for listener in list(self.event_listeners):
            listener(event)
        return event


def new_event(
    event_type: str,
    data_object: dict,
    previous: dict | None,
    *,
    created: int,
    pending_webhooks: int = 0,
    request: dict | None = None,
) -> dict:
    """A v1 Event: `data.object` as given, with `previous_attributes` when there are any."""
    data: dict = {"object": data_object}
    if previous:
        data["previous_attributes"] = previous
    return {
        "id": new_id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": data,
        "livemode": False,
        "pending_webhooks": pending_webhooks,
        "request": request or {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def filter_created(items: list[dict], created) -> list[dict]:
    if created in (None, ""):
        return items
    if isinstance(created, dict):
        bounds = {}
        for op in ("gt", "gte", "lt", "lte"):
            if op in created:
                bounds[op] = as_int(created, op)
                if bounds[op] is None:
                    raise invalid_integer(f"created[{op}]", created[op])
        checks = {
            "gt": lambda v, b: v > b,
            "gte": lambda v, b: v >= b,
            "lt": lambda v, b: v < b,
            "lte": lambda v, b: v <= b,
        }
        return [o for o in items if all(checks[op](o.get("created", 0), b) for op, b in bounds.items())]
    value = as_int({"created": created}, "created")
    return [o for o in items if o.get("created") == value]


def diff(before: dict, after: dict) -> dict:
    """`previous_attributes` for an update event: old values of the top-level fields that changed."""
    changed = {}
    for key in set(before) | set(after):
        if before.get(key) != after.get(key):
            changed[key] = copy.deepcopy(before.get(key))
    return changed


def require_str(params: dict, name: str) -> str:
    value = params.get(name)
    if value in (None, ""):
        from .errors import missing

        raise missing(name)
    if not isinstance(value, str):
        raise invalid(name, f"Invalid string: {name} must be a string.")
    return value


def raise_if(condition: bool, error: StripeError) -> None:
    if condition:
        raise error
