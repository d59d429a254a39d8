"""Tenant-facing Stripe endpoints: `POST /api/v1/billing/checkout`."""

import stripe
from django.conf import settings
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.response import Response

from core.api_errors import error_body
from core.api_schema import error_responses
from stripe_sync.catalog import OnboardingError, stripe_error_message
from stripe_sync.checkout import (
    MAX_RETURN_URL_LENGTH,
    AlreadySubscribed,
    checkout_session_create,
    return_url_problem,
)
from stripe_sync.client import StripeNotConfigured
from tenants.authentication import ApiKeyAuthentication, IsActiveTenant, request_tenant


@extend_schema_field(
    {
        "type": "string",
        "maxLength": MAX_RETURN_URL_LENGTH,
        # http(s), "//", a host[:port] without "\\", "@", "%" or spaces, then no "\\" or spaces.
        "pattern": r"^[Hh][Tt][Tt][Pp][Ss]?://[^\\@%\s/?#]+([/?#][^\\\s]*)?$",
        "description": "An http(s) URL on a host in CHECKOUT_ALLOWED_HOSTS.",
    }
)
class ReturnURLField(serializers.CharField):
    """An http(s) URL on one of settings.CHECKOUT_ALLOWED_HOSTS, read as a browser reads it (see
    stripe_sync.checkout.return_url_problem), so Checkout cannot send a tenant's user anywhere else."""

    def __init__(self, **kwargs):
        # Not trimmed: " http://localhost/" is refused, not read as another URL than the one sent.
        super().__init__(max_length=MAX_RETURN_URL_LENGTH, trim_whitespace=False, **kwargs)

    def run_validators(self, value):
        super().run_validators(value)
        problem = return_url_problem(value, settings.CHECKOUT_ALLOWED_HOSTS)
        if problem is not None:
            raise serializers.ValidationError(problem)


class CheckoutRequest(serializers.Serializer):
    success_url = ReturnURLField(help_text="Where Checkout sends the user after success.")
    cancel_url = ReturnURLField(help_text="Where Checkout sends the user who cancels.")


@extend_schema(
    summary="Start Checkout for the metered plan",
    description="Returns the URL of a Stripe Checkout page where the tenant adds a card and starts "
    "its metered subscription (the tenant's Stripe customer is made first if needed). Both URLs "
    "must be http(s) on a host in CHECKOUT_ALLOWED_HOSTS. 409 when the tenant already has a live "
    "metered subscription; 502 when Stripe refuses or does not answer; 503 when Stripe is not configured.",
    request=CheckoutRequest,
    responses={
        201: inline_serializer(
            "CheckoutSession", {"id": serializers.CharField(), "url": serializers.URLField()}
        ),
        **error_responses(400, 401, 403, 409, 415, 502, 503),
    },
    examples=[
        OpenApiExample(
            "Return URLs",
            value={
                "success_url": "https://app.example.com/billing?ok=1",
                "cancel_url": "https://app.example.com/billing",
            },
            request_only=True,
        ),
    ],
)
@api_view(["POST"])
@authentication_classes([ApiKeyAuthentication])
@permission_classes([IsActiveTenant])
def checkout_create(request):
    form = CheckoutRequest(data=request.data)
    form.is_valid(raise_exception=True)
    try:
        session = checkout_session_create(tenant=request_tenant(request), **form.validated_data)
    except StripeNotConfigured:
        return Response(
            error_body("stripe_not_configured", "Billing is not available: Stripe is not configured."),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    except AlreadySubscribed as exc:
        return Response(error_body("already_subscribed", f"{exc}."), status=status.HTTP_409_CONFLICT)
    except OnboardingError as exc:
        return Response(
            error_body("billing_not_set_up", str(exc)), status=status.HTTP_503_SERVICE_UNAVAILABLE
        )
    except stripe.StripeError as exc:
        return Response(
            error_body("stripe_error", stripe_error_message(exc)), status=status.HTTP_502_BAD_GATEWAY
        )
    return Response({"id": session.id, "url": session.url}, status=status.HTTP_201_CREATED)
