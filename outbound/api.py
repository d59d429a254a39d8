"""The webhook endpoints API, for the SaaS's backend (a platform key with the `webhooks:write` scope).

GET/POST /api/v1/webhook-endpoints, GET/PATCH/DELETE /api/v1/webhook-endpoints/{id}. POST answers the
signing secret once; it is never shown again (rotate it in admin).
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.decorators import api_view, permission_classes
from rest_framework.response import Response

from core.api_schema import error_responses
from core.api_scopes import WEBHOOKS_WRITE, platform_scope
from core.json_input import printable
from outbound.events import ALL_EVENTS, EVENT_TYPES
from outbound.models import WebhookEndpoint
from outbound.services import webhook_endpoint_create, webhook_endpoint_delete, webhook_endpoint_update

MAX_ID = 2**63 - 1
EVENT_TYPE_HELP = (
    f'Event types: {", ".join(EVENT_TYPES)}; or ["{ALL_EVENTS}"] for every type, present and future.'
)


class WebhookEndpointSerializer(serializers.ModelSerializer):
    event_types = serializers.ListField(child=serializers.CharField(), help_text=EVENT_TYPE_HELP)

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "description",
            "event_types",
            "enabled",
            "disabled_at",
            "disabled_reason",
            "failing_since",
            "last_success_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class WebhookEndpointCreatedSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(help_text="The signing secret (whsec_...), shown only in this answer.")

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class _StrictSerializer(serializers.Serializer):
    def validate(self, attrs):
        # A typo (`events` for `event_types`) is refused rather than silently ignored.
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({printable(name): ["unknown field"] for name in unknown})
        return attrs


class WebhookEndpointCreate(_StrictSerializer):
    url = serializers.CharField(
        max_length=2000, help_text="https:// (http:// only where the platform allows it)."
    )
    event_types = serializers.ListField(
        child=serializers.CharField(max_length=64), min_length=1, max_length=100, help_text=EVENT_TYPE_HELP
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class WebhookEndpointChange(_StrictSerializer):
    url = serializers.CharField(max_length=2000, required=False)
    event_types = serializers.ListField(
        child=serializers.CharField(max_length=64),
        min_length=1,
        max_length=100,
        required=False,
        help_text=EVENT_TYPE_HELP,
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    enabled = serializers.BooleanField(
        required=False, help_text="true re-enables an endpoint disabled by hand or automatically."
    )


class WebhookEndpointList(serializers.Serializer):
    endpoints = WebhookEndpointSerializer(many=True)


def _valid(serializer_class, data):
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _service(call):
    """A service's ValidationError ({"field": [...]}) as the API's 400 naming the field."""
    try:
        return call()
    except DjangoValidationError as exc:
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        raise exceptions.ValidationError(detail) from None


def _endpoint(endpoint_id: int) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id).first() if endpoint_id <= MAX_ID else None
    if endpoint is None:
        raise exceptions.NotFound("No such webhook endpoint.")
    return endpoint


PERMISSIONS = [platform_scope(WEBHOOKS_WRITE)]
TAGS = ["webhook endpoints"]


@extend_schema(
    methods=["GET"],
    operation_id="webhook_endpoints_list",
    summary="List webhook endpoints",
    tags=TAGS,
    responses={200: WebhookEndpointList, **error_responses(401, 403)},
)
@extend_schema(
    methods=["POST"],
    operation_id="webhook_endpoints_create",
    summary="Add a webhook endpoint",
    description="Answers the endpoint with its signing secret (`whsec_...`), shown only here. Deliveries "
    "are signed per the Standard Webhooks specification with it.",
    tags=TAGS,
    request=WebhookEndpointCreate,
    responses={201: WebhookEndpointCreatedSerializer, **error_responses(400, 401, 403, 415)},
    examples=[
        OpenApiExample(
            "Payments and tenants",
            value={
                "url": "https://app.example.com/hooks/billing",
                "event_types": ["payment.failed", "tenant.suspended"],
                "description": "our app",
            },
            request_only=True,
        )
    ],
)
@api_view(["GET", "POST"])
@permission_classes(PERMISSIONS)
def webhook_endpoints(request):
    if request.method == "GET":
        endpoints = WebhookEndpoint.objects.order_by("pk")
        return Response({"endpoints": WebhookEndpointSerializer(endpoints, many=True).data})
    data = _valid(WebhookEndpointCreate, request.data)
    endpoint = _service(lambda: webhook_endpoint_create(**data))
    return Response(WebhookEndpointCreatedSerializer(endpoint).data, status=status.HTTP_201_CREATED)


@extend_schema(
    methods=["GET"],
    operation_id="webhook_endpoints_retrieve",
    summary="A webhook endpoint",
    tags=TAGS,
    responses={200: WebhookEndpointSerializer, **error_responses(401, 403, 404)},
)
@extend_schema(
    methods=["PATCH"],
    operation_id="webhook_endpoints_update",
    summary="Change a webhook endpoint",
    description="Any of url, event_types, description, enabled. Enabling clears the disabled reason and "
    "its open deliveries resume.",
    tags=TAGS,
    request=WebhookEndpointChange,
    responses={200: WebhookEndpointSerializer, **error_responses(400, 401, 403, 404, 415)},
)
@extend_schema(
    methods=["DELETE"],
    operation_id="webhook_endpoints_destroy",
    summary="Remove a webhook endpoint",
    description="Its pending deliveries and its delivery log go with it.",
    tags=TAGS,
    responses={204: None, **error_responses(401, 403, 404)},
)
@api_view(["GET", "PATCH", "DELETE"])
@permission_classes(PERMISSIONS)
def webhook_endpoint(request, endpoint_id: int):
    endpoint = _endpoint(endpoint_id)
    if request.method == "DELETE":
        webhook_endpoint_delete(endpoint=endpoint)
        return Response(status=status.HTTP_204_NO_CONTENT)
    if request.method == "PATCH":
        changes = _valid(WebhookEndpointChange, request.data)
        endpoint = _service(lambda: webhook_endpoint_update(endpoint=endpoint, **changes))
    return Response(WebhookEndpointSerializer(endpoint).data)
