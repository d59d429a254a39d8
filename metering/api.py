import re
from datetime import UTC, datetime, timedelta

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.decorators import api_view, parser_classes, permission_classes, throttle_classes
from rest_framework.parsers import BaseParser
from rest_framework.response import Response

from core.api_errors import error_body
from core.api_schema import error_responses
from core.api_scopes import EVENTS_WRITE, USAGE_READ, is_platform, tenant_or_platform_scope
from core.db_routing import lagging_reads
from core.json_input import json_loads_exact_fast, printable
from core.metrics import instrument_ingest
from core.money import plain_decimal
from core.parsers import TOO_DEEP
from core.parsing import ParseError, parse_datetime
from metering.grouping import (
    MAX_GROUP_BY,
    MAX_GROUPED_ROWS,
    TooManyGroups,
    group_by_horizon,
    usage_series_by_group,
)
from metering.ingest import (
    MAX_BATCH,
    MAX_BODY_BYTES,
    MAX_EVENT_ID_LENGTH,
    EventsForbidden,
    EventsInvalid,
    UsageLimitExceeded,
    events_body_decode,
    usage_events_record,
    usage_events_validate,
)
from metering.models import VALUE_PROPERTY_PATTERN, Meter
from metering.selectors import usage_series
from metering.throttling import ApiKeyRateThrottle
from tenants.authentication import request_named_tenant, request_tenant


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = f"The request body is larger than {MAX_BODY_BYTES} bytes (1 MiB)."
    default_code = "payload_too_large"


class EventsJSONParser(BaseParser):
    """JSON with exact decimals, at most 1 MiB.

    DRF's own JSON parser reads the whole body whatever its size and turns 0.1 into a float.
    """

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        request = parser_context["request"]
        declared = request.META.get("CONTENT_LENGTH") or "0"
        # isascii(): "²" passes isdigit() but not int(); a length past 9 digits is over the limit anyway.
        if (
            declared.isascii()
            and declared.isdigit()
            and (len(declared) > 9 or int(declared) > MAX_BODY_BYTES)
        ):
            raise PayloadTooLarge()
        body = stream.read(MAX_BODY_BYTES + 1) if stream is not None else b""
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge()
        try:
            return self.decode(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise exceptions.ParseError(f"The body is not valid JSON: {exc}") from None
        except RecursionError:
            # Python's decoder recurses per level: `[[[[...]]]]` 100,000 deep exhausts the stack.
            raise exceptions.ParseError(TOO_DEEP) from None

    def decode(self, body: bytes):
        return json_loads_exact_fast(body)


class NativeEventsJSONParser(EventsJSONParser):
    """The same, for POST /api/v1/events: the usual shape of events is decoded and type-checked by
    msgspec (metering.ingest.events_body_decode), for usage_events_validate's fast path."""

    def decode(self, body: bytes):
        return events_body_decode(body)


def _invalid_response(errors: dict) -> Response:
    if list(errors) == [None]:
        fields = errors[None]
    else:
        fields = {"events": {str(index): problems for index, problems in errors.items() if index is not None}}
        if None in errors:
            fields.update(errors[None])
    count = len(errors)
    message = (
        "The event is invalid; nothing was stored."
        if count == 1 and None in errors
        else (f"{count} event(s) are invalid; nothing of the batch was stored.")
    )
    return Response(error_body("invalid", message, fields), status=status.HTTP_400_BAD_REQUEST)


def _forbidden_response(indexes: list) -> Response:
    named = "" if indexes == [None] else f" (events {', '.join(map(str, indexes[:20]))})"
    return Response(
        error_body(
            "permission_denied", f"A tenant key acts only for its own tenant{named}; nothing was stored."
        ),
        status=status.HTTP_403_FORBIDDEN,
    )


def limit_exceeded_response(exceeded: UsageLimitExceeded) -> Response:
    """403: the plan refuses events beyond the meter's hard limit this period; nothing was stored."""
    return Response(
        error_body("usage_limit_exceeded", str(exceeded), {"meter": [str(exceeded)]}),
        status=status.HTTP_403_FORBIDDEN,
    )


def events_validate_for(request, payload, now):
    """Validate as the caller may send: a tenant key for its own tenant, a platform key naming each
    event's tenant. Raises EventsInvalid / EventsForbidden."""
    if is_platform(request.user):
        return usage_events_validate(payload=payload, now=now, tenant_required=True)
    return usage_events_validate(payload=payload, now=now, tenant=request_tenant(request))


# The request body, exactly as far as a schema can say it. What it cannot say (the meter must
# exist, the timestamp must be inside Stripe's window, a quantity has at most 15 digits, 12 of them
# decimals, properties at most 8 KiB and 20 levels, one id per event) is checked and answered 400.
EVENT_SCHEMA = {
    "type": "object",
    "required": ["id", "meter"],
    "additionalProperties": False,
    "properties": {
        "id": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_EVENT_ID_LENGTH,
            "description": "Idempotency key, unique per tenant; not blank, no NUL.",
        },
        "tenant": {
            "type": "string",
            "minLength": 1,
            "maxLength": 255,
            "nullable": True,
            "description": "The tenant's external id or slug. Required with a platform key (events:write); "
            "with a tenant key optional (omitted or null: that tenant), and it must name that tenant "
            "(another: 403).",
        },
        "meter": {"type": "string", "minLength": 1, "maxLength": 100, "description": "A meter's code."},
        "quantity": {
            "description": "When omitted: the meter's value property (`properties[P]`) if it has one, "
            "else 1 (null is refused); not negative; at most 15 digits, at most 12 after the point. "
            "A JSON number is read as an exact decimal.",
            "oneOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "minLength": 1, "maxLength": 100, "description": "A decimal number."},
            ],
        },
        "timestamp": {
            "type": "string",
            "format": "date-time",
            "nullable": True,
            "description": "With an offset; omitted or null: now. At most 35 days old, 5 minutes ahead.",
        },
        "properties": {
            "type": "object",
            "nullable": True,
            "additionalProperties": True,
            "description": "Omitted or null: none. At most 8 KiB as JSON and 20 levels deep.",
        },
    },
}
EVENTS_REQUEST_SCHEMA = {
    "oneOf": [
        EVENT_SCHEMA,
        {
            "type": "object",
            "required": ["events"],
            "additionalProperties": False,
            "properties": {
                "events": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": EVENT_SCHEMA},
            },
        },
    ]
}


@instrument_ingest
@extend_schema(
    summary="Record usage events",
    description='One event, or `{"events": [...]}` of up to 1,000. All-or-nothing validation; '
    "an event id already seen for this tenant counts as a duplicate and changes nothing. "
    "Answers 202 once the events are committed. With a platform key (scope events:write) every "
    "event names its tenant in `tenant` (a batch may mix tenants); an unknown or suspended tenant "
    "is a 400 naming the event. A batch that would take a tenant past a hard limit its plan refuses "
    "beyond (GET /api/v1/entitlements/{meter}) is refused whole with 403 `usage_limit_exceeded`.",
    request={"application/json": EVENTS_REQUEST_SCHEMA},
    responses={
        202: inline_serializer(
            "IngestResult",
            {
                "accepted": serializers.IntegerField(min_value=0, help_text="Events stored now."),
                "duplicates": serializers.IntegerField(min_value=0, help_text="Events already stored."),
            },
        ),
        **error_responses(400, 401, 403, 413, 415, 429),
    },
    examples=[
        OpenApiExample(
            "One event",
            value={
                "id": "req-81f2",
                "meter": "api_calls",
                "quantity": 1,
                "timestamp": "2026-11-21T10:00:00Z",
            },
            request_only=True,
        ),
        OpenApiExample(
            "A batch",
            value={"events": [{"id": "e1", "meter": "storage_gb", "quantity": "2.5"}]},
            request_only=True,
        ),
    ],
)
@api_view(["POST"])
@parser_classes([NativeEventsJSONParser])
@permission_classes([tenant_or_platform_scope(EVENTS_WRITE)])
@throttle_classes([ApiKeyRateThrottle])
def events_ingest(request):
    now = timezone.now()
    try:
        events = events_validate_for(request, request.data, now)
    except EventsForbidden as forbidden:
        return _forbidden_response(forbidden.indexes)
    except EventsInvalid as invalid:
        return _invalid_response(invalid.errors)
    try:
        result = usage_events_record(events=events, now=now)
    except UsageLimitExceeded as exceeded:
        return limit_exceeded_response(exceeded)
    return Response(
        {"accepted": result.accepted, "duplicates": result.duplicates}, status=status.HTTP_202_ACCEPTED
    )


class BoundedDateTimeField(serializers.Field):
    """A date-time query parameter read by core.parsing (years 2000-2100; no offset
    means UTC), so no value can overflow the range arithmetic below."""

    def to_internal_value(self, data):
        try:
            return parse_datetime(data, what="", naive_is_utc=False)
        except ParseError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def to_representation(self, value):
        return value.isoformat()


# One property name or path, as a meter's value property is written (`region`, `usage.region`).
PROPERTY_NAME = VALUE_PROPERTY_PATTERN.removeprefix("^").removesuffix("$")
PROPERTY_NAME_MAX_LENGTH = 100


class GroupByField(serializers.Field):
    """`group_by`: property names, the parameter repeated (`group_by=a&group_by=b`, as OpenMeter's
    groupBy) or comma-separated (`group_by=a,b`), at most MAX_GROUP_BY in all."""

    def to_internal_value(self, data):
        items = data if isinstance(data, list) else [data]
        names = [name for item in items for name in str(item).split(",")]
        for name in names:
            if len(name) > PROPERTY_NAME_MAX_LENGTH or not re.fullmatch(PROPERTY_NAME, name):
                raise serializers.ValidationError(
                    f"not a property name: {printable(name)} (letters, digits, '_' and '-', or a path "
                    "such as 'usage.region'; at most 100 characters)"
                )
        if len(set(names)) < len(names):
            raise serializers.ValidationError("names a property more than once")
        if len(names) > MAX_GROUP_BY:
            raise serializers.ValidationError(f"at most {MAX_GROUP_BY} properties")
        return names

    def to_representation(self, value):
        return value


class UsageQuery(serializers.Serializer):
    # A CharField first (it refuses NUL and unpaired surrogates), then the look-up: a NUL sent to
    # PostgreSQL in a filter is a DataError, not "does not exist".
    meter = serializers.CharField(required=False, max_length=100)
    tenant = serializers.CharField(required=False, max_length=255)
    start = BoundedDateTimeField(required=False)
    end = BoundedDateTimeField(required=False)
    granularity = serializers.ChoiceField(choices=["hour", "day"], default="hour")
    group_by = GroupByField(required=False)

    def validate_meter(self, value):
        meter = Meter.objects.filter(code=value).first()
        if meter is None:
            raise serializers.ValidationError(f"unknown meter {value!r}")
        return meter

    MAX_SPAN = {"hour": timedelta(days=31), "day": timedelta(days=366)}
    DEFAULT_SPAN = {"hour": timedelta(hours=24), "day": timedelta(days=30)}

    def validate(self, attrs):
        # As with events' fields: a typo (`metre=`) is refused rather than silently ignored.
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({printable(name): ["unknown parameter"] for name in unknown})
        granularity = attrs["granularity"]
        unit = timedelta(hours=1) if granularity == "hour" else timedelta(days=1)
        end = _ceil(attrs.get("end") or timezone.now(), granularity, unit)
        start = attrs.get("start")
        start = _floor(start, granularity) if start else end - self.DEFAULT_SPAN[granularity]
        if start >= end:
            raise serializers.ValidationError({"end": ["must be after start"]})
        if end - start > self.MAX_SPAN[granularity]:
            days = self.MAX_SPAN[granularity].days
            raise serializers.ValidationError({"start": [f"the range may span at most {days} days"]})
        if attrs.get("group_by"):
            # Grouping reads raw events, which are pruned; older hours keep only their aggregates.
            horizon = group_by_horizon(granularity)
            if start < horizon:
                raise serializers.ValidationError(
                    {
                        "start": [
                            f"group_by reads raw events, kept from {horizon:%Y-%m-%dT%H:%M:%SZ} on: "
                            "start there or later, or read without group_by"
                        ]
                    }
                )
        return {**attrs, "start": start, "end": end}


def _floor(moment: datetime, granularity: str) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if granularity == "day" else moment


def _ceil(moment: datetime, granularity: str, unit: timedelta) -> datetime:
    floored = _floor(moment, granularity)
    return floored if floored == moment else floored + unit


USAGE_RESPONSE = inline_serializer(
    "Usage",
    {
        "granularity": serializers.ChoiceField(choices=["hour", "day"]),
        "start": serializers.DateTimeField(help_text="Inclusive, rounded down to the hour or day."),
        "end": serializers.DateTimeField(help_text="Exclusive, rounded up to the hour or day."),
        "data": inline_serializer(
            "UsagePoint",
            {
                "meter": serializers.CharField(),
                "start": serializers.DateTimeField(help_text="The hour's or UTC day's start."),
                "value": serializers.RegexField(
                    r"^[0-9]+(\.[0-9]+)?$", help_text="Decimal string: the billable quantity."
                ),
                "events": serializers.IntegerField(min_value=0),
                "group": serializers.DictField(
                    child=serializers.CharField(allow_null=True),
                    required=False,
                    help_text="With `group_by` only: each property asked for and its value in these "
                    "events, as text; null where the events lack it.",
                ),
            },
            many=True,
        ),
    },
)


@extend_schema(
    summary="A tenant's usage",
    description="Hourly aggregates, or their sums per UTC day, in [start, end). Values are decimal "
    "strings. Default range: the last 24 hours (hour) or 30 days (day). A tenant key reads its own "
    "tenant; a platform key (scope usage:read) names the tenant in `tenant`.\n\n"
    "`group_by` (OpenMeter's groupBy) splits each point by the values of up to 3 event properties: "
    'each point gains `group`, e.g. `{"region": "eu"}` (null where events lack the property). '
    "Grouped values are computed from raw events with the meter's filters and aggregation, each hour "
    "as aggregation computes it and a day as the sum of its hours, so the groups of an hour add up to "
    "its aggregate for count and sum meters; events of hours not yet aggregated are included. Raw "
    "events are kept 45 days and then pruned: a grouped range must start at or after the later of "
    "the last prune's cutoff and 45 days ago, else 400 naming `start` with the first moment allowed. "
    f"At most {MAX_GROUPED_ROWS:,} grouped points per request (else 400 naming `group_by`).",
    parameters=[
        OpenApiParameter(
            "tenant",
            {"type": "string", "minLength": 1, "maxLength": 255},
            description="The tenant's external id or slug: required with a platform key; with a "
            "tenant key optional and it must name that tenant.",
        ),
        OpenApiParameter(
            "meter",
            {"type": "string", "minLength": 1, "maxLength": 100},
            description="A meter code; all meters when omitted.",
        ),
        OpenApiParameter("start", OpenApiTypes.DATETIME, description="With an offset; 2000 to 2100."),
        OpenApiParameter("end", OpenApiTypes.DATETIME, description="With an offset; 2000 to 2100."),
        OpenApiParameter("granularity", str, enum=["hour", "day"], description="Default hour."),
        OpenApiParameter(
            "group_by",
            {
                "type": "array",
                "maxItems": MAX_GROUP_BY,
                "items": {"type": "string", "pattern": f"^{PROPERTY_NAME}(,{PROPERTY_NAME})*$"},
            },
            style="form",
            explode=True,
            description="Event properties to group by: a name (`region`) or a path into nested "
            "objects (`usage.region`), repeated (`group_by=region&group_by=model`) or comma-separated "
            f"(`group_by=region,model`); at most {MAX_GROUP_BY} in all, each once. Only hours still "
            "holding raw events (see above).",
        ),
    ],
    responses={200: USAGE_RESPONSE, **error_responses(400, 401, 403, 404)},
)
@api_view(["GET"])
@permission_classes([tenant_or_platform_scope(USAGE_READ)])
@lagging_reads()  # after authentication and permissions (primary): the read replica when configured
def usage_read(request):
    # A plain dict, not the QueryDict: DRF reads an empty value of an optional field in a QueryDict
    # as "omitted", so `start=` would silently mean the default range.
    data = request.query_params.dict()
    if "group_by" in request.query_params:
        data["group_by"] = request.query_params.getlist("group_by")
    query = UsageQuery(data=data)
    query.is_valid(raise_exception=True)
    params = query.validated_data
    if params.get("group_by"):
        return _grouped_usage(request, params)
    points = usage_series(
        # A platform key may read a suspended tenant's usage (its last bill); its own key cannot.
        tenant=request_named_tenant(request, params.get("tenant"), field="tenant", active=False),
        start=params["start"],
        end=params["end"],
        granularity=params["granularity"],
        meter=params.get("meter"),
    )
    return _usage_response(params, points)


def _grouped_usage(request, params) -> Response:
    try:
        points = usage_series_by_group(
            tenant=request_named_tenant(request, params.get("tenant"), field="tenant", active=False),
            start=params["start"],
            end=params["end"],
            granularity=params["granularity"],
            group_by=params["group_by"],
            meter=params.get("meter"),
        )
    except TooManyGroups as too_many:
        raise serializers.ValidationError(
            {
                "group_by": [
                    f"more than {too_many.limit:,} grouped points: narrow the range, read per day "
                    "or group by fewer properties"
                ]
            }
        ) from None
    return _usage_response(params, points, grouped=True)


def _usage_response(params, points, *, grouped: bool = False) -> Response:
    data = []
    for p in points:
        point = {"meter": p.meter, "start": p.start, "value": plain_decimal(p.value), "events": p.events}
        if grouped:
            point["group"] = p.group
        data.append(point)
    return Response(
        {"granularity": params["granularity"], "start": params["start"], "end": params["end"], "data": data}
    )
