"""POST /api/v1/stripe/webhook: Stripe's event deliveries, verified, stored once, answered at once."""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api_errors import error_body
from core.api_schema import error_responses
from stripe_sync.models import WebhookEvent
from stripe_sync.webhooks import WebhookRejected, webhook_event_receive, webhook_payload_verify


class StripeWebhookView(APIView):
    # Stripe cannot send an API key: the signature is the authentication. No throttling either:
    # Stripe paces its own deliveries and a refused one would only be retried later.
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []
    parser_classes = []  # the signature covers the exact bytes, so the raw body is read

    @extend_schema(
        operation_id="stripe_webhook",
        summary="Stripe webhook endpoint (called by Stripe)",
        description=(
            "Receives Stripe events (snapshot events and v2 thin event notifications), checks "
            "`Stripe-Signature` with the endpoint's signing secret (300 s tolerance), stores each "
            "event once per Stripe event id and processes it in the background. A repeated "
            "delivery answers 200 and changes nothing."
        ),
        auth=[],
        parameters=[
            OpenApiParameter("Stripe-Signature", OpenApiTypes.STR, OpenApiParameter.HEADER, required=True)
        ],
        request={"application/json": {"type": "object", "description": "A Stripe event, signed."}},
        responses={
            200: OpenApiResponse(
                inline_serializer(
                    "WebhookReceived",
                    {
                        "id": serializers.CharField(help_text="Stripe's event id."),
                        "status": serializers.ChoiceField(choices=WebhookEvent.Status.choices),
                        "duplicate": serializers.BooleanField(help_text="Stored by an earlier delivery."),
                    },
                ),
                description="Stored (or already stored).",
            ),
            **{
                **error_responses(413),
                400: OpenApiResponse(
                    {"$ref": "#/components/schemas/Error"},
                    description="Not a verified Stripe event: signature missing, wrong or stale, "
                    "no signing secret configured, or a body that is not a Stripe event.",
                ),
            },
        },
        tags=["stripe"],
    )
    def post(self, request):
        try:
            payload = webhook_payload_verify(
                body=request.body,
                signature=request.headers.get("Stripe-Signature"),
                secret=settings.STRIPE_WEBHOOK_SECRET,
            )
        except RequestDataTooBig:
            return Response(
                error_body("payload_too_large", "The body is too large for a Stripe event."),
                status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        except WebhookRejected as exc:
            return Response(error_body(exc.code, exc.message), status=status.HTTP_400_BAD_REQUEST)
        received = webhook_event_receive(payload=payload)
        return Response(
            {
                "id": received.event.stripe_id,
                "status": received.event.status,
                "duplicate": not received.created,
            }
        )


stripe_webhook = StripeWebhookView.as_view()
