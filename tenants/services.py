"""Writes for tenants and their API keys. Each change of plan or status leaves a TenantChange row."""

import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from core.api_scopes import SCOPES
from core.json_input import text_problem
from core.money import plain_decimal
from core.validation import row_validate, validation_error_message
from tenants.events import tenant_change_publish
from tenants.key_cache import api_key_cache_clear
from tenants.models import (
    APIGATEWAY_KEY_ID_MESSAGE,
    APIGATEWAY_KEY_ID_PATTERN,
    PlatformAPIKey,
    Tenant,
    TenantAPIKey,
    TenantChange,
)


class TenantError(Exception):
    """A request about a tenant that cannot be carried out; the message is for the operator.
    `field`: the input it is about (name, slug, external_id, plan, ...), so the API can name it."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class IssuedKey:
    api_key: TenantAPIKey | PlatformAPIKey
    secret: str  # the full key; shown once and never stored


ChangeListener = Callable[[TenantChange], None]


class TenantChangeListeners:
    """Functions called with every history row `tenant_history_record` writes, in its transaction.

    Apps above tenants register one from their AppConfig.ready (apigateway: a plan, status or key id
    change moves the tenant's API Gateway key), so tenants imports none of them and a change made
    anywhere (admin, API, commands, Stripe webhooks, the event bus) reaches them. A listener that
    does work outside the database queues it with transaction.on_commit; one that raises rolls the
    change back with it.
    """

    def __init__(self) -> None:
        self._listeners: dict[str, ChangeListener] = {}

    def register(self, name: str, listener: ChangeListener) -> None:
        self._listeners[name] = listener  # by name: a second ready() does not add it twice

    def unregister(self, name: str) -> None:
        self._listeners.pop(name, None)

    def notify(self, change: TenantChange) -> None:
        for listener in list(self._listeners.values()):
            listener(change)


tenant_change_listeners = TenantChangeListeners()


def tenant_history_record(
    *, tenant: Tenant, field: str, old: str, new: str, actor, source: str, reason: str = ""
):
    """`actor`: the operator (a user), the platform key that called the API, or None (a command,
    a Stripe event: `source` says which). The registered `tenant_change_listeners` see the row."""
    by_key = isinstance(actor, PlatformAPIKey)
    change = TenantChange.objects.create(
        tenant=tenant,
        field=field,
        old_value=old,
        new_value=new,
        actor=None if by_key or not getattr(actor, "pk", None) else actor,
        platform_key=actor if by_key else None,
        source=source,
        reason=reason,
    )
    # Every recorded change is an outgoing webhook event (tenant.created, .suspended, ...), in the
    # same transaction: a rolled-back change sends nothing.
    tenant_change_publish(change)
    tenant_change_listeners.notify(change)
    return change


_APIGATEWAY_KEY_ID = re.compile(APIGATEWAY_KEY_ID_PATTERN)


def apigateway_key_id_clean(value: str | None) -> str | None:
    """The API Gateway key id as stored: None for none (or ""); refused unless letters and digits."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _APIGATEWAY_KEY_ID.match(value):
        raise TenantError(APIGATEWAY_KEY_ID_MESSAGE, field="apigateway_key_id")
    return value


def external_id_clean(value: str | None) -> str | None:
    """The external id as stored: None for none; refused when blank, padded, too long or unprintable."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TenantError("the external id must be a string", field="external_id")
    if problem := text_problem(value):
        raise TenantError(f"the external id {problem}", field="external_id")
    if not value.isprintable():
        raise TenantError("the external id must hold printable characters only", field="external_id")
    if len(value) > 255:
        raise TenantError("the external id must be at most 255 characters", field="external_id")
    if value != value.strip() or not value:
        raise TenantError(
            "the external id must not be blank or start or end with a space", field="external_id"
        )
    return value


def _refs_free(
    *,
    slug: str | None = None,
    external_id: str | None = None,
    apigateway_key_id: str | None = None,
    other_than=None,
) -> None:
    """A platform key names a tenant by external id or slug: no ref may name two tenants. An API
    Gateway key belongs to one tenant: its usage is imported for it."""
    others = Tenant.objects.exclude(pk=other_than.pk) if other_than is not None else Tenant.objects
    if apigateway_key_id is not None and others.filter(apigateway_key_id=apigateway_key_id).exists():
        raise TenantError(
            f"API Gateway key {apigateway_key_id} is another tenant's", field="apigateway_key_id"
        )
    if slug is not None:
        if others.filter(slug=slug).exists():
            raise TenantError(f"a tenant with slug {slug!r} already exists", field="slug")
        if others.filter(external_id=slug).exists():
            raise TenantError(f"slug {slug!r} is another tenant's external id", field="slug")
    if external_id is not None:
        if others.filter(external_id=external_id).exists():
            raise TenantError(
                f"a tenant with external id {external_id!r} already exists", field="external_id"
            )
        if others.filter(slug=external_id).exists():
            raise TenantError(f"external id {external_id!r} is another tenant's slug", field="external_id")


@contextmanager
def _refs_race():
    """Two calls making the same slug or external id at once both pass _refs_free; the unique
    constraint stops the second, answered as the check would have (not a 500)."""
    try:
        with transaction.atomic():
            yield
    except IntegrityError as exc:
        text = str(exc)
        field = next((name for name in ("external_id", "apigateway_key_id") if name in text), "slug")
        raise TenantError(
            f"another tenant took this {field.replace('_', ' ')} just now", field=field
        ) from None


@transaction.atomic
def tenant_create(
    *,
    name: str,
    plan: str = Tenant.Plan.FREE,
    slug: str | None = None,
    monthly_free_allowance: Decimal = Decimal("0"),
    external_id: str | None = None,
    apigateway_key_id: str | None = None,
    actor=None,
    source: str = "command",
) -> Tenant:
    name = name.strip()
    if not name:
        raise TenantError("the tenant name must not be empty", field="name")
    _plan_check(plan)
    if monthly_free_allowance < 0:
        raise TenantError("the monthly free allowance must not be negative", field="monthly_free_allowance")
    slug = slugify(slug or name)[:64]
    if not slug:
        raise TenantError(f"cannot make a slug from {name!r}; pass one explicitly", field="slug")
    external_id = external_id_clean(external_id)
    apigateway_key_id = apigateway_key_id_clean(apigateway_key_id)
    _refs_free(slug=slug, external_id=external_id, apigateway_key_id=apigateway_key_id)
    tenant = Tenant(
        name=name,
        slug=slug,
        plan=plan,
        monthly_free_allowance=monthly_free_allowance,
        external_id=external_id,
        apigateway_key_id=apigateway_key_id,
    )
    _validate(tenant, exclude=["stripe_customer"])
    with _refs_race():
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
        fields = list(exc.message_dict) if hasattr(exc, "error_dict") else []
        raise TenantError(validation_error_message(exc), field=fields[0] if fields else None) from None


def _key_name_clean(name: str) -> str:
    name = name.strip()
    if not name:
        raise TenantError("the key name must not be empty", field="name")
    if len(name) > 50:
        raise TenantError("the key name must be at most 50 characters", field="name")
    if problem := text_problem(name):
        raise TenantError(f"the key name {problem}", field="name")
    return name


def api_key_issue(*, tenant: Tenant, name: str, actor=None, source: str = "") -> IssuedKey:
    """A new key for `tenant`. With a `source` (admin, api, command), the tenant's history records
    it (the prefix, never the secret) with its actor."""
    name = _key_name_clean(name)
    _validate(TenantAPIKey(tenant=tenant, name=name), exclude=["id", "prefix", "hashed_key"])
    api_key, secret = TenantAPIKey.objects.create_key(tenant=tenant, name=name)
    if source:
        tenant_history_record(
            tenant=tenant,
            field=TenantChange.Field.API_KEY,
            old="",
            new=api_key.prefix,
            actor=actor,
            source=source,
            reason=f"key issued: {name}",
        )
    return IssuedKey(api_key=api_key, secret=secret)


def platform_key_issue(*, name: str, scopes, created_by=None) -> IssuedKey:
    """A key for the SaaS's own backend with these scopes (core.api_scopes.SCOPES)."""
    name = _key_name_clean(name)
    scopes = list(dict.fromkeys(scopes))
    if not scopes:
        raise TenantError(f"give the key at least one scope: {', '.join(SCOPES)}", field="scopes")
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown:
        raise TenantError(f"unknown scope {unknown[0]!r}; choose from {', '.join(SCOPES)}", field="scopes")
    api_key, secret = PlatformAPIKey.objects.create_key(
        name=name, scopes=scopes, created_by=created_by if getattr(created_by, "pk", None) else None
    )
    return IssuedKey(api_key=api_key, secret=secret)


def api_key_revoke(*, api_key: TenantAPIKey | PlatformAPIKey, actor=None, source: str = "") -> bool:
    """Revoke a key (of either kind) for good. Returns False if it was already revoked. With a
    `source`, a tenant key's revocation is recorded in its tenant's history."""
    with transaction.atomic():
        changed = (
            type(api_key)
            .objects.filter(pk=api_key.pk, revoked=False)
            .update(revoked=True, revoked_at=timezone.now())
        )
        if changed and source and isinstance(api_key, TenantAPIKey):
            tenant_history_record(
                tenant=api_key.tenant,
                field=TenantChange.Field.API_KEY,
                old=api_key.prefix,
                new="revoked",
                actor=actor,
                source=source,
                reason=f"key revoked: {api_key.name}",
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


def _plan_check(plan: str) -> None:
    if plan not in Tenant.Plan.values:
        raise TenantError(
            f"unknown plan {plan!r}; choose one of {', '.join(Tenant.Plan.values)}", field="plan"
        )


def tenant_change_plan(*, tenant: Tenant, plan: str, actor=None, source: str, reason: str = "") -> bool:
    _plan_check(plan)
    return _change(tenant=tenant, field="plan", value=plan, actor=actor, source=source, reason=reason)


_UNCHANGED = object()


def tenant_refs_check(
    *,
    slug: str | None = None,
    external_id: str | None = None,
    apigateway_key_id: str | None = None,
    tenant=None,
) -> None:
    """Refuse (TenantError naming the field) a slug, external id or API Gateway key id that would
    name another tenant than `tenant`; for forms that save a tenant themselves (the admin's)."""
    _refs_free(
        slug=slug,
        external_id=external_id_clean(external_id),
        apigateway_key_id=apigateway_key_id_clean(apigateway_key_id),
        other_than=tenant,
    )


def tenant_update(
    *,
    tenant: Tenant,
    name=_UNCHANGED,
    monthly_free_allowance=_UNCHANGED,
    external_id=_UNCHANGED,
    apigateway_key_id=_UNCHANGED,
    actor=None,
    source: str,
    reason: str = "",
) -> list[str]:
    """Change a tenant's name, monthly free allowance, external id and/or API Gateway key id (None
    clears either id), each change recorded in its history with its actor. All are checked before
    any is written; returns the fields that changed. Plan and status have their own services."""
    updates: dict = {}
    if name is not _UNCHANGED:
        if not isinstance(name, str) or not name.strip():
            raise TenantError("the tenant name must not be empty", field="name")
        updates["name"] = name.strip()
    if monthly_free_allowance is not _UNCHANGED:
        if not isinstance(monthly_free_allowance, Decimal) or not monthly_free_allowance.is_finite():
            raise TenantError(
                "the monthly free allowance must be a decimal number", field="monthly_free_allowance"
            )
        if monthly_free_allowance < 0:
            raise TenantError(
                "the monthly free allowance must not be negative", field="monthly_free_allowance"
            )
        updates["monthly_free_allowance"] = monthly_free_allowance
    if external_id is not _UNCHANGED:
        updates["external_id"] = external_id_clean(external_id)
    if apigateway_key_id is not _UNCHANGED:
        updates["apigateway_key_id"] = apigateway_key_id_clean(apigateway_key_id)
    changed: list[str] = []
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        olds = {field: getattr(locked, field) for field in updates}
        for field, value in updates.items():
            setattr(locked, field, value)
        if "external_id" in updates and updates["external_id"] is not None:
            _refs_free(external_id=updates["external_id"], other_than=locked)
        if updates.get("apigateway_key_id") is not None:
            _refs_free(apigateway_key_id=updates["apigateway_key_id"], other_than=locked)
        _validate(locked, exclude=["stripe_customer", "slug", "external_id", "apigateway_key_id"])
        for field, value in updates.items():
            if olds[field] != value:
                changed.append(field)
        if changed:
            with _refs_race():
                locked.save(update_fields=[*changed, "updated_at"])
            for field in changed:
                tenant_history_record(
                    tenant=locked,
                    field=_HISTORY_FIELDS[field],
                    old=_history_value(olds[field]),
                    new=_history_value(getattr(locked, field)),
                    actor=actor,
                    source=source,
                    reason=reason,
                )
    for field in changed:
        setattr(tenant, field, getattr(locked, field))
    if changed:
        tenant.updated_at = locked.updated_at
    if "external_id" in changed:
        api_key_cache_clear()  # cached keys carry their tenant (and so its refs)
    return changed


_HISTORY_FIELDS = {
    "name": TenantChange.Field.NAME,
    "monthly_free_allowance": TenantChange.Field.FREE_ALLOWANCE,
    "external_id": TenantChange.Field.EXTERNAL_ID,
    "apigateway_key_id": TenantChange.Field.APIGATEWAY_KEY_ID,
}


def _history_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return plain_decimal(value)
    return str(value)
