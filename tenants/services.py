"""Writes for tenants and their API keys. Each change of plan or status leaves a TenantChange row."""

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from core.validation import row_validate, validation_error_message
from tenants.key_cache import api_key_cache_clear
from tenants.models import Tenant, TenantAPIKey, TenantChange


class TenantError(Exception):
    """A request about a tenant that cannot be carried out; the message is for the operator."""


@dataclass(frozen=True)
class IssuedKey:
    api_key: TenantAPIKey
    secret: str  # the full key; shown once and never stored


def tenant_history_record(
    *, tenant: Tenant, field: str, old: str, new: str, actor, source: str, reason: str = ""
):
    TenantChange.objects.create(
        tenant=tenant,
        field=field,
        old_value=old,
        new_value=new,
        actor=actor if getattr(actor, "pk", None) else None,
        source=source,
        reason=reason,
    )


@transaction.atomic
def tenant_create(
    *,
    name: str,
    plan: str = Tenant.Plan.FREE,
    slug: str | None = None,
    monthly_free_allowance: Decimal = Decimal("0"),
    actor=None,
    source: str = "command",
) -> Tenant:
    name = name.strip()
    if not name:
        raise TenantError("the tenant name must not be empty")
    if plan not in Tenant.Plan.values:
        raise TenantError(f"unknown plan {plan!r}; choose one of {', '.join(Tenant.Plan.values)}")
    if monthly_free_allowance < 0:
        raise TenantError("the monthly free allowance must not be negative")
    slug = slugify(slug or name)[:64]
    if not slug:
        raise TenantError(f"cannot make a slug from {name!r}; pass one explicitly")
    if Tenant.objects.filter(slug=slug).exists():
        raise TenantError(f"a tenant with slug {slug!r} already exists")
    tenant = Tenant(name=name, slug=slug, plan=plan, monthly_free_allowance=monthly_free_allowance)
    _validate(tenant, exclude=["stripe_customer"])
    tenant.save()
    tenant_history_record(
        tenant=tenant,
        field=TenantChange.Field.CREATED,
        old="",
        new=f"{plan}/{tenant.status}",
        actor=actor,
        source=source,
    )
    return tenant


def _validate(row, *, exclude: list[str]) -> None:
    """Model validation before a row from outside input is saved (a free allowance of 1e15 does
    not fit the column: SQLite would store it and fail reading it back)."""
    try:
        row_validate(row, exclude=exclude)
    except ValidationError as exc:
        raise TenantError(validation_error_message(exc)) from None


def api_key_issue(*, tenant: Tenant, name: str) -> IssuedKey:
    name = name.strip()
    if not name:
        raise TenantError("the key name must not be empty")
    if len(name) > 50:
        raise TenantError("the key name must be at most 50 characters")
    _validate(TenantAPIKey(tenant=tenant, name=name), exclude=["id", "prefix", "hashed_key"])
    api_key, secret = TenantAPIKey.objects.create_key(tenant=tenant, name=name)
    return IssuedKey(api_key=api_key, secret=secret)


def api_key_revoke(*, api_key: TenantAPIKey) -> bool:
    """Revoke a key for good. Returns False if it was already revoked."""
    changed = TenantAPIKey.objects.filter(pk=api_key.pk, revoked=False).update(
        revoked=True, revoked_at=timezone.now()
    )
    api_key_cache_clear()
    return changed == 1


def api_key_mark_used(*, api_key: TenantAPIKey) -> None:
    """Stamp last_used_at, at most once per resolution window, so auth is not a write per call."""
    now = timezone.now()
    window = timedelta(seconds=settings.API_KEY_LAST_USED_RESOLUTION_SECONDS)
    if api_key.last_used_at is not None and now - api_key.last_used_at < window:
        return
    TenantAPIKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    api_key.last_used_at = now


def _change(*, tenant: Tenant, field: str, value: str, actor, source: str, reason: str) -> bool:
    """Set `field` under a row lock and record the change; False when it already had that value."""
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        old = getattr(locked, field)
        if old != value:
            setattr(locked, field, value)
            locked.save(update_fields=[field, "updated_at"])
            tenant_history_record(
                tenant=locked, field=field, old=old, new=value, actor=actor, source=source, reason=reason
            )
    setattr(tenant, field, value)
    api_key_cache_clear()  # cached keys carry their tenant's status
    return old != value


def tenant_suspend(*, tenant: Tenant, actor=None, source: str = "admin", reason: str = "") -> bool:
    """Suspend a tenant: its keys stop working (403). Returns False if it already was."""
    return _change(
        tenant=tenant,
        field="status",
        value=Tenant.Status.SUSPENDED,
        actor=actor,
        source=source,
        reason=reason,
    )


def tenant_reactivate(*, tenant: Tenant, actor=None, source: str = "admin", reason: str = "") -> bool:
    return _change(
        tenant=tenant, field="status", value=Tenant.Status.ACTIVE, actor=actor, source=source, reason=reason
    )


def tenant_change_plan(*, tenant: Tenant, plan: str, actor=None, source: str, reason: str = "") -> bool:
    if plan not in Tenant.Plan.values:
        raise TenantError(f"unknown plan {plan!r}; choose one of {', '.join(Tenant.Plan.values)}")
    return _change(tenant=tenant, field="plan", value=plan, actor=actor, source=source, reason=reason)
