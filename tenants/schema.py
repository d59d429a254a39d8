"""OpenAPI description of the API key scheme (drf-spectacular)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <prefix>.<secret>` or `Bearer <prefix>.<secret>`: a tenant's key "
            "(acts as that tenant) or a platform key `plat_...` (the SaaS's backend; names tenants, "
            "limited to its scopes).",
        }
