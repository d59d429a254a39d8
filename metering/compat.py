"""Lago- and OpenMeter-compatible ingestion: their SDKs' wire formats, into the native ingest service.

`/compat/lago/api/v1/events[/batch]` take what `lago-python-client` (and Lago's other SDKs) send and
answer as Lago does; `/compat/openmeter/api/v1/events` takes CloudEvents as the `openmeter` client
sends them and answers 204 or an RFC 7807 problem. Each event is translated into a native event
(metering.ingest), so limits, validation, idempotency (per tenant, by the event's id) and the
meter's value property are the native endpoint's. The translation:

    Lago                        OpenMeter (CloudEvents)     native
    transaction_id              id                          id (idempotency key)
    external_subscription_id    subject                     tenant (external id or slug)
    code                        type                        meter
    timestamp (unix seconds)    time (RFC 3339)             timestamp (missing: now)
    properties                  data                        properties

Authentication is the API's: `Authorization: Bearer <key>` (what both SDKs send), a platform key
with events:write (each event names its tenant) or a tenant key (its events must name that tenant).
"""

from abc import ABCMeta, abstractmethod
from datetime import UTC, datetime
from decimal import Decimal
from http import HTTPStatus

from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api_scopes import EVENTS_WRITE, tenant_or_platform_scope
from core.metrics import INGEST_EVENTS, INGEST_REJECTED
from core.money import plain_decimal
from metering.api import EventsJSONParser, events_validate_for
from metering.ingest import (
    MAX_BATCH,
    MAX_EVENT_ID_LENGTH,
    EventsAlreadyStored,
    EventsForbidden,
    EventsInvalid,
    UsageLimitExceeded,
    ValidEvent,
    usage_events_record,
    usage_events_stored_indexes,
)
from metering.throttling import ApiKeyRateThrottle

# Unix seconds Lago may send: 2000-01-01 to 2100-01-01 (outside, the native window refuses anyway).
_MIN_UNIX, _MAX_UNIX = 946_684_800, 4_102_444_800


def _problem_messages(errors: dict) -> str:
    """A one-line summary of EventsInvalid-like errors for a person."""
    parts = []
    for index, fields in list(errors.items())[:10]:
        where = "" if index is None else f"event {index}: "
        parts.append(where + "; ".join(f"{field} {', '.join(msgs)}" for field, msgs in fields.items()))
    more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
    return " | ".join(parts) + more


def _rename(errors: dict, names: dict[str, str], properties: str) -> dict:
    """Native field names -> the peer's (`properties.x` -> `<properties>.x`)."""
    renamed = {}
    for index, fields in errors.items():
        out = {}
        for field, messages in fields.items():
            if field.startswith("properties."):
                field = properties + field[len("properties") :]
            else:
                field = names.get(field, field)
            out.setdefault(field, []).extend(messages)
        renamed[index] = out
    return renamed


def _merge(native: dict, own: dict) -> dict:
    """The peer-specific problems of an event, and the native ones about other fields (a native
    message about `data.tokens` only repeats that `data` is not an object)."""
    kept = {
        field: messages
        for field, messages in native.items()
        if not any(field == name or field.startswith(name + ".") for name in own)
    }
    return {**kept, **own}


def _to_natives(raws: list, translate) -> tuple[list, dict]:
    """Each peer event as a native one (the raw event where it cannot be translated, so that native
    validation names its problems too), and the peer's own problems by index."""
    natives, problems = [], {}
    for index, raw in enumerate(raws):
        native, own = translate(raw)
        natives.append(native if native is not None else raw)
        if own:
            problems[index] = own
    return natives, problems


def _forbidden_where(forbidden: EventsForbidden, *, batch: bool) -> str:
    """Which events of a batch named another tenant, for the 403's message."""
    return "" if not batch else f" (events {', '.join(map(str, forbidden.indexes[:20]))})"


def _count(accepted: int, duplicates: int) -> None:
    INGEST_EVENTS.labels("accepted").inc(accepted)
    INGEST_EVENTS.labels("duplicate").inc(duplicates)


class _CompatView(APIView, metaclass=ABCMeta):
    """Same keys, scope and rate limit as POST /api/v1/events; errors in the peer's shape, which
    each peer's view gives in `error`."""

    permission_classes = [tenant_or_platform_scope(EVENTS_WRITE)]
    throttle_classes = [ApiKeyRateThrottle]

    @abstractmethod
    def error(self, http_status: int, message: str, **extra) -> Response:
        """The peer's error body for this status and message."""

    def get_exception_handler(self):
        return self._handle

    def _handle(self, exc, context):
        if not isinstance(exc, exceptions.APIException):
            return None  # a bug stays a 500
        headers = {}
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            headers["Retry-After"] = str(int(exc.wait))
            # Lago's SDKs wait this many seconds before retrying (their 429 handling).
            headers["x-ratelimit-reset"] = str(int(exc.wait))
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        detail = exc.detail
        message = " ".join(str(v) for v in detail) if isinstance(detail, list) else str(detail)
        INGEST_REJECTED.labels(_reason(exc.status_code)).inc()
        response = self.error(exc.status_code, message)
        for name, value in headers.items():
            response[name] = value
        return response


def _reason(code: int) -> str:
    return {
        400: "bad_request",
        401: "unauthenticated",
        403: "forbidden",
        405: "method_not_allowed",
        413: "too_large",
        415: "unsupported_media",
        422: "validation",
        429: "rate_limited",
    }.get(code, f"http_{code}")


# --- Lago -------------------------------------------------------------------------------------

_LAGO_NAMES = {
    "id": "transaction_id",
    "meter": "code",
    "tenant": "external_subscription_id",
    "non_field_errors": "event",
}
_LAGO_REQUIRED = ("transaction_id", "external_subscription_id", "code")


def _lago_timestamp(value) -> datetime | None:
    """Unix seconds (number, or a string holding one; decimals allowed) -> a UTC datetime (to the
    microsecond), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, str)):
        return None
    if isinstance(value, str) and not 0 < len(value) <= 40:
        return None
    try:
        seconds = float(value)
    except ValueError:  # also "inf"/"nan" pass float() and fail the range below
        return None
    if not _MIN_UNIX <= seconds <= _MAX_UNIX:
        return None
    return datetime.fromtimestamp(seconds, UTC)


def _lago_event_to_native(raw) -> tuple[dict | None, dict[str, list[str]]]:
    """A Lago event -> (native event, problems only Lago reports: missing fields, timestamp format)."""
    if not isinstance(raw, dict):
        return None, {"event": ["must be an object"]}
    problems = {}
    for name in _LAGO_REQUIRED:
        if raw.get(name) in (None, ""):
            problems[name] = ["value_is_mandatory"]
    native = {
        "id": raw.get("transaction_id"),
        "meter": raw.get("code"),
        "tenant": raw.get("external_subscription_id"),
        "properties": raw.get("properties"),
    }
    timestamp = raw.get("timestamp")
    if timestamp is not None and timestamp != "":
        moment = _lago_timestamp(timestamp)
        if moment is None:
            problems["timestamp"] = ["invalid_format: unix seconds (a number or a string holding one)"]
        else:
            native["timestamp"] = moment
    return native, problems


def _lago_time(moment: datetime) -> str:
    """As Lago renders times: milliseconds and Z (ingestion's times are UTC)."""
    return moment.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def _lago_event(raw: dict, event: ValidEvent, created_at: str) -> dict:
    """The event as Lago's EventSerializer renders it (Lago's own ids are null: they do not exist
    here; the tenant is `external_subscription_id`, as sent)."""
    return {
        "lago_id": None,
        "transaction_id": event.event_id,
        "lago_customer_id": None,
        "code": raw["code"],
        "timestamp": _lago_time(event.timestamp),
        "precise_total_amount_cents": None,
        "properties": raw.get("properties") or {},
        "lago_subscription_id": None,
        "external_subscription_id": raw["external_subscription_id"],
        "created_at": created_at,
    }


class _LagoView(_CompatView):
    parser_classes = [EventsJSONParser]

    def error(self, http_status: int, message: str, **extra) -> Response:
        """Lago's bodies: {status, error[, code][, error_details]}, plus `message` saying why."""
        phrase = HTTPStatus(http_status).phrase
        error_code = extra.pop("error_code", None)
        if http_status == 400:
            body = {"status": 400, "error": f"BadRequest: {message}"}
        elif http_status == 401:
            body = {"status": 401, "error": "Unauthorized", "message": message}
        else:
            body = {"status": http_status, "error": phrase, "code": error_code or _snake(phrase)}
            if message:
                body["message"] = message
        body.update(extra)
        return Response(body, status=http_status)

    def invalid(self, error_details: dict) -> Response:
        INGEST_REJECTED.labels("validation").inc()
        return self.error(422, "", error_code="validation_errors", error_details=error_details)

    def ingest(self, request, raws: list, *, batch: bool) -> Response:
        now = timezone.now()
        natives, lago_problems = _to_natives(raws, _lago_event_to_native)
        try:
            events = events_validate_for(request, {"events": natives}, now)
            errors = {}
        except EventsForbidden as forbidden:
            INGEST_REJECTED.labels("forbidden").inc()
            where = _forbidden_where(forbidden, batch=batch)
            return self.error(
                403,
                f"A tenant key acts only for its own tenant{where}: external_subscription_id must "
                "be its external id or slug.",
                error_code="other_tenant",
            )
        except EventsInvalid as invalid:
            errors = _rename(invalid.errors, _LAGO_NAMES, "properties")
        for index, problems in lago_problems.items():
            # Lago's own codes first; the native message for the same field would only repeat it.
            errors[index] = _merge(errors.get(index, {}), problems)
        if not errors:
            # Lago refuses an event whose transaction_id it already holds (value_already_exist) and
            # stores nothing of such a batch; so does this endpoint: a repeat inside the batch here,
            # one stored before by the insert (rolled back then).
            seen: set = set()
            for index, event in enumerate(events):
                key = (event.tenant_id, event.event_id)
                if key in seen:
                    errors[index] = {"transaction_id": ["value_already_exist"]}
                seen.add(key)
            if errors:  # name the ones stored before too, as Lago would
                for index in usage_events_stored_indexes(events=events):
                    errors[index] = {"transaction_id": ["value_already_exist"]}
        if not errors:
            try:
                result = usage_events_record(events=events, now=now, all_new=True)
            except EventsAlreadyStored as stored:
                errors = {index: {"transaction_id": ["value_already_exist"]} for index in stored.indexes}
            except UsageLimitExceeded as exceeded:
                INGEST_REJECTED.labels("usage_limit").inc()
                return self.error(403, str(exceeded), error_code="usage_limit_exceeded")
        if errors:
            if not batch:
                return self.invalid(errors[0])
            return self.invalid({str(index): fields for index, fields in sorted(errors.items())})
        _count(result.accepted, result.duplicates)
        created_at = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        rendered = [_lago_event(raw, event, created_at) for raw, event in zip(raws, events, strict=True)]
        if batch:
            return Response({"events": rendered}, status=status.HTTP_200_OK)
        return Response({"event": rendered[0]}, status=status.HTTP_200_OK)


def _snake(phrase: str) -> str:
    return phrase.lower().replace(" ", "_").replace("-", "_")


LAGO_EVENT_SCHEMA = {
    "type": "object",
    "required": ["transaction_id", "external_subscription_id", "code"],
    "additionalProperties": True,
    "properties": {
        "transaction_id": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_EVENT_ID_LENGTH,
            "description": "Idempotency key, unique per tenant: a second event with it answers 422 "
            "value_already_exist and changes nothing.",
        },
        "external_subscription_id": {
            "type": "string",
            "minLength": 1,
            "maxLength": 255,
            "description": "The tenant: its external id or slug (with a tenant key: that tenant's).",
        },
        "code": {"type": "string", "minLength": 1, "maxLength": 100, "description": "A meter's code."},
        "timestamp": {
            "description": "Unix seconds, decimals allowed, as a number or a string; missing or null: "
            "now. At most 35 days old, 5 minutes ahead.",
            "nullable": True,
            "oneOf": [{"type": "number"}, {"type": "string", "maxLength": 40}],
        },
        "properties": {
            "type": "object",
            "nullable": True,
            "additionalProperties": True,
            "description": "The meter's value property (Lago's field_name) gives the quantity; "
            "at most 8 KiB as JSON.",
        },
        "precise_total_amount_cents": {
            "nullable": True,
            "description": "Accepted and ignored.",
        },
    },
}
LAGO_EVENT_RESPONSE = {
    "type": "object",
    "required": ["transaction_id", "external_subscription_id", "code", "timestamp"],
    "properties": {
        "lago_id": {"type": "string", "nullable": True, "description": "Always null here."},
        "transaction_id": {"type": "string"},
        "lago_customer_id": {"type": "string", "nullable": True},
        "code": {"type": "string"},
        "timestamp": {"type": "string", "format": "date-time"},
        "precise_total_amount_cents": {"type": "string", "nullable": True},
        "properties": {"type": "object", "additionalProperties": True},
        "lago_subscription_id": {"type": "string", "nullable": True},
        "external_subscription_id": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
    },
}
LAGO_ERROR = {
    "type": "object",
    "description": "Lago's error body: `error_details` maps fields (a batch: event indexes, then "
    "fields) to Lago codes (value_is_mandatory, value_already_exist, invalid_format) or messages.",
    "required": ["status", "error"],
    "properties": {
        "status": {"type": "integer"},
        "error": {"type": "string"},
        "code": {"type": "string"},
        "message": {"type": "string"},
        "error_details": {"type": "object", "additionalProperties": True},
    },
}


def _lago_errors(*codes: int) -> dict:
    descriptions = {
        400: "The body is not JSON, or lacks `event` / `events`.",
        401: "No API key, or a wrong, expired or revoked one.",
        403: "A suspended tenant's key, a platform key without events:write, a tenant key naming "
        "another tenant, or events past a hard limit the tenant's plan refuses beyond (`code` "
        "usage_limit_exceeded; nothing was stored).",
        413: "The body is larger than 1 MiB.",
        415: "The body is not application/json.",
        422: "Validation errors (`error_details`); nothing was stored.",
        429: "Too many requests for this key; see Retry-After.",
    }
    return {code: OpenApiResponse(response=LAGO_ERROR, description=descriptions[code]) for code in codes}


class LagoEventCreate(_LagoView):
    @extend_schema(
        tags=["compat: Lago"],
        summary="Lago: send one usage event",
        description="As Lago's `POST /api/v1/events` (`client.events.create`). Point a Lago client's "
        "`api_url` at `<host>/compat/lago/`.",
        request={
            "application/json": {
                "type": "object",
                "required": ["event"],
                "properties": {"event": LAGO_EVENT_SCHEMA},
            }
        },
        responses={
            200: OpenApiResponse(
                response={
                    "type": "object",
                    "required": ["event"],
                    "properties": {"event": LAGO_EVENT_RESPONSE},
                },
                description="The stored event.",
            ),
            **_lago_errors(400, 401, 403, 413, 415, 422, 429),
        },
    )
    def post(self, request):
        data = request.data
        if not isinstance(data, dict) or not isinstance(data.get("event"), dict):
            raise exceptions.ParseError("param is missing or the value is empty: event")
        return self.ingest(request, [data["event"]], batch=False)


class LagoEventBatch(_LagoView):
    @extend_schema(
        tags=["compat: Lago"],
        summary="Lago: send a batch of usage events",
        description=f"As Lago's `POST /api/v1/events/batch` (`client.events.batch_create`): up to "
        f"{MAX_BATCH} events, all or nothing; events may name different tenants (platform key).",
        request={
            "application/json": {
                "type": "object",
                "required": ["events"],
                "properties": {
                    "events": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_BATCH,
                        "items": LAGO_EVENT_SCHEMA,
                    }
                },
            }
        },
        responses={
            200: OpenApiResponse(
                response={
                    "type": "object",
                    "required": ["events"],
                    "properties": {"events": {"type": "array", "items": LAGO_EVENT_RESPONSE}},
                },
                description="The stored events, in the order sent.",
            ),
            **_lago_errors(400, 401, 403, 413, 415, 422, 429),
        },
    )
    def post(self, request):
        data = request.data
        if not isinstance(data, dict) or "events" not in data:
            raise exceptions.ParseError("param is missing or the value is empty: events")
        raws = data["events"]
        if not isinstance(raws, list):
            return self.invalid({"events": ["must be a list of events"]})
        if not raws:
            return self.invalid({"events": ["no_events"]})
        if len(raws) > MAX_BATCH:
            return self.invalid(
                {"events": [f"too_many_events: {len(raws)} events; the limit is {MAX_BATCH}"]}
            )
        return self.ingest(request, raws, batch=True)


# --- OpenMeter ----------------------------------------------------------------------------------

_OPENMETER_NAMES = {"id": "id", "meter": "type", "tenant": "subject", "timestamp": "time"}
# CloudEvents attributes OpenMeter reads; others are extensions, accepted and ignored.
_CLOUDEVENT_REQUIRED = ("id", "source", "type", "subject")


class CloudEventParser(EventsJSONParser):
    media_type = "application/cloudevents+json"


class CloudEventBatchParser(EventsJSONParser):
    media_type = "application/cloudevents-batch+json"


def _cloudevent_to_native(raw) -> tuple[dict | None, dict[str, list[str]]]:
    if not isinstance(raw, dict):
        return None, {"event": ["must be a CloudEvent object"]}
    problems = {}
    for name in _CLOUDEVENT_REQUIRED:
        value = raw.get(name)
        if not isinstance(value, str) or not value:
            problems[name] = ["is required: a non-empty string"]
    version = raw.get("specversion", "1.0")
    if version != "1.0":
        problems["specversion"] = ["must be '1.0'"]
    content_type = raw.get("datacontenttype")
    if content_type is not None and content_type != "application/json":
        problems["datacontenttype"] = ["must be application/json (or omitted)"]
    data = raw.get("data")
    if data is not None and not isinstance(data, dict):
        problems["data"] = ["must be a JSON object (or omitted)"]
        data = None
    native = {
        "id": raw.get("id"),
        "meter": raw.get("type"),
        "tenant": raw.get("subject"),
        "timestamp": raw.get("time"),
        "properties": data,
    }
    return native, problems


CLOUDEVENT_SCHEMA = {
    "type": "object",
    "required": ["id", "source", "type", "subject"],
    "additionalProperties": True,
    "properties": {
        "id": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_EVENT_ID_LENGTH,
            "description": "Idempotency key, unique per tenant: a second event with it is ignored.",
        },
        "source": {"type": "string", "minLength": 1, "description": "Where the event comes from."},
        "specversion": {"type": "string", "enum": ["1.0"], "default": "1.0"},
        "type": {"type": "string", "minLength": 1, "maxLength": 100, "description": "A meter's code."},
        "subject": {
            "type": "string",
            "minLength": 1,
            "maxLength": 255,
            "description": "The tenant: its external id or slug (with a tenant key: that tenant's).",
        },
        "time": {
            "type": "string",
            "format": "date-time",
            "nullable": True,
            "description": "RFC 3339; missing: now. At most 35 days old, 5 minutes ahead.",
        },
        "datacontenttype": {"type": "string", "enum": ["application/json"], "nullable": True},
        "dataschema": {"type": "string", "nullable": True},
        "data": {
            "type": "object",
            "nullable": True,
            "additionalProperties": True,
            "description": "The meter's value property (OpenMeter's valueProperty, e.g. `$.tokens`) "
            "gives the quantity; at most 8 KiB as JSON.",
        },
    },
}
PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 7807 problem, as OpenMeter answers; `extensions.errors` maps event indexes "
    "(or `event` for a single one) to fields and their problems.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "extensions": {"type": "object", "additionalProperties": True},
    },
}


class OpenMeterEvents(_CompatView):
    parser_classes = [CloudEventParser, CloudEventBatchParser, EventsJSONParser]

    def error(self, http_status: int, message: str, **extra) -> Response:
        body = {
            "type": "about:blank",
            "title": HTTPStatus(http_status).phrase,
            "status": http_status,
            "detail": message,
            "instance": self.request.path if self.request is not None else "",
        }
        if extra:
            body["extensions"] = extra
        return Response(body, status=http_status, content_type="application/problem+json")

    @extend_schema(
        tags=["compat: OpenMeter"],
        summary="OpenMeter: ingest CloudEvents",
        description="As OpenMeter's `POST /api/v1/events` (`client.events.ingest_event`, "
        "`ingest_events`, `ingest_events_json`). Point an OpenMeter client's `endpoint` at "
        f"`<host>/compat/openmeter`. Up to {MAX_BATCH} events, all or nothing; 204 when stored "
        "(an id already stored for the tenant is ignored, as OpenMeter deduplicates).",
        request={
            "application/cloudevents+json": CLOUDEVENT_SCHEMA,
            "application/cloudevents-batch+json": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH,
                "items": CLOUDEVENT_SCHEMA,
            },
            "application/json": {
                "oneOf": [
                    CLOUDEVENT_SCHEMA,
                    {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": CLOUDEVENT_SCHEMA},
                ]
            },
        },
        responses={
            204: OpenApiResponse(description="Stored (or already stored)."),
            **{
                (code, "application/problem+json"): OpenApiResponse(
                    response=PROBLEM_SCHEMA, description=description
                )
                for code, description in {
                    400: "Invalid events (`extensions.errors`) or a body that is not JSON; nothing "
                    "was stored.",
                    401: "No API key, or a wrong, expired or revoked one.",
                    403: "A suspended tenant's key, a platform key without events:write, a tenant "
                    "key naming another tenant, or events past a hard limit the tenant's plan refuses "
                    "beyond (`extensions.code` usage_limit_exceeded; nothing was stored).",
                    413: "The body is larger than 1 MiB.",
                    415: "Not one of the three content types.",
                    429: "Too many requests for this key; see Retry-After.",
                }.items()
            },
        },
    )
    def post(self, request):
        now = timezone.now()
        data = request.data
        content_type = request.content_type.split(";")[0].strip().lower()
        batch_type = content_type == CloudEventBatchParser.media_type
        if isinstance(data, list):
            if content_type == CloudEventParser.media_type:
                raise exceptions.ParseError(
                    "application/cloudevents+json carries one event; send a "
                    "batch as application/cloudevents-batch+json"
                )
            raws, batch = data, True
        elif batch_type:
            raise exceptions.ParseError("application/cloudevents-batch+json carries a JSON array of events")
        else:
            raws, batch = [data], False
        if batch and not raws:
            return self._invalid({None: {"events": ["must hold at least one event"]}}, batch=False)
        if len(raws) > MAX_BATCH:
            return self._invalid(
                {None: {"events": [f"holds {len(raws)} events; the limit is {MAX_BATCH}"]}}, batch=False
            )
        natives, own = _to_natives(raws, _cloudevent_to_native)
        try:
            events = events_validate_for(request, {"events": natives}, now)
            errors = {}
        except EventsForbidden as forbidden:
            INGEST_REJECTED.labels("forbidden").inc()
            where = _forbidden_where(forbidden, batch=batch)
            return self.error(
                403,
                f"A tenant key acts only for its own tenant{where}: subject must be its external id or slug.",
            )
        except EventsInvalid as invalid:
            errors = _rename(invalid.errors, _OPENMETER_NAMES, "data")
        for index, problems in own.items():
            errors[index] = _merge(errors.get(index, {}), problems)
        if errors:
            return self._invalid(errors, batch=batch)
        try:
            result = usage_events_record(events=events, now=now)
        except UsageLimitExceeded as exceeded:
            INGEST_REJECTED.labels("usage_limit").inc()
            return self.error(
                403,
                str(exceeded),
                code="usage_limit_exceeded",
                meter=exceeded.meter,
                limit=plain_decimal(exceeded.limit),
                usage=plain_decimal(exceeded.usage),
                periodEnd=exceeded.period_end,
            )
        _count(result.accepted, result.duplicates)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _invalid(self, errors: dict, *, batch: bool) -> Response:
        INGEST_REJECTED.labels("validation").inc()
        if not batch and list(errors) == [0]:
            errors = {None: errors[0]}
        shown = {("event" if index is None else str(index)): fields for index, fields in errors.items()}
        count = len(errors)
        summary = "The event is invalid" if not batch else f"{count} event(s) are invalid"
        return self.error(400, f"{summary}; nothing was stored. {_problem_messages(errors)}", errors=shown)
