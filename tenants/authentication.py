"""DRF authentication by `Authorization: Api-Key <prefix>.<secret>`.

A missing, malformed, unknown, wrong, expired or revoked key answers 401; a valid key of a
suspended tenant answers 403, so a client can tell "fix your key" from "talk to us".
"""

from rest_framework import authentication, exceptions, permissions

from core.logging import log_context_bind
from tenants.key_cache import api_key_lookup
from tenants.models import Tenant, TenantAPIKey
from tenants.services import api_key_mark_used

KEYWORD = "Api-Key"


class TenantPrincipal:
    """What `request.user` is on tenant API calls: the tenant behind the key, not a Django user."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False

    def __init__(self, tenant: Tenant, api_key: TenantAPIKey):
        self.tenant = tenant
        self.api_key = api_key
        self.pk = None

    def __str__(self) -> str:
        return f"tenant:{self.tenant.slug}"


class TenantApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = authentication.get_authorization_header(request)
        if not header:
            return None
        try:
            header = header.decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.") from None
        scheme, _, key = header.partition(" ")
        if scheme.lower() != KEYWORD.lower():
            return None  # another scheme; DRF answers 401 "credentials were not provided"
        key = key.strip()
        prefix, dot, secret = key.partition(".")
        # Printable ASCII only: a NUL in the prefix would reach PostgreSQL (a DataError, a 500).
        if not prefix or not dot or not secret or not key.isprintable() or " " in key or len(key) > 200:
            raise exceptions.AuthenticationFailed(
                "Malformed API key: expected `Authorization: Api-Key <prefix>.<secret>`."
            )
        api_key = api_key_lookup(prefix=prefix)
        if api_key is None or not api_key.is_valid(key):
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if api_key.revoked:
            raise exceptions.AuthenticationFailed("This API key has been revoked.")
        if api_key.has_expired:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        log_context_bind(tenant=api_key.tenant.slug, tenant_id=api_key.tenant.pk)
        if not api_key.tenant.is_active:
            raise exceptions.PermissionDenied("This tenant is suspended.")
        api_key_mark_used(api_key=api_key)
        return TenantPrincipal(api_key.tenant, api_key), api_key

    def authenticate_header(self, request):
        return KEYWORD


class IsActiveTenant(permissions.BasePermission):
    """Allows only calls authenticated as an active tenant."""

    message = "This tenant is suspended."

    def has_permission(self, request, view):
        principal = request.user
        if not isinstance(principal, TenantPrincipal):
            return False
        return principal.tenant.is_active


def request_tenant(request) -> Tenant:
    return request.user.tenant
