"""DRF authentication by API key: `Authorization: Api-Key <prefix>.<secret>` or `Bearer <prefix>.<secret>`.

Two kinds of key (core.api_scopes): a tenant key acts as its tenant (TenantPrincipal); a platform
key (`plat_...`) belongs to the SaaS's own backend and names tenants itself (PlatformPrincipal).
A missing, malformed, unknown, wrong, expired or revoked key answers 401; a valid key of a
suspended tenant answers 403, so a client can tell "fix your key" from "talk to us".
"""

from rest_framework import authentication, exceptions, permissions

from core.logging import log_context_bind
from tenants.key_cache import api_key_lookup
from tenants.models import PlatformAPIKey, Tenant, TenantAPIKey
from tenants.selectors import tenant_by_api_ref
from tenants.services import api_key_mark_used

KEYWORD = "Api-Key"
SCHEMES = {"api-key", "bearer"}


class TenantPrincipal:
    """What `request.user` is on calls with a tenant key: the tenant behind the key, not a Django user."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_platform = False
    scopes = frozenset()

    def __init__(self, tenant: Tenant, api_key: TenantAPIKey):
        self.tenant = tenant
        self.api_key = api_key
        self.pk = None

    def __str__(self) -> str:
        return f"tenant:{self.tenant.slug}"


class PlatformPrincipal:
    """What `request.user` is on calls with a platform key: the SaaS's backend, with its scopes."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_platform = True
    tenant = None

    def __init__(self, api_key: PlatformAPIKey):
        self.api_key = api_key
        self.scopes = frozenset(api_key.scopes or ())
        self.pk = None

    def __str__(self) -> str:
        return f"platform-key:{self.api_key.prefix}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = authentication.get_authorization_header(request)
        if not header:
            return None
        try:
            header = header.decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.") from None
        scheme, _, key = header.partition(" ")
        if scheme.lower() not in SCHEMES:
            return None  # another scheme; DRF answers 401 "credentials were not provided"
        key = key.strip()
        prefix, dot, secret = key.partition(".")
        # Printable ASCII only: a NUL in the prefix would reach PostgreSQL (a DataError, a 500).
        if not prefix or not dot or not secret or not key.isprintable() or " " in key or len(key) > 200:
            raise exceptions.AuthenticationFailed(
                "Malformed API key: expected `Authorization: Api-Key <prefix>.<secret>` "
                "(or `Bearer <prefix>.<secret>`)."
            )
        api_key = api_key_lookup(prefix=prefix)
        if api_key is None or not api_key.is_valid(key):
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if api_key.revoked:
            raise exceptions.AuthenticationFailed("This API key has been revoked.")
        if api_key.has_expired:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        if isinstance(api_key, PlatformAPIKey):
            log_context_bind(platform_key=api_key.prefix)
            api_key_mark_used(api_key=api_key)
            return PlatformPrincipal(api_key), api_key
        log_context_bind(tenant=api_key.tenant.slug, tenant_id=api_key.tenant.pk)
        if not api_key.tenant.is_active:
            raise exceptions.PermissionDenied("This tenant is suspended.")
        api_key_mark_used(api_key=api_key)
        return TenantPrincipal(api_key.tenant, api_key), api_key

    def authenticate_header(self, request):
        return KEYWORD


class IsActiveTenant(permissions.BasePermission):
    """Allows only calls authenticated by an active tenant's own key."""

    message = "This tenant is suspended."

    def has_permission(self, request, view):
        principal = request.user
        if isinstance(principal, PlatformPrincipal):
            self.message = "This endpoint takes a tenant's own API key, not a platform key."
            return False
        if not isinstance(principal, TenantPrincipal):
            return False
        return principal.tenant.is_active


def request_tenant(request) -> Tenant:
    """The tenant of a call made with a tenant key (views guarded by IsActiveTenant)."""
    return request.user.tenant


def request_named_tenant(request, ref: str | None, *, field: str = "tenant", active: bool = True) -> Tenant:
    """The tenant a call acts for.

    A tenant key acts as its own tenant: `ref` may be omitted or name that same tenant (by external
    id or slug); naming another is refused (403). A platform key must name one (400 when missing,
    404 when unknown). `active`: a suspended tenant is refused (403), as its own key would be.
    """
    principal = request.user
    if isinstance(principal, TenantPrincipal):
        tenant = principal.tenant
        if ref is not None and ref not in (tenant.slug, tenant.external_id):
            raise exceptions.PermissionDenied("A tenant key acts only for its own tenant.")
        return tenant
    if ref is None or ref == "":
        raise exceptions.ValidationError(
            {field: ["name the tenant (its external id or slug) with a platform key"]}
        )
    if not isinstance(ref, str):
        raise exceptions.ValidationError({field: ["must be a string: the tenant's external id or slug"]})
    try:
        tenant = tenant_by_api_ref(ref=ref)
    except Tenant.DoesNotExist as exc:
        raise exceptions.NotFound(str(exc)) from None
    if active and not tenant.is_active:
        raise exceptions.PermissionDenied("This tenant is suspended.")
    return tenant
