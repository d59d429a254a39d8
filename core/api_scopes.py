"""What an API key may do: the scopes of platform keys, and the DRF permissions that require them.

Two kinds of key call the API (tenants.authentication makes the principal): a tenant key acts as
its one tenant (`principal.tenant`, no scopes); a platform key belongs to the SaaS's own backend,
names tenants itself and may do only what its scopes allow (`principal.scopes`). The permissions
here read those two attributes only, so every app may use them without importing tenants.
"""

from __future__ import annotations

from rest_framework import permissions

EVENTS_WRITE = "events:write"
TENANTS_WRITE = "tenants:write"
USAGE_READ = "usage:read"
WEBHOOKS_WRITE = "webhooks:write"

SCOPES = {
    EVENTS_WRITE: "Send usage events naming any tenant (native and Lago/OpenMeter-compatible endpoints).",
    TENANTS_WRITE: "Create, read, change, suspend, reactivate and onboard tenants; issue and revoke "
    "their keys.",
    USAGE_READ: "Read any tenant's usage.",
    WEBHOOKS_WRITE: "Manage outgoing webhook endpoints.",
}


def is_platform(principal) -> bool:
    return getattr(principal, "is_platform", False) is True


def has_scope(principal, scope: str) -> bool:
    return is_platform(principal) and scope in principal.scopes


class _ScopePermission(permissions.BasePermission):
    scope = ""
    allow_tenant_keys = False

    def has_permission(self, request, view):
        principal = request.user
        if principal is None or not getattr(principal, "is_authenticated", False):
            return False
        if is_platform(principal):
            if self.scope in principal.scopes:
                return True
            self.message = f"This platform key lacks the {self.scope!r} scope."
            return False
        tenant = getattr(principal, "tenant", None)
        if self.allow_tenant_keys and tenant is not None:
            return tenant.is_active
        self.message = (
            "This tenant is suspended."
            if self.allow_tenant_keys
            else f"This endpoint needs a platform key with the {self.scope!r} scope."
        )
        return False


def platform_scope(scope: str) -> type[permissions.BasePermission]:
    """A platform key holding `scope`; tenant keys are refused (403)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    return type(f"PlatformScope_{scope.replace(':', '_')}", (_ScopePermission,), {"scope": scope})


def tenant_or_platform_scope(scope: str) -> type[permissions.BasePermission]:
    """An active tenant's own key, or a platform key holding `scope` (which then names a tenant)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    return type(
        f"TenantOrPlatformScope_{scope.replace(':', '_')}",
        (_ScopePermission,),
        {"scope": scope, "allow_tenant_keys": True},
    )
