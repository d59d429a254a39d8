import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Literal

from django.core.validators import RegexValidator
from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import exceptions, serializers, status
from rest_framework.decorators import api_view, permission_classes
from rest_framework.response import Response

from core.api_schema import error_responses
from core.api_scopes import TENANTS_WRITE, platform_scope
from core.json_input import printable, text_problem
from core.pagination import MAX_OFFSET, offset_page
from tenants.authentication import request_tenant
from tenants.models import APIGATEWAY_KEY_ID_MAX_LENGTH, Tenant, TenantAPIKey
from tenants.selectors import tenant_by_api_ref
from tenants.services import (
    TenantError,
    api_key_issue,
    api_key_revoke,
    tenant_change_plan,
    tenant_create,
    tenant_reactivate,
    tenant_suspend,
    tenant_update,
)


class TenantSerializer(serializers.ModelSerializer):
    class Meta:
        model = Tenant
        fields = ["id", "name", "slug", "status", "plan", "monthly_free_allowance", "created_at"]
        read_only_fields = fields


class TenantApiKeySerializer(serializers.Serializer):
    name = serializers.CharField()
    prefix = serializers.CharField()


class TenantMeSerializer(TenantSerializer):
    api_key = serializers.SerializerMethodField()

    class Meta(TenantSerializer.Meta):
        fields = [*TenantSerializer.Meta.fields, "api_key"]
        read_only_fields = fields

    @extend_schema_field(TenantApiKeySerializer)
    def get_api_key(self, obj) -> dict:
        api_key = self.context["api_key"]
        return {"name": api_key.name, "prefix": api_key.prefix}


@extend_schema(
    summary="The calling tenant",
    description="Returns the tenant the API key belongs to, so a client can test its key.",
    responses={200: TenantMeSerializer, **error_responses(401, 403)},
)
@api_view(["GET"])
def tenant_me(request):
    serializer = TenantMeSerializer(request_tenant(request), context={"api_key": request.auth})
    return Response(serializer.data)


# --- Provisioning: the SaaS's backend with a platform key (tenants:write) ------------------------
#
# Every change goes through the same services as the admin and the commands, with the platform key
# as the actor and "api" as the source, so the tenant's history names the key.

PERMISSIONS = [platform_scope(TENANTS_WRITE)]
TAGS = ["provisioning"]
MAX_PAGE = 200
REF_PARAMETER = OpenApiParameter(
    "ref",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="The tenant's external id (the SaaS's own customer id) or, failing that, its slug.",
)
REASON_HELP = "Why (optional): kept in the tenant's history."


def _text_ok(value: str) -> None:
    if problem := text_problem(value):
        raise serializers.ValidationError(problem)


DECIMAL_TEXT = re.compile(r"\d+(\.\d+)?", re.ASCII)


class StrictCharField(serializers.CharField):
    """Text only: DRF's CharField would take 0 or true as "0" or "True"."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictSlugField(StrictCharField, serializers.SlugField):
    pass


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "pattern": r"^\d+(\.\d+)?$"},
            {"type": "number", "minimum": 0},
        ],
        "description": "A decimal: a string (exact) or a number; at most 14 digits before the point "
        "and 6 after.",
    }
)
class DecimalInputField(serializers.DecimalField):
    """A decimal as the schema says it: digits with an optional fraction in a string, or a JSON number
    (DRF alone would also take " 5", "1e3" or true)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, str | int | float):
            self.fail("invalid")
        if isinstance(data, str) and not DECIMAL_TEXT.fullmatch(data):
            raise serializers.ValidationError(
                "Enter a decimal such as 1000 or 12.5 (digits, an optional point)."
            )
        return super().to_internal_value(data)


class _StrictSerializer(serializers.Serializer):
    def to_internal_value(self, data):
        # A typo (`free_allowance` for `monthly_free_allowance`) is refused, not silently ignored.
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({printable(name): ["unknown field"] for name in unknown})
        return super().to_internal_value(data)


def _allowance_field(**kwargs) -> serializers.DecimalField:
    column = Tenant._meta.get_field("monthly_free_allowance")
    return DecimalInputField(
        max_digits=column.max_digits,
        decimal_places=column.decimal_places,
        min_value=Decimal(0),
        help_text="Free units of each meter per calendar month (UTC); a decimal string or number.",
        **kwargs,
    )


def _external_id_field(**kwargs) -> serializers.CharField:
    # Not trimmed: " cus_1" is refused (tenants.services.external_id_clean), not stored as another id.
    return StrictCharField(
        max_length=255,
        trim_whitespace=False,
        allow_null=True,
        validators=[_text_ok],
        help_text="The SaaS's own id for this customer: unique, never another tenant's slug; printable, "
        "no leading or trailing space.",
        **kwargs,
    )


# As the schema states it ($, not \Z: JSON Schema's regexes have no \Z); a trailing newline that `$`
# lets through is refused by tenants.services.apigateway_key_id_clean, naming the same field.
APIGATEWAY_KEY_ID_SCHEMA_PATTERN = r"^[A-Za-z0-9]+$"


def _apigateway_key_id_field(**kwargs) -> serializers.CharField:
    return StrictCharField(
        max_length=APIGATEWAY_KEY_ID_MAX_LENGTH,
        trim_whitespace=False,
        allow_null=True,
        validators=[
            RegexValidator(
                APIGATEWAY_KEY_ID_SCHEMA_PATTERN, "Enter an API Gateway key id: letters and digits."
            )
        ],
        help_text="The id (not the value) of the tenant's API key at AWS API Gateway: unique, letters and "
        "digits. The key is placed in the usage plan of the tenant's plan (suspended: in none); null "
        "clears it.",
        **kwargs,
    )


class ProvisionedTenantSerializer(serializers.ModelSerializer):
    stripe_customer = serializers.CharField(
        source="stripe_customer_id",
        allow_null=True,
        help_text="The tenant's Stripe customer id (cus_...), once onboarded.",
    )

    class Meta:
        model = Tenant
        fields = [
            "id",
            "external_id",
            "slug",
            "name",
            "status",
            "plan",
            "monthly_free_allowance",
            "apigateway_key_id",
            "stripe_customer",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class KeyRequest(_StrictSerializer):
    name = StrictCharField(
        max_length=50, default="api", validators=[_text_ok], help_text="A name for the key (default api)."
    )


class IssuedKeySerializer(serializers.Serializer):
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="Public; names the key in the list and to revoke it.")
    key = serializers.CharField(help_text="The whole key, shown only in this answer: store it now.")
    created = serializers.DateTimeField()


class TenantCreateRequest(_StrictSerializer):
    name = StrictCharField(max_length=200, validators=[_text_ok])
    external_id = _external_id_field(required=False, default=None)
    slug = StrictSlugField(max_length=64, required=False, help_text="Default: made from the name. Unique.")
    plan = serializers.ChoiceField(choices=Tenant.Plan.choices, default=Tenant.Plan.FREE)
    monthly_free_allowance = _allowance_field(default=Decimal(0))
    apigateway_key_id = _apigateway_key_id_field(required=False, default=None)
    api_key = KeyRequest(
        required=False, help_text="Issue the tenant's first key in the same call (shown once in the answer)."
    )


class TenantCreatedSerializer(ProvisionedTenantSerializer):
    api_key = IssuedKeySerializer(
        required=False, help_text="Only when the request asked for one: its secret, shown only here."
    )

    class Meta(ProvisionedTenantSerializer.Meta):
        fields = [*ProvisionedTenantSerializer.Meta.fields, "api_key"]
        read_only_fields = fields


class TenantChangeRequest(_StrictSerializer):
    name = StrictCharField(max_length=200, required=False, validators=[_text_ok])
    plan = serializers.ChoiceField(choices=Tenant.Plan.choices, required=False)
    monthly_free_allowance = _allowance_field(required=False)
    external_id = _external_id_field(required=False)
    apigateway_key_id = _apigateway_key_id_field(required=False)
    reason = StrictCharField(
        max_length=500,
        required=False,
        allow_blank=True,
        default="",
        validators=[_text_ok],
        help_text=REASON_HELP,
    )


class TenantListQuery(serializers.Serializer):
    external_id = serializers.CharField(
        max_length=255,
        required=False,
        trim_whitespace=False,
        validators=[_text_ok],
        help_text="Exactly this id.",
    )
    status = serializers.ChoiceField(choices=Tenant.Status.choices, required=False)
    plan = serializers.ChoiceField(choices=Tenant.Plan.choices, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=MAX_PAGE, default=50, help_text="Page size.")
    offset = serializers.IntegerField(min_value=0, max_value=MAX_OFFSET, default=0)


class TenantPage(serializers.Serializer):
    count = serializers.IntegerField(help_text="Tenants matching the filters, on all pages.")
    next = serializers.URLField(allow_null=True, help_text="The next page, or null on the last.")
    results = ProvisionedTenantSerializer(many=True)


class StatusRequest(_StrictSerializer):
    reason = StrictCharField(
        max_length=500,
        required=False,
        allow_blank=True,
        default="",
        validators=[_text_ok],
        help_text=REASON_HELP,
    )


class StatusAnswer(serializers.Serializer):
    tenant = ProvisionedTenantSerializer()
    changed = serializers.BooleanField(help_text="false: the tenant already was in that state.")


class TenantKeySerializer(serializers.ModelSerializer):
    state = serializers.SerializerMethodField()

    class Meta:
        model = TenantAPIKey
        fields = ["name", "prefix", "state", "created", "last_used_at", "revoked_at", "expiry_date"]
        read_only_fields = fields

    def get_state(self, obj) -> Literal["active", "expired", "revoked"]:
        return "revoked" if obj.revoked else "expired" if obj.has_expired else "active"


class TenantKeyList(serializers.Serializer):
    keys = TenantKeySerializer(many=True)


def _valid(serializer_class, data):
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _service(call, *, within: str | None = None):
    """A service's TenantError as the API's 400 naming the field (inside `within` when given)."""
    try:
        return call()
    except TenantError as exc:
        detail = {exc.field or "non_field_errors": [str(exc)]}
        raise exceptions.ValidationError({within: detail} if within else detail) from None


def _tenant(ref: str) -> Tenant:
    try:
        return tenant_by_api_ref(ref=ref)
    except Tenant.DoesNotExist as exc:
        raise exceptions.NotFound(str(exc)) from None


def _issued(issued) -> dict:
    return {
        "name": issued.api_key.name,
        "prefix": issued.api_key.prefix,
        "key": issued.secret,
        "created": issued.api_key.created,
    }


@extend_schema(
    methods=["GET"],
    operation_id="tenants_list",
    summary="List tenants",
    description="Ordered by id; `?external_id=` finds the tenant of one of the SaaS's customers.",
    tags=TAGS,
    parameters=[TenantListQuery],
    responses={200: TenantPage, **error_responses(400, 401, 403)},
)
@extend_schema(
    methods=["POST"],
    operation_id="tenants_create",
    summary="Create a tenant",
    description="Creates the tenant (history: created, by this platform key). With "
    '`"api_key": {"name": ...}` its first key is issued in the same transaction and shown once in '
    "the answer. 400 names the field: a taken slug or external id, an external id equal to another "
    "tenant's slug, a bad plan or allowance.",
    tags=TAGS,
    request=TenantCreateRequest,
    responses={201: TenantCreatedSerializer, **error_responses(400, 401, 403, 415)},
    examples=[
        OpenApiExample(
            "With a first key",
            value={
                "name": "Acme Analytics",
                "external_id": "cus_8812",
                "plan": "metered",
                "monthly_free_allowance": "1000",
                "api_key": {"name": "production"},
            },
            request_only=True,
        )
    ],
)
@api_view(["GET", "POST"])
@permission_classes(PERMISSIONS)
def tenants(request):
    if request.method == "GET":
        return _tenant_list(request)
    data = dict(_valid(TenantCreateRequest, request.data))
    key_request = data.pop("api_key", None)
    with transaction.atomic():  # a tenant without the key it asked for is not made
        tenant = _service(lambda: tenant_create(**data, actor=request.auth, source="api"))
        issued = (
            _service(
                lambda: api_key_issue(
                    tenant=tenant, name=key_request["name"], actor=request.auth, source="api"
                ),
                within="api_key",
            )
            if key_request is not None
            else None
        )
    body = ProvisionedTenantSerializer(tenant).data
    if issued is not None:
        body["api_key"] = _issued(issued)
    return Response(body, status=status.HTTP_201_CREATED)


def _tenant_list(request):
    # A plain dict: DRF reads an empty form value ("?status=") as absent; here it is refused.
    query = TenantListQuery(data=request.query_params.dict())
    query.is_valid(raise_exception=True)
    filters = {
        name: query.validated_data[name]
        for name in ("external_id", "status", "plan")
        if name in query.validated_data
    }
    page = offset_page(
        request,
        Tenant.objects.filter(**filters).order_by("pk"),
        limit=query.validated_data["limit"],
        offset=query.validated_data["offset"],
    )
    return Response(
        {
            "count": page.count,
            "next": page.next,
            "results": ProvisionedTenantSerializer(page.rows, many=True).data,
        }
    )


@extend_schema(
    methods=["GET"],
    operation_id="tenants_retrieve",
    summary="A tenant",
    tags=TAGS,
    parameters=[REF_PARAMETER],
    responses={200: ProvisionedTenantSerializer, **error_responses(401, 403, 404)},
)
@extend_schema(
    methods=["PATCH"],
    operation_id="tenants_update",
    summary="Change a tenant",
    description="Any of name, plan, monthly_free_allowance, external_id, apigateway_key_id (null clears "
    "either id). Every change "
    "leaves a history row naming this platform key (and `reason`); all are checked before any is "
    "made. Status changes with /suspend and /reactivate.",
    tags=TAGS,
    parameters=[REF_PARAMETER],
    request=TenantChangeRequest,
    responses={200: ProvisionedTenantSerializer, **error_responses(400, 401, 403, 404, 415)},
    examples=[
        OpenApiExample(
            "Upgrade",
            value={"plan": "metered", "monthly_free_allowance": "5000", "reason": "signed the annual deal"},
            request_only=True,
        )
    ],
)
@api_view(["GET", "PATCH"])
@permission_classes(PERMISSIONS)
def tenant_detail(request, ref: str):
    tenant = _tenant(ref)
    if request.method == "PATCH":
        changes = dict(_valid(TenantChangeRequest, request.data))
        reason, plan = changes.pop("reason"), changes.pop("plan", None)
        with transaction.atomic():
            _service(
                lambda: tenant_update(
                    tenant=tenant, **changes, actor=request.auth, source="api", reason=reason
                )
            )
            if plan is not None:
                tenant_change_plan(tenant=tenant, plan=plan, actor=request.auth, source="api", reason=reason)
        tenant.refresh_from_db()
    return Response(ProvisionedTenantSerializer(tenant).data)


def _status_view(change, *, operation_id: str, summary: str, description: str):
    @extend_schema(
        operation_id=operation_id,
        summary=summary,
        description=description + " Idempotent: `changed` is false when the tenant already was so.",
        tags=TAGS,
        parameters=[REF_PARAMETER],
        request=StatusRequest,
        responses={200: StatusAnswer, **error_responses(400, 401, 403, 404, 415)},
    )
    @api_view(["POST"])
    @permission_classes(PERMISSIONS)
    def view(request, ref: str):
        tenant = _tenant(ref)
        reason = _valid(StatusRequest, request.data)["reason"]
        changed = change(tenant=tenant, actor=request.auth, source="api", reason=reason)
        return Response({"tenant": ProvisionedTenantSerializer(tenant).data, "changed": changed})

    return view


tenant_suspend_view = _status_view(
    tenant_suspend,
    operation_id="tenants_suspend",
    summary="Suspend a tenant",
    description="Its keys get 403 from then on; its events are refused.",
)
tenant_reactivate_view = _status_view(
    tenant_reactivate,
    operation_id="tenants_reactivate",
    summary="Reactivate a tenant",
    description="Its keys work again.",
)


@extend_schema(
    methods=["GET"],
    operation_id="tenant_keys_list",
    summary="A tenant's API keys",
    description="Names and prefixes (never the secrets), active and revoked, oldest first.",
    tags=TAGS,
    parameters=[REF_PARAMETER],
    responses={200: TenantKeyList, **error_responses(401, 403, 404)},
)
@extend_schema(
    methods=["POST"],
    operation_id="tenant_keys_create",
    summary="Issue a tenant API key",
    description="The whole key is in this answer only; store it now (only its hash is kept).",
    tags=TAGS,
    parameters=[REF_PARAMETER],
    request=KeyRequest,
    responses={201: IssuedKeySerializer, **error_responses(400, 401, 403, 404, 415)},
)
@api_view(["GET", "POST"])
@permission_classes(PERMISSIONS)
def tenant_keys(request, ref: str):
    tenant = _tenant(ref)
    if request.method == "GET":
        keys = TenantAPIKey.objects.filter(tenant=tenant).order_by("created", "pk")
        return Response({"keys": TenantKeySerializer(keys, many=True).data})
    name = _valid(KeyRequest, request.data)["name"]
    issued = _service(lambda: api_key_issue(tenant=tenant, name=name, actor=request.auth, source="api"))
    return Response(_issued(issued), status=status.HTTP_201_CREATED)


@extend_schema(
    operation_id="tenant_keys_revoke",
    summary="Revoke a tenant API key",
    description="Calls with it get 401 from then on. Idempotent (a revoked key answers 204 again); "
    "404 when the prefix is not one of this tenant's keys.",
    tags=TAGS,
    parameters=[
        REF_PARAMETER,
        OpenApiParameter(
            "prefix", OpenApiTypes.STR, OpenApiParameter.PATH, description="The key's prefix (public)."
        ),
    ],
    responses={204: None, **error_responses(401, 403, 404)},
)
@api_view(["DELETE"])
@permission_classes(PERMISSIONS)
def tenant_key_revoke(request, ref: str, prefix: str):
    tenant = _tenant(ref)
    api_key = (
        TenantAPIKey.objects.filter(tenant=tenant, prefix=prefix).select_related("tenant").first()
        if len(prefix) <= 16 and text_problem(prefix) is None
        else None
    )
    if api_key is None:
        raise exceptions.NotFound(
            f"tenant {tenant.slug} has no API key with prefix {printable(prefix, 20)!r}"
        )
    api_key_revoke(api_key=api_key, actor=request.auth, source="api")
    return Response(status=status.HTTP_204_NO_CONTENT)
