"""Billing meters, meter events (v1, v2 and the v2 stream), adjustments and event summaries.

Rules, from Stripe's API reference and "Record usage for billing with the API":
- An event names its meter by `event_name`; the customer is read from the payload key in the meter's
  `customer_mapping.event_payload_key` (default `stripe_customer_id`), the value from
  `value_settings.event_payload_key` (default `value`). Payload values are strings.
- `timestamp` must be within the past 35 calendar days and at most 5 minutes in the future.
- `identifier` is unique within a rolling 24 hours; a repeat is refused ("An event already exists
  with identifier ...") on the synchronous endpoints and dropped on the stream.
- Adjustments cancel one event by identifier, within 24 hours of Stripe receiving it.
- The v2 stream takes up to 100 events, authenticates with a meter event session token (valid
  15 minutes) and validates asynchronously: bad events are reported through
  `v1.billing.meter.error_report_triggered` / `v1.billing.meter.no_meter_found` v2 events.
"""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal

from .errors import StripeError, invalid, invalid_choice, missing
from .res_core import get_or_404, retrieve_route
from .routing import Ctx, route
from .state import MeterEventRecord, as_int, iso, json_number, new_id, parse_iso, require_str

FORMULAS = ("count", "last", "sum")
PAST_WINDOW = 35 * 86400
FUTURE_WINDOW = 5 * 60
IDENTIFIER_WINDOW = 24 * 3600
_WHOLE = re.compile(r"^-?\d+$")
_DECIMAL = re.compile(r"^-?(\d+(\.\d+)?|\.\d+)$")

# meters --------------------------------------------------------------------------------------------


def get_meter(ctx: Ctx, oid: str) -> dict:
    return get_or_404(ctx, oid, "billing.meter", "billing.meter")


def active_meter(state, event_name: str) -> dict | None:
    for meter in state.all("billing.meter"):
        if meter["event_name"] == event_name and meter["status"] == "active":
            return meter
    return None


@route("POST", "/v1/billing/meters", "billing._meter_create_params")
def meters_create(ctx: Ctx):
    p = ctx.params
    display_name = require_str(p, "display_name")
    event_name = require_str(p, "event_name")
    if len(event_name) > 100:
        raise invalid("event_name", "Invalid event_name: must be at most 100 characters long.")
    agg = p.get("default_aggregation")
    if not isinstance(agg, dict) or not agg.get("formula"):
        raise missing("default_aggregation[formula]")
    if agg["formula"] not in FORMULAS:
        raise invalid_choice("default_aggregation[formula]", agg["formula"], FORMULAS)
    mapping = {"event_payload_key": "stripe_customer_id", "type": "by_id"}
    if isinstance(p.get("customer_mapping"), dict):
        cm = p["customer_mapping"]
        if not cm.get("event_payload_key"):
            raise missing("customer_mapping[event_payload_key]")
        if cm.get("type") != "by_id":
            if not cm.get("type"):
                raise missing("customer_mapping[type]")
            raise invalid_choice("customer_mapping[type]", cm["type"], ["by_id"])
        mapping = {"event_payload_key": cm["event_payload_key"], "type": "by_id"}
    value_key = "value"
    if isinstance(p.get("value_settings"), dict):
        if not p["value_settings"].get("event_payload_key"):
            raise missing("value_settings[event_payload_key]")
        value_key = p["value_settings"]["event_payload_key"]
    window = p.get("event_time_window") or None
    if window is not None and window not in ("day", "hour"):
        raise invalid_choice("event_time_window", window, ["day", "hour"])
    if active_meter(ctx.state, event_name) is not None:
        raise invalid(
            "event_name",
            f"An active meter with event_name `{event_name}` already exists. An event "
            "name can only be used with a single meter.",
        )
    now = ctx.now()
    meter = {
        "id": new_id("mtr_test", 32),
        "object": "billing.meter",
        "created": now,
        "customer_mapping": mapping,
        "default_aggregation": {"formula": agg["formula"]},
        "display_name": display_name,
        "event_name": event_name,
        "event_time_window": window,
        "livemode": False,
        "status": "active",
        "status_transitions": {"deactivated_at": None},
        "updated": now,
        "value_settings": {"event_payload_key": value_key},
    }
    ctx.state.put(meter)
    ctx.emit("billing.meter.created", meter)
    return ctx.render(meter)


meters_retrieve = retrieve_route(
    "/v1/billing/meters/{id}", "billing.meter", "billing.meter", "billing._meter_retrieve_params"
)


@route("POST", "/v1/billing/meters/{id}", "billing._meter_update_params")
def meters_update(ctx: Ctx):
    meter = get_meter(ctx, ctx.path_args["id"])
    if "display_name" in ctx.params:
        previous = {"display_name": meter["display_name"]}
        meter["display_name"] = require_str(ctx.params, "display_name")
        meter["updated"] = ctx.now()
        ctx.state.put(meter)
        ctx.emit("billing.meter.updated", meter, previous)
    return ctx.render(meter)


@route("POST", "/v1/billing/meters/{id}/deactivate", "billing._meter_deactivate_params")
def meters_deactivate(ctx: Ctx):
    meter = get_meter(ctx, ctx.path_args["id"])
    if meter["status"] != "active":
        raise invalid("id", "This meter is already inactive.")
    now = ctx.now()
    meter["status"] = "inactive"
    meter["status_transitions"]["deactivated_at"] = now
    meter["updated"] = now
    ctx.state.put(meter)
    ctx.emit("billing.meter.deactivated", meter, {"status": "active"})
    return ctx.render(meter)


@route("POST", "/v1/billing/meters/{id}/reactivate", "billing._meter_reactivate_params")
def meters_reactivate(ctx: Ctx):
    meter = get_meter(ctx, ctx.path_args["id"])
    if meter["status"] == "active":
        raise invalid("id", "This meter is already active.")
    if active_meter(ctx.state, meter["event_name"]) is not None:
        raise invalid("id", f"An active meter with event_name `{meter['event_name']}` already exists.")
    meter["status"] = "active"
    meter["status_transitions"]["deactivated_at"] = None
    meter["updated"] = ctx.now()
    ctx.state.put(meter)
    ctx.emit("billing.meter.reactivated", meter, {"status": "inactive"})
    return ctx.render(meter)


@route("GET", "/v1/billing/meters", "billing._meter_list_params")
def meters_list(ctx: Ctx):
    items = ctx.state.all("billing.meter")
    status = ctx.params.get("status")
    if status:
        if status not in ("active", "inactive"):
            raise invalid_choice("status", status, ["active", "inactive"])
        items = [m for m in items if m["status"] == status]
    return ctx.state.list_page(items, ctx.params, "/v1/billing/meters", label="billing.meter")


# meter event validation ----------------------------------------------------------------------------


class EventProblem(Exception):
    """A meter event Stripe refuses. `code` is Stripe's error-report code for it."""

    def __init__(self, code: str | None, message: str, param: str | None = None, meter: dict | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.meter = meter


def _check_value(server, raw, key: str) -> Decimal:
    text = raw.strip() if isinstance(raw, str) else raw
    mode = getattr(server, "meter_value_mode", "integer")
    if mode == "integer":
        if not isinstance(text, str) or not _WHOLE.match(text):
            raise EventProblem(
                "meter_event_invalid_value",
                f"The value in the event payload must be a whole number, given as a string. Received `{raw}` "
                f"for `{key}`.",
                f"payload[{key}]",
            )
        return Decimal(text)
    if not isinstance(text, str) or not _DECIMAL.match(text):
        raise EventProblem(
            "meter_event_invalid_value",
            f"The value in the event payload must be a number. Received `{raw}` for `{key}`.",
            f"payload[{key}]",
        )
    number = Decimal(text)
    digits = len(number.as_tuple().digits)
    if digits > 15:
        raise EventProblem(
            "meter_event_value_too_many_digits",
            f"The value in the event payload can have at most 15 digits. Received `{raw}`.",
            f"payload[{key}]",
        )
    return number


def check_event(
    ctx: Ctx, event_name, payload, timestamp: int, *, prefix: str = ""
) -> tuple[dict, str, Decimal]:
    """Validate one event against Stripe's rules; return (meter, customer id, value)."""
    now = ctx.state.now()
    server = ctx.server
    if now - timestamp > getattr(server, "past_window", PAST_WINDOW):
        raise EventProblem(
            "timestamp_too_far_in_past",
            f"The timestamp {timestamp} is too far in the past. Meter events must have a timestamp within "
            "the past 35 calendar days.",
            f"{prefix}timestamp",
        )
    if timestamp - now > getattr(server, "future_window", FUTURE_WINDOW):
        raise EventProblem(
            "timestamp_in_future",
            f"The timestamp {timestamp} is too far in the future. Meter events can have a timestamp at most "
            "5 minutes in the future.",
            f"{prefix}timestamp",
        )
    meter = active_meter(ctx.state, event_name)
    if meter is None:
        if any(m["event_name"] == event_name for m in ctx.state.all("billing.meter")):
            raise EventProblem(
                "archived_meter",
                f"The meter for event_name `{event_name}` is inactive and does not accept events.",
                f"{prefix}event_name",
            )
        raise EventProblem(
            "no_meter", f"No active meter was found matching event_name {event_name}.", f"{prefix}event_name"
        )
    customer_key = meter["customer_mapping"]["event_payload_key"]
    customer_id = payload.get(customer_key)
    if customer_id in (None, ""):
        raise EventProblem(
            "meter_event_no_customer_defined",
            f"Customer mapping key {customer_key} not found in payload.",
            f"{prefix}payload[{customer_key}]",
            meter,
        )
    customer = ctx.state.get(customer_id, "customer")
    if customer is None or customer.get("deleted"):
        raise EventProblem(
            "meter_event_customer_not_found",
            f"No customer found with ID {customer_id}.",
            f"{prefix}payload[{customer_key}]",
            meter,
        )
    value_key = meter["value_settings"]["event_payload_key"]
    if value_key not in payload:
        if meter["default_aggregation"]["formula"] == "count":
            return meter, customer_id, Decimal(1)
        raise EventProblem(
            "meter_event_value_not_found",
            f"Value key {value_key} not found in payload.",
            f"{prefix}payload[{value_key}]",
            meter,
        )
    try:
        value = _check_value(server, payload[value_key], value_key)
    except EventProblem as problem:
        problem.meter = meter
        problem.param = f"{prefix}{problem.param}"
        raise
    return meter, customer_id, value


def duplicate(ctx: Ctx, identifier: str) -> bool:
    record = ctx.state.identifiers.get(identifier)
    window = getattr(ctx.server, "identifier_window", IDENTIFIER_WINDOW)
    return record is not None and ctx.state.now() - record.created < window


def store_event(
    ctx: Ctx,
    meter: dict,
    customer: str,
    value: Decimal,
    identifier: str,
    timestamp: int,
    payload: dict,
    source: str,
) -> MeterEventRecord:
    record = MeterEventRecord(
        identifier=identifier,
        event_name=meter["event_name"],
        meter=meter["id"],
        customer=customer,
        value=value,
        timestamp=timestamp,
        created=ctx.state.now(),
        source=source,
        payload=dict(payload),
    )
    ctx.state.meter_events.append(record)
    ctx.state.identifiers[identifier] = record
    return record


def report_errors(ctx: Ctx, problems: list[tuple[str, str | None, EventProblem]], source: str) -> None:
    """Stripe's asynchronous error reporting: one v2 event per meter (or per missing meter)."""
    if not problems:
        return
    now = ctx.state.now()
    groups: dict[str, list] = {}
    for identifier, event_name, problem in problems:
        ctx.state.meter_errors.append(
            {
                "identifier": identifier,
                "event_name": event_name,
                "code": problem.code,
                "message": problem.message,
                "meter": problem.meter["id"] if problem.meter else None,
                "source": source,
                "at": now,
            }
        )
        key = problem.meter["id"] if problem.meter else "__no_meter__"
        groups.setdefault(key, []).append((identifier, problem))
    for key, items in groups.items():
        by_code: dict[str, list] = {}
        for identifier, problem in items:
            by_code.setdefault(problem.code, []).append((identifier, problem))
        data = {
            "developer_message_summary": (
                f"There {'is' if len(items) == 1 else 'are'} {len(items)} invalid event"
                f"{'' if len(items) == 1 else 's'}"
            ),
            "reason": {
                "error_count": len(items),
                "error_types": [
                    {
                        "code": code,
                        "error_count": len(entries),
                        "sample_errors": [
                            {"error_message": p.message, "request": {"identifier": ident}}
                            for ident, p in entries[:5]
                        ],
                    }
                    for code, entries in by_code.items()
                ],
            },
            "validation_end": iso(now),
            "validation_start": iso(now - 10),
        }
        if key == "__no_meter__":
            ctx.state.emit_v2("v1.billing.meter.no_meter_found", data, None)
        else:
            ctx.state.emit_v2(
                "v1.billing.meter.error_report_triggered",
                data,
                {"id": key, "type": "billing.meter", "url": f"/v1/billing/meters/{key}"},
            )


def _identifier(params: dict, param: str) -> str:
    identifier = params.get("identifier")
    if identifier in (None, ""):
        return new_id("mev_ident", 24)
    if not isinstance(identifier, str):
        raise invalid(param, f"Invalid string: {param} must be a string.")
    if len(identifier) > 100:
        raise invalid(param, "Invalid identifier: must be at most 100 characters long.")
    return identifier


def _payload(params: dict, param: str = "payload") -> dict:
    payload = params.get("payload")
    if payload in (None, "", []):
        raise missing(param)
    if not isinstance(payload, dict):
        raise invalid(param, f"Invalid object: {param} must be an object.")
    for key, value in payload.items():
        if not isinstance(value, str):
            raise invalid(f"{param}[{key}]", f"Invalid string: {param}[{key}] must be a string.")
    return payload


# v1 meter events -----------------------------------------------------------------------------------


@route("POST", "/v1/billing/meter_events", "billing._meter_event_create_params")
def meter_events_create(ctx: Ctx):
    p = ctx.params
    event_name = require_str(p, "event_name")
    payload = _payload(p)
    identifier = _identifier(p, "identifier")
    timestamp = as_int(p, "timestamp", ctx.now())
    if duplicate(ctx, identifier):
        raise StripeError(400, f"An event already exists with identifier {identifier}.", param="identifier")
    try:
        meter, customer, value = check_event(ctx, event_name, payload, timestamp)
    except EventProblem as problem:
        if getattr(ctx.server, "v1_meter_event_validation", "sync") == "async":
            report_errors(ctx, [(identifier, event_name, problem)], "v1")
            return _v1_event_body(ctx, event_name, identifier, payload, timestamp)
        raise StripeError(400, problem.message, code=problem.code, param=problem.param) from None
    store_event(ctx, meter, customer, value, identifier, timestamp, payload, "v1")
    return _v1_event_body(ctx, event_name, identifier, payload, timestamp)


def _v1_event_body(ctx: Ctx, event_name: str, identifier: str, payload: dict, timestamp: int) -> dict:
    return {
        "object": "billing.meter_event",
        "created": ctx.now(),
        "event_name": event_name,
        "identifier": identifier,
        "livemode": False,
        "payload": dict(payload),
        "timestamp": timestamp,
    }


def _cancel(ctx: Ctx, event_name: str, identifier: str, param: str) -> MeterEventRecord:
    record = ctx.state.identifiers.get(identifier)
    if record is None or record.event_name != event_name:
        raise invalid(
            param, f"No meter event with identifier {identifier} was found for event_name {event_name}."
        )
    if ctx.state.now() - record.created > IDENTIFIER_WINDOW:
        raise invalid(param, "You can only cancel events within 24 hours of Stripe receiving them.")
    if not record.canceled:
        record.canceled = True
        record.canceled_at = ctx.state.now()
    return record


@route("POST", "/v1/billing/meter_event_adjustments", "billing._meter_event_adjustment_create_params")
def meter_event_adjustments_create(ctx: Ctx):
    p = ctx.params
    event_name = require_str(p, "event_name")
    kind = p.get("type") or "cancel"
    if kind != "cancel":
        raise invalid_choice("type", kind, ["cancel"])
    cancel = p.get("cancel") if isinstance(p.get("cancel"), dict) else {}
    identifier = cancel.get("identifier")
    if not identifier:
        raise missing("cancel[identifier]")
    _cancel(ctx, event_name, identifier, "cancel[identifier]")
    adjustment = {
        "object": "billing.meter_event_adjustment",
        "cancel": {"identifier": identifier},
        "event_name": event_name,
        "livemode": False,
        "status": "pending",
        "type": "cancel",
    }
    ctx.state.adjustments.append({**adjustment, "created": ctx.now()})
    return adjustment


# event summaries -----------------------------------------------------------------------------------


def aggregate(records: list[MeterEventRecord], formula: str, window: str | None = None) -> Decimal:
    live = [r for r in records if not r.canceled]
    if window:
        size = 3600 if window == "hour" else 86400
        latest: dict[tuple, MeterEventRecord] = {}
        for r in live:
            key = (r.customer, r.timestamp // size)
            if key not in latest or r.created >= latest[key].created:
                latest[key] = r
        live = list(latest.values())
    if formula == "count":
        return Decimal(len(live))
    if formula == "last":
        if not live:
            return Decimal(0)
        return max(live, key=lambda r: (r.timestamp, r.created)).value
    return sum((r.value for r in live), Decimal(0))


def events_for(state, customer: str | None, meter_id: str, start: int, end: int) -> list[MeterEventRecord]:
    return [
        r
        for r in state.meter_events
        if r.meter == meter_id and (customer is None or r.customer == customer) and start <= r.timestamp < end
    ]


def usage_for(state, customer: str, meter_id: str, start: int, end: int) -> Decimal:
    meter = state.objects[meter_id]
    return aggregate(
        events_for(state, customer, meter_id, start, end),
        meter["default_aggregation"]["formula"],
        meter.get("event_time_window"),
    )


@route("GET", "/v1/billing/meters/{id}/event_summaries", "billing._meter_list_event_summaries_params")
def meter_event_summaries(ctx: Ctx):
    meter = get_meter(ctx, ctx.path_args["id"])
    p = ctx.params
    customer = require_str(p, "customer")
    cus = ctx.state.get(customer, "customer")
    if cus is None:
        raise StripeError(400, f"No such customer: '{customer}'", code="resource_missing", param="customer")
    start = as_int(p, "start_time")
    end = as_int(p, "end_time")
    if start is None:
        raise missing("start_time")
    if end is None:
        raise missing("end_time")
    if start >= end:
        raise invalid("end_time", "end_time must be after start_time.")
    for name, ts in (("start_time", start), ("end_time", end)):
        if ts % 60:
            raise invalid(name, f"{name} must be aligned with minute boundaries.")
    window = p.get("value_grouping_window") or None
    if window not in (None, "hour", "day"):
        raise invalid_choice("value_grouping_window", window, ["day", "hour"])
    size = {"hour": 3600, "day": 86400}.get(window or "", 0)
    if size:
        for name, ts in (("start_time", start), ("end_time", end)):
            if ts % size:
                raise invalid(
                    name,
                    f"{name} must be aligned with {window} boundaries when value_grouping_window "
                    f"is {window}.",
                )
    formula = meter["default_aggregation"]["formula"]
    records = events_for(ctx.state, customer, meter["id"], start, end)
    windows: list[tuple[int, int]] = []
    if size:
        buckets = sorted({start + ((r.timestamp - start) // size) * size for r in records if not r.canceled})
        windows = [(b, b + size) for b in buckets]
    else:
        windows = [(start, end)]
    summaries = []
    for w_start, w_end in windows:
        in_window = [r for r in records if w_start <= r.timestamp < w_end]
        digest = hashlib.sha1(f"{meter['id']}:{customer}:{w_start}:{w_end}".encode(), usedforsecurity=False)
        summaries.append(
            {
                "id": f"mtrusg_test_{digest.hexdigest()[:24]}",
                "object": "billing.meter_event_summary",
                "aggregated_value": json_number(
                    aggregate(in_window, formula, meter.get("event_time_window"))
                ),
                "end_time": w_end,
                "livemode": False,
                "meter": meter["id"],
                "start_time": w_start,
            }
        )
    return ctx.state.list_page(
        summaries,
        p,
        f"/v1/billing/meters/{meter['id']}/event_summaries",
        ordered=True,
        label="billing.meter_event_summary",
    )


# v2: meter event sessions, the stream, synchronous v2 events and adjustments -----------------------

SESSION_TTL = 15 * 60


@route("POST", "/v2/billing/meter_event_session", "v2.billing._meter_event_session_create_params")
def meter_event_session_create(ctx: Ctx):
    now = ctx.state.now()
    ttl = getattr(ctx.server, "session_ttl", SESSION_TTL)
    session = {
        "id": new_id("mes_test", 32),
        "object": "v2.billing.meter_event_session",
        "authentication_token": new_id("mes_tok", 48),
        "created": iso(now),
        "expires_at": iso(now + ttl),
        "livemode": False,
    }
    ctx.state.sessions[session["authentication_token"]] = {**session, "_expires": now + ttl}
    return session


def _v2_timestamp(value, param: str) -> int:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise invalid(
            param,
            f"Invalid timestamp: {param} must be an RFC 3339 string, for example 2024-06-01T12:00:00.000Z.",
        )
    try:
        return int(parse_iso(value))
    except ValueError:
        raise invalid(param, f"Invalid timestamp: {value}") from None


@route("POST", "/v2/billing/meter_event_stream", "v2.billing._meter_event_stream_create_params")
def meter_event_stream_create(ctx: Ctx):
    events = ctx.params.get("events")
    if not isinstance(events, list) or not events:
        raise missing("events")
    limit = getattr(ctx.server, "stream_max_events", 100)
    if len(events) > limit:
        raise invalid(
            "events", f"The events array can contain at most {limit} events; received {len(events)}."
        )
    parsed = []
    for i, event in enumerate(events):
        name = f"events[{i}]"
        if not isinstance(event, dict):
            raise invalid(name, f"Invalid object: {name} must be an object.")
        event_name = event.get("event_name")
        if not event_name:
            raise missing(f"{name}.event_name")
        payload = _payload(event, f"{name}.payload")
        identifier = _identifier(event, f"{name}.identifier")
        ts = _v2_timestamp(event.get("timestamp"), f"{name}.timestamp")
        parsed.append((event_name, payload, identifier, ts if ts is not None else ctx.now()))
    sync = getattr(ctx.server, "stream_validation", "async") == "sync"
    accepted, problems = [], []
    batch_ids = set()
    for i, (event_name, payload, identifier, ts) in enumerate(parsed):
        if duplicate(ctx, identifier) or identifier in batch_ids:
            continue  # the stream de-duplicates silently
        try:
            meter, customer, value = check_event(ctx, event_name, payload, ts, prefix=f"events[{i}].")
        except EventProblem as problem:
            problems.append((identifier, event_name, problem))
            continue
        batch_ids.add(identifier)
        accepted.append((meter, customer, value, identifier, ts, payload))
    if sync and problems:
        first = problems[0][2]
        details = "; ".join(f"{p.param}: {p.message}" for _, _, p in problems)
        raise StripeError(
            400,
            f"{len(problems)} of {len(parsed)} events are invalid: {details}",
            code=first.code,
            param=first.param,
        )
    for meter, customer, value, identifier, ts, payload in accepted:
        store_event(ctx, meter, customer, value, identifier, ts, payload, "stream")
    report_errors(ctx, problems, "stream")
    return 202, {}


@route("POST", "/v2/billing/meter_events", "v2.billing._meter_event_create_params")
def v2_meter_events_create(ctx: Ctx):
    p = ctx.params
    event_name = require_str(p, "event_name")
    payload = _payload(p)
    identifier = _identifier(p, "identifier")
    ts = _v2_timestamp(p.get("timestamp"), "timestamp")
    ts = ts if ts is not None else ctx.now()
    if duplicate(ctx, identifier):
        raise StripeError(
            400,
            f"An event already exists with identifier {identifier}.",
            code="duplicate_meter_event",
            param="identifier",
        )
    try:
        meter, customer, value = check_event(ctx, event_name, payload, ts)
    except EventProblem as problem:
        raise StripeError(400, problem.message, code=problem.code, param=problem.param) from None
    store_event(ctx, meter, customer, value, identifier, ts, payload, "v2")
    return {
        "object": "v2.billing.meter_event",
        "created": iso(ctx.state.now()),
        "event_name": event_name,
        "identifier": identifier,
        "livemode": False,
        "payload": dict(payload),
        "timestamp": iso(ts),
    }


@route("POST", "/v2/billing/meter_event_adjustments", "v2.billing._meter_event_adjustment_create_params")
def v2_meter_event_adjustments_create(ctx: Ctx):
    p = ctx.params
    event_name = require_str(p, "event_name")
    if p.get("type") != "cancel":
        raise invalid_choice("type", p.get("type"), ["cancel"])
    cancel = p.get("cancel") if isinstance(p.get("cancel"), dict) else {}
    identifier = cancel.get("identifier")
    if not identifier:
        raise missing("cancel.identifier")
    _cancel(ctx, event_name, identifier, "cancel.identifier")
    adjustment = {
        "id": new_id("mea_test", 32),
        "object": "v2.billing.meter_event_adjustment",
        "cancel": {"identifier": identifier},
        "created": iso(ctx.state.now()),
        "event_name": event_name,
        "livemode": False,
        "status": "pending",
        "type": "cancel",
    }
    ctx.state.adjustments.append(dict(adjustment))
    return adjustment


@route("GET", "/v2/core/events/{id}", "v2.core._event_retrieve_params")
def v2_events_retrieve(ctx: Ctx):
    event = ctx.state.v2_events.get(ctx.path_args["id"])
    if event is None:
        raise StripeError(
            404, f"No such event: '{ctx.path_args['id']}'", type="invalid_request_error", code="not_found"
        )
    return json.loads(json.dumps(event))


@route("GET", "/v2/core/events", "v2.core._event_list_params")
def v2_events_list(ctx: Ctx):
    events = list(ctx.state.v2_events.values())
    object_id = ctx.params.get("object_id")
    if object_id:
        events = [e for e in events if (e.get("related_object") or {}).get("id") == object_id]
    types = ctx.params.get("types")
    if types:
        wanted = set(types if isinstance(types, list) else [types])
        events = [e for e in events if e["type"] in wanted]
    limit = as_int(ctx.params, "limit", 20, minimum=1, maximum=100)
    events.reverse()
    return {
        "data": [json.loads(json.dumps(e)) for e in events[:limit]],
        "next_page_url": None,
        "previous_page_url": None,
    }
