"""Reads for tenants."""

from tenants.models import Tenant


def tenant_get_by_ref(*, ref: str) -> Tenant:
    """Find a tenant by slug or numeric id, as operators type them on the command line."""
    tenant = Tenant.objects.filter(slug=ref).first()
    if tenant is None and ref.isdigit():
        tenant = Tenant.objects.filter(pk=int(ref)).first()
    if tenant is None:
        raise Tenant.DoesNotExist(f"no tenant with slug or id {ref!r}")
    return tenant
