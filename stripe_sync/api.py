"""Stripe endpoints: `POST /api/v1/billing/checkout` (a tenant key) and
`POST /api/v1/tenants/{ref}/onboard` (provisioning, a platform key; here because tenants must not
import stripe_sync)."""

import stripe
from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import exceptions, serializers, status
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.response import Response

from core.api_errors import error_body
from core.api_schema import error_responses
from core.api_scopes import TENANTS_WRITE, platform_scope
from stripe_sync.catalog import OnboardingError, stripe_error_message
from stripe_sync.checkout import (
    MAX_RETURN_URL_LENGTH,
    AlreadySubscribed,
    checkout_session_create,
    return_url_problem,
)
from stripe_sync.client import StripeNotConfigured
from stripe_sync.onboarding import tenant_onboard
from tenants.authentication import ApiKeyAuthentication, IsActiveTenant, request_tenant
from tenants.models import Tenant
from tenants.selectors import tenant_by_api_ref


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


# What a tenant's billing call may meet at Stripe, answered by `stripe_failure_answer`.
STRIPE_FAILURES = (StripeNotConfigured, OnboardingError, stripe.StripeError)


def stripe_failure_answer(exc: Exception) -> Response:
    """The one mapping of a tenant billing call's Stripe failure to an answer: 503 when Stripe is not
    configured or billing is not set up (no metered price), 502 when Stripe refuses or does not answer."""
    if isinstance(exc, StripeNotConfigured):
        return Response(
            error_body("stripe_not_configured", "Billing is not available: Stripe is not configured."),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    if isinstance(exc, OnboardingError):
        return Response(
            error_body("billing_not_set_up", str(exc)), status=status.HTTP_503_SERVICE_UNAVAILABLE
        )
    if isinstance(exc, stripe.StripeError):
        return Response(
            error_body("stripe_error", stripe_error_message(exc)), status=status.HTTP_502_BAD_GATEWAY
        )
    raise TypeError(f"not a Stripe failure: {type(exc).__name__}") from exc


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
    except AlreadySubscribed as exc:
        return Response(error_body("already_subscribed", f"{exc}."), status=status.HTTP_409_CONFLICT)
    except STRIPE_FAILURES as exc:
        return stripe_failure_answer(exc)
    return Response({"id": session.id, "url": session.url}, status=status.HTTP_201_CREATED)


class OnboardedSubscription(serializers.Serializer):
    id = serializers.CharField()
    status = serializers.CharField()


class OnboardAnswer(serializers.Serializer):
    tenant = serializers.CharField(help_text="The tenant's slug.")
    customer = serializers.CharField(help_text="Its Stripe customer id (cus_...).")
    customer_created = serializers.BooleanField(help_text="false: an existing customer was found.")
    meters = serializers.ListField(
        child=serializers.CharField(), help_text="Each meter's billing meter and price at Stripe."
    )
    subscription = OnboardedSubscription(
        allow_null=True, help_text="Its metered subscription (metered plan with prices), else null."
    )


@extend_schema(
    operation_id="tenants_onboard",
    summary="Onboard a tenant to Stripe",
    description="For a platform key with `tenants:write`; `ref` is the tenant's external id or slug. "
    "Finds or creates its Stripe customer (never two), every meter's billing meter and price, and "
    "for a tenant on the metered plan its subscription, as the admin's 'Onboard to Stripe' action "
    "does. Safe to call again. 409 when Stripe's objects conflict with the tenant's (another "
    "tenant's customer, a deleted customer); 502 when Stripe refuses or does not answer; 503 when "
    "Stripe is not configured.",
    tags=["provisioning"],
    parameters=[
        OpenApiParameter(
            "ref",
            OpenApiTypes.STR,
            OpenApiParameter.PATH,
            description="The tenant's external id (the SaaS's own customer id) or, failing that, its slug.",
        )
    ],
    request=None,
    responses={200: OnboardAnswer, **error_responses(401, 403, 404, 409, 502, 503)},
)
@api_view(["POST"])
@permission_classes([platform_scope(TENANTS_WRITE)])
def tenant_onboard_view(request, ref: str):
    try:
        tenant = tenant_by_api_ref(ref=ref)
    except Tenant.DoesNotExist as exc:
        raise exceptions.NotFound(str(exc)) from None
    try:
        result = tenant_onboard(tenant=tenant, actor=request.auth)
    except StripeNotConfigured:
        return Response(
            error_body("stripe_not_configured", "Billing is not available: Stripe is not configured."),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    except OnboardingError as exc:
        return Response(error_body("onboarding_refused", str(exc)), status=status.HTTP_409_CONFLICT)
    except stripe.StripeError as exc:
        return Response(
            error_body("stripe_error", stripe_error_message(exc)), status=status.HTTP_502_BAD_GATEWAY
        )
    subscription = result.subscription
    return Response(
        {
            "tenant": tenant.slug,
            "customer": result.customer.id,
            "customer_created": result.customer_created,
            "meters": [meter.describe() for meter in result.meters],
            "subscription": {"id": subscription.id, "status": subscription.status} if subscription else None,
        }
    )
