"""Writes for tenants and their API keys. Each change of plan or status leaves a TenantChange row."""

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from core.api_scopes import SCOPES
from core.json_input import text_problem
from core.validation import row_validate, validation_error_message
from tenants.key_cache import api_key_cache_clear
from tenants.models import PlatformAPIKey, Tenant, TenantAPIKey, TenantChange


class TenantError(Exception):
    """A request about a tenant that cannot be carried out; the message is for the operator."""


@dataclass(frozen=True)
class IssuedKey:
    api_key: TenantAPIKey | PlatformAPIKey
    secret: str  # the full key; shown once and never stored


def tenant_history_record(
    *, tenant: Tenant, field: str, old: str, new: str, actor, source: str, reason: str = ""
):
    """`actor`: the operator (a user), the platform key that called the API, or None (a command,
    a Stripe event: `source` says which)."""
    by_key = isinstance(actor, PlatformAPIKey)
    TenantChange.objects.create(
        tenant=tenant,
        field=field,
        old_value=old,
        new_value=new,
        actor=None if by_key or not getattr(actor, "pk", None) else actor,
        platform_key=actor if by_key else None,
        source=source,
        reason=reason,
    )


def external_id_clean(value: str | None) -> str | None:
    """The external id as stored: None for none; refused when blank, padded, too long or unprintable."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TenantError("the external id must be a string")
    if problem := text_problem(value):
        raise TenantError(f"the external id {problem}")
    if not value.isprintable():
        raise TenantError("the external id must hold printable characters only")
    if len(value) > 255:
        raise TenantError("the external id must be at most 255 characters")
    if value != value.strip() or not value:
        raise TenantError("the external id must not be blank or start or end with a space")
    return value


def _refs_free(*, slug: str | None = None, external_id: str | None = None, other_than=None) -> None:
    """A platform key names a tenant by external id or slug: no ref may name two tenants."""
    others = Tenant.objects.exclude(pk=other_than.pk) if other_than is not None else Tenant.objects
    if slug is not None:
        if others.filter(slug=slug).exists():
            raise TenantError(f"a tenant with slug {slug!r} already exists")
        if others.filter(external_id=slug).exists():
            raise TenantError(f"slug {slug!r} is another tenant's external id")
    if external_id is not None:
        if others.filter(external_id=external_id).exists():
            raise TenantError(f"a tenant with external id {external_id!r} already exists")
        if others.filter(slug=external_id).exists():
            raise TenantError(f"external id {external_id!r} is another tenant's slug")


@transaction.atomic
def tenant_create(
    *,
    name: str,
    plan: str = Tenant.Plan.FREE,
    slug: str | None = None,
    monthly_free_allowance: Decimal = Decimal("0"),
    external_id: str | None = None,
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
    external_id = external_id_clean(external_id)
    _refs_free(slug=slug, external_id=external_id)
    tenant = Tenant(
        name=name,
        slug=slug,
        plan=plan,
        monthly_free_allowance=monthly_free_allowance,
        external_id=external_id,
    )
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


def platform_key_issue(*, name: str, scopes, created_by=None) -> IssuedKey:
    """A key for the SaaS's own backend with these scopes (core.api_scopes.SCOPES)."""
    name = name.strip()
    if not name:
        raise TenantError("the key name must not be empty")
    if len(name) > 50:
        raise TenantError("the key name must be at most 50 characters")
    scopes = list(dict.fromkeys(scopes))
    if not scopes:
        raise TenantError(f"give the key at least one scope: {', '.join(SCOPES)}")
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown:
        raise TenantError(f"unknown scope {unknown[0]!r}; choose from {', '.join(SCOPES)}")
    api_key, secret = PlatformAPIKey.objects.create_key(
        name=name, scopes=scopes, created_by=created_by if getattr(created_by, "pk", None) else None
    )
    return IssuedKey(api_key=api_key, secret=secret)


def api_key_revoke(*, api_key: TenantAPIKey | PlatformAPIKey) -> bool:
    """Revoke a key (of either kind) for good. Returns False if it was already revoked."""
    changed = (
        type(api_key)
        .objects.filter(pk=api_key.pk, revoked=False)
        .update(revoked=True, revoked_at=timezone.now())
    )
    api_key_cache_clear()
    return changed == 1


def api_key_mark_used(*, api_key: TenantAPIKey | PlatformAPIKey) -> None:
    """Stamp last_used_at, at most once per resolution window, so auth is not a write per call."""
    now = timezone.now()
    window = timedelta(seconds=settings.API_KEY_LAST_USED_RESOLUTION_SECONDS)
    if api_key.last_used_at is not None and now - api_key.last_used_at < window:
        return
    type(api_key).objects.filter(pk=api_key.pk).update(last_used_at=now)
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
