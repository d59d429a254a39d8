from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.response import Response

from core.api_schema import error_responses
from tenants.authentication import request_tenant
from tenants.models import Tenant


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
