import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.decorators import api_view, parser_classes, throttle_classes
from rest_framework.parsers import BaseParser
from rest_framework.response import Response

from billing_platform.api_errors import error_body
from billing_platform.metrics import instrument_ingest
from billing_platform.parsers import TOO_DEEP
from billing_platform.parsing import ParseError, parse_datetime
from metering.ingest import EXACT, MAX_BODY_BYTES, EventsInvalid, usage_events_record, usage_events_validate
from metering.models import Meter
from metering.selectors import usage_series
from metering.throttling import ApiKeyRateThrottle
from tenants.authentication import request_tenant


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = f"The request body is larger than {MAX_BODY_BYTES} bytes (1 MiB)."
    default_code = "payload_too_large"


def _reject_constant(name):
    raise ValueError(f"{name} is not a number")


class EventsJSONParser(BaseParser):
    """JSON with exact decimals, at most 1 MiB.

    DRF's own JSON parser reads the whole body whatever its size and turns 0.1 into a float.
    """

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        request = parser_context["request"]
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise PayloadTooLarge()
        body = stream.read(MAX_BODY_BYTES + 1) if stream is not None else b""
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge()
        try:
            return json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise exceptions.ParseError(f"The body is not valid JSON: {exc}") from None
        except RecursionError:
            # Python's decoder recurses per level: `[[[[...]]]]` 100,000 deep exhausts the stack.
            raise exceptions.ParseError(TOO_DEEP) from None


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


EVENT_SCHEMA = inline_serializer(
    "UsageEvent",
    {
        "id": serializers.CharField(max_length=100, help_text="Idempotency key, unique per tenant."),
        "meter": serializers.CharField(help_text="A meter code."),
        "quantity": serializers.DecimalField(
            max_digits=32, decimal_places=12, required=False, help_text="Default 1; not negative."
        ),
        "timestamp": serializers.DateTimeField(
            required=False, help_text="ISO-8601 with offset; default now; at most 35 days old."
        ),
        "properties": serializers.DictField(required=False, help_text="At most 8 KiB as JSON."),
    },
)


@instrument_ingest
@extend_schema(
    summary="Record usage events",
    description='One event, or `{"events": [...]}` of up to 1,000. All-or-nothing validation; '
    "an event id already seen for this tenant counts as a duplicate and changes nothing. "
    "Answers 202 once the events are committed.",
    request=OpenApiTypes.OBJECT,
    responses={
        202: inline_serializer(
            "IngestResult", {"accepted": serializers.IntegerField(), "duplicates": serializers.IntegerField()}
        ),
        400: OpenApiTypes.OBJECT,
        413: OpenApiTypes.OBJECT,
        429: OpenApiTypes.OBJECT,
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
@parser_classes([EventsJSONParser])
@throttle_classes([ApiKeyRateThrottle])
def events_ingest(request):
    now = timezone.now()
    try:
        events = usage_events_validate(payload=request.data, now=now)
    except EventsInvalid as invalid:
        return _invalid_response(invalid.errors)
    result = usage_events_record(tenant=request_tenant(request), events=events, now=now)
    return Response(
        {"accepted": result.accepted, "duplicates": result.duplicates}, status=status.HTTP_202_ACCEPTED
    )


class BoundedDateTimeField(serializers.Field):
    """A date-time query parameter read by billing_platform.parsing (years 2000-2100; no offset
    means UTC), so no value can overflow the range arithmetic below."""

    def to_internal_value(self, data):
        try:
            return parse_datetime(data, what="")
        except ParseError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def to_representation(self, value):
        return value.isoformat()


class UsageQuery(serializers.Serializer):
    # A CharField first (it refuses NUL and unpaired surrogates), then the look-up: a NUL sent to
    # PostgreSQL in a filter is a DataError, not "does not exist".
    meter = serializers.CharField(required=False, max_length=100)
    start = BoundedDateTimeField(required=False)
    end = BoundedDateTimeField(required=False)
    granularity = serializers.ChoiceField(choices=["hour", "day"], default="hour")

    def validate_meter(self, value):
        meter = Meter.objects.filter(code=value).first()
        if meter is None:
            raise serializers.ValidationError(f"unknown meter {value!r}")
        return meter

    MAX_SPAN = {"hour": timedelta(days=31), "day": timedelta(days=366)}
    DEFAULT_SPAN = {"hour": timedelta(hours=24), "day": timedelta(days=30)}

    def validate(self, attrs):
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
        return {**attrs, "start": start, "end": end}


def _plain(value: Decimal | None) -> str:
    """Exact decimal text without exponent or trailing zeros: 1000, 2.5, 0."""
    if not value:
        return "0"
    return format(value.normalize(EXACT), "f")


def _floor(moment: datetime, granularity: str) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if granularity == "day" else moment


def _ceil(moment: datetime, granularity: str, unit: timedelta) -> datetime:
    floored = _floor(moment, granularity)
    return floored if floored == moment else floored + unit


@extend_schema(
    summary="The calling tenant's usage",
    description="Hourly aggregates, or their sums per UTC day, in [start, end). Values are decimal "
    "strings. Default range: the last 24 hours (hour) or 30 days (day).",
    parameters=[
        OpenApiParameter("meter", str, description="A meter code; all meters when omitted."),
        OpenApiParameter("start", OpenApiTypes.DATETIME),
        OpenApiParameter("end", OpenApiTypes.DATETIME),
        OpenApiParameter("granularity", str, enum=["hour", "day"]),
    ],
    responses={200: OpenApiTypes.OBJECT},
)
@api_view(["GET"])
def usage_read(request):
    query = UsageQuery(data=request.query_params)
    query.is_valid(raise_exception=True)
    params = query.validated_data
    points = usage_series(
        tenant=request_tenant(request),
        start=params["start"],
        end=params["end"],
        granularity=params["granularity"],
        meter=params.get("meter"),
    )
    return Response(
        {
            "granularity": params["granularity"],
            "start": params["start"],
            "end": params["end"],
            "data": [
                {
                    "meter": p.meter,
                    "start": p.start,
                    "value": _plain(p.value),
                    "events": p.events,
                }
                for p in points
            ],
        }
    )
