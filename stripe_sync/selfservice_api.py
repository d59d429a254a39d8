"""Tenant self-service (a tenant's own API key): `POST /api/v1/billing/portal`, `GET /api/v1/invoices`,
`GET /api/v1/billing/upcoming` and `GET /api/v1/billing/credits`."""

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.response import Response

from core.api_schema import error_responses
from core.pagination import MAX_OFFSET, offset_page
from stripe_sync.api import STRIPE_FAILURES, ReturnURLField, stripe_failure_answer
from stripe_sync.models import CreditGrant
from stripe_sync.selfservice import (
    TENANT_INVOICE_STATUSES,
    invoice_summary,
    portal_session_create,
    tenant_credits,
    tenant_invoices,
    upcoming_invoice,
)
from tenants.authentication import ApiKeyAuthentication, IsActiveTenant, request_tenant

TAGS = ["billing"]
MAX_PAGE = 100
TENANT_KEY_ONLY = "Takes the tenant's own API key (a platform key answers 403)."


def _tenant_endpoint(view):
    return authentication_classes([ApiKeyAuthentication])(permission_classes([IsActiveTenant])(view))


# --- portal --------------------------------------------------------------------------------------


class PortalRequest(serializers.Serializer):
    return_url = ReturnURLField(help_text="Where the portal's 'return' link sends the user.")


class PortalSessionSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The portal session (bps_...).")
    url = serializers.URLField(help_text="Send the user here; the link is short-lived and single-use.")


@extend_schema(
    operation_id="billing_portal_create",
    summary="Open the Stripe Customer Portal",
    description="A Stripe Customer Portal session for the tenant's Stripe customer (made first when "
    "missing), where its user updates the card, sees and pays invoices. `return_url` must be http(s) "
    "on a host in CHECKOUT_ALLOWED_HOSTS, as Checkout's URLs. The portal's configuration is "
    "STRIPE_PORTAL_CONFIGURATION when set, else the account's default. 502 when Stripe refuses or "
    f"does not answer; 503 when Stripe is not configured. {TENANT_KEY_ONLY}",
    tags=TAGS,
    request=PortalRequest,
    responses={201: PortalSessionSerializer, **error_responses(400, 401, 403, 415, 502, 503)},
    examples=[
        OpenApiExample(
            "Return URL", value={"return_url": "https://app.example.com/billing"}, request_only=True
        ),
        OpenApiExample(
            "Session",
            value={"id": "bps_1QabCd", "url": "https://billing.stripe.com/p/session/test_YWNjdF8x"},
            response_only=True,
            status_codes=["201"],
        ),
    ],
)
@api_view(["POST"])
@_tenant_endpoint
def billing_portal_create(request):
    form = PortalRequest(data=request.data)
    form.is_valid(raise_exception=True)
    try:
        session = portal_session_create(tenant=request_tenant(request), **form.validated_data)
    except STRIPE_FAILURES as exc:
        return stripe_failure_answer(exc)
    return Response({"id": session.id, "url": session.url}, status=status.HTTP_201_CREATED)


# --- invoices ------------------------------------------------------------------------------------


class InvoiceListQuery(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=TENANT_INVOICE_STATUSES, required=False, help_text="Only invoices in this status."
    )
    limit = serializers.IntegerField(min_value=1, max_value=MAX_PAGE, default=20, help_text="Page size.")
    offset = serializers.IntegerField(min_value=0, max_value=MAX_OFFSET, default=0)


class InvoiceSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="Stripe's invoice id (in_...).")
    number = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(choices=TENANT_INVOICE_STATUSES)
    currency = serializers.CharField(help_text="Lower case ISO code.")
    period_start = serializers.DateTimeField(allow_null=True)
    period_end = serializers.DateTimeField(allow_null=True)
    amount_due = serializers.IntegerField(help_text="Minor units (cents), as Stripe counts them.")
    amount_paid = serializers.IntegerField(help_text="Minor units.")
    amount_remaining = serializers.IntegerField(help_text="Minor units.")
    subtotal = serializers.IntegerField(help_text="Minor units.")
    total = serializers.IntegerField(help_text="Minor units.")
    hosted_invoice_url = serializers.URLField(allow_null=True, help_text="Stripe's page to view and pay it.")
    invoice_pdf = serializers.URLField(allow_null=True)
    created = serializers.DateTimeField()
    due_date = serializers.DateTimeField(allow_null=True)


class InvoicePage(serializers.Serializer):
    count = serializers.IntegerField(help_text="Invoices matching the filter, on all pages.")
    next = serializers.URLField(allow_null=True, help_text="The next page, or null on the last.")
    results = InvoiceSerializer(many=True)


INVOICE_EXAMPLE = {
    "id": "in_1QabCdEf",
    "number": "A1B2C3D4-0003",
    "status": "paid",
    "currency": "usd",
    "period_start": "2026-10-01T00:00:00Z",
    "period_end": "2026-11-01T00:00:00Z",
    "amount_due": 4250,
    "amount_paid": 4250,
    "amount_remaining": 0,
    "subtotal": 4250,
    "total": 4250,
    "hosted_invoice_url": "https://invoice.stripe.com/i/acct_1/test_YWNjdF8x",
    "invoice_pdf": "https://pay.stripe.com/invoice/acct_1/test_YWNjdF8x/pdf",
    "created": "2026-11-01T01:04:12Z",
    "due_date": None,
}


@extend_schema(
    operation_id="invoices_list",
    summary="The tenant's invoices",
    description="The tenant's finalized invoices (open, paid, uncollectible, void; drafts are not "
    "shown) from the platform's mirror of Stripe, which Stripe's invoice.* webhooks and `sync_stripe` "
    "keep current; newest first. Amounts are integers in the currency's minor unit, as Stripe's. A "
    f"tenant not onboarded to Stripe has none. {TENANT_KEY_ONLY}",
    tags=TAGS,
    parameters=[InvoiceListQuery],
    responses={200: InvoicePage, **error_responses(400, 401, 403)},
    examples=[
        OpenApiExample(
            "A page",
            value={"count": 1, "next": None, "results": [INVOICE_EXAMPLE]},
            response_only=True,
            status_codes=["200"],
        )
    ],
)
@api_view(["GET"])
@_tenant_endpoint
def invoice_list(request):
    # A plain dict: DRF reads an empty form value ("?status=") as absent; here it is refused.
    query = InvoiceListQuery(data=request.query_params.dict())
    query.is_valid(raise_exception=True)
    page = offset_page(
        request,
        tenant_invoices(tenant=request_tenant(request), status=query.validated_data.get("status")),
        limit=query.validated_data["limit"],
        offset=query.validated_data["offset"],
    )
    return Response(
        {"count": page.count, "next": page.next, "results": [invoice_summary(row) for row in page.rows]}
    )


# --- the coming invoice --------------------------------------------------------------------------


class UpcomingLineSerializer(serializers.Serializer):
    description = serializers.CharField()
    price = serializers.CharField(allow_null=True, help_text="The Stripe price (price_...), when known.")
    meter = serializers.CharField(
        allow_null=True, help_text="The platform's meter code, when the line is one."
    )
    quantity = serializers.DecimalField(
        max_digits=None,
        decimal_places=None,
        allow_null=True,
        help_text="Billed quantity, as a decimal string.",
    )
    amount = serializers.IntegerField(help_text="Minor units.")


class UpcomingInvoiceSerializer(serializers.Serializer):
    source = serializers.ChoiceField(
        choices=["stripe", "estimate"],
        help_text="`stripe`: Stripe's invoice preview. `estimate`: the platform's own pricing of this "
        "month's usage, when there is no live subscription or Stripe cannot be reached (see `note`).",
    )
    note = serializers.CharField(allow_null=True, help_text="Why this is an estimate; null from Stripe.")
    currency = serializers.CharField(allow_null=True, help_text="Null for an estimate with no priced meter.")
    period_start = serializers.DateTimeField(allow_null=True)
    period_end = serializers.DateTimeField(allow_null=True)
    subtotal = serializers.IntegerField(help_text="Minor units.")
    total = serializers.IntegerField(help_text="Minor units.")
    amount_due = serializers.IntegerField(help_text="Minor units.")
    credit_applied = serializers.IntegerField(
        allow_null=True, help_text="Billing credit Stripe applies (minor units); null for an estimate."
    )
    lines = UpcomingLineSerializer(many=True)


@extend_schema(
    operation_id="billing_upcoming",
    summary="The coming invoice",
    description="Stripe's preview of the next invoice of the tenant's live metered subscription "
    '(`"source": "stripe"`). When the tenant has no live subscription, or Stripe cannot be reached '
    "(not configured, no answer, a 5xx or 429, the circuit breaker open), the answer is still 200 "
    'with `"source": "estimate"`: the platform\'s pricing of the current UTC month\'s aggregated '
    "usage, and `note` says why. 502 only when Stripe answers that the request itself is wrong. "
    f"{TENANT_KEY_ONLY}",
    tags=TAGS,
    responses={200: UpcomingInvoiceSerializer, **error_responses(401, 403, 502)},
    examples=[
        OpenApiExample(
            "From Stripe",
            value={
                "source": "stripe",
                "note": None,
                "currency": "usd",
                "period_start": "2026-11-01T00:00:00Z",
                "period_end": "2026-12-01T00:00:00Z",
                "subtotal": 1200,
                "total": 700,
                "amount_due": 700,
                "credit_applied": 500,
                "lines": [
                    {
                        "description": "API calls (at $0.005 per call)",
                        "price": "price_1QabCd",
                        "meter": "api_calls",
                        "quantity": "2400",
                        "amount": 1200,
                    }
                ],
            },
            response_only=True,
            status_codes=["200"],
        ),
        OpenApiExample(
            "Estimate",
            value={
                "source": "estimate",
                "note": "Stripe's invoice preview is not available (Stripe did not answer): this is the "
                "platform's estimate of the current month from its hourly usage, before any credit.",
                "currency": "usd",
                "period_start": "2026-11-01T00:00:00Z",
                "period_end": "2026-12-01T00:00:00Z",
                "subtotal": 1200,
                "total": 1200,
                "amount_due": 1200,
                "credit_applied": None,
                "lines": [
                    {
                        "description": "API calls: 2400 billable of 3400",
                        "price": "price_1QabCd",
                        "meter": "api_calls",
                        "quantity": "2400",
                        "amount": 1200,
                    }
                ],
            },
            response_only=True,
            status_codes=["200"],
        ),
    ],
)
@api_view(["GET"])
@_tenant_endpoint
def billing_upcoming(request):
    try:
        return Response(upcoming_invoice(tenant=request_tenant(request)))
    except STRIPE_FAILURES as exc:
        return stripe_failure_answer(exc)


# --- credits -------------------------------------------------------------------------------------


class CreditBalanceSerializer(serializers.Serializer):
    available = serializers.IntegerField(help_text="Credit that can still be applied (minor units).")
    ledger = serializers.IntegerField(help_text="Credit granted less credit applied (minor units).")
    currency = serializers.CharField()


class CreditGrantSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The platform's grant id.")
    amount = serializers.IntegerField(help_text="Minor units.")
    currency = serializers.CharField()
    category = serializers.ChoiceField(choices=CreditGrant.Category.values)
    status = serializers.ChoiceField(choices=CreditGrant.Status.values)
    expires_at = serializers.DateTimeField(allow_null=True)
    created = serializers.DateTimeField()


class CreditsSerializer(serializers.Serializer):
    balance = CreditBalanceSerializer(
        allow_null=True,
        help_text="At Stripe, for metered prices: the first currency's balance (null when Stripe "
        "cannot be reached, or the tenant has no Stripe customer; see `note`).",
    )
    balances = CreditBalanceSerializer(many=True, allow_null=True, help_text="Every currency's balance.")
    note = serializers.CharField(allow_null=True)
    grants = CreditGrantSerializer(many=True, help_text="Credit granted to the tenant, newest first.")


@extend_schema(
    operation_id="billing_credits",
    summary="The tenant's billing credit",
    description="Its credit balance for metered prices at Stripe (credit grants) and the grants an "
    "operator made, with their status (`pending` until Stripe has answered, `active`, `failed`, "
    "`voided`, `expired`). When Stripe cannot be reached the grants are still listed with 200, "
    f"`balance` is null and `note` says why. 502 when Stripe refuses the request. {TENANT_KEY_ONLY}",
    tags=TAGS,
    responses={200: OpenApiResponse(CreditsSerializer), **error_responses(401, 403, 502)},
    examples=[
        OpenApiExample(
            "Balance",
            value={
                "balance": {"available": 4500, "ledger": 4500, "currency": "usd"},
                "balances": [{"available": 4500, "ledger": 4500, "currency": "usd"}],
                "note": None,
                "grants": [
                    {
                        "id": 12,
                        "amount": 5000,
                        "currency": "usd",
                        "category": "promotional",
                        "status": "active",
                        "expires_at": "2027-01-01T00:00:00Z",
                        "created": "2026-11-03T09:12:44Z",
                    }
                ],
            },
            response_only=True,
            status_codes=["200"],
        )
    ],
)
@api_view(["GET"])
@_tenant_endpoint
def billing_credits(request):
    try:
        body = tenant_credits(tenant=request_tenant(request))
    except STRIPE_FAILURES as exc:
        return stripe_failure_answer(exc)
    return Response(CreditsSerializer(body).data)
