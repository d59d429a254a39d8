"""Seed 003: each tenant's API Gateway key sits in exactly the usage plan of its billing plan.

The settings map a billing plan to a usage plan (APIGATEWAY_USAGE_PLAN_FREE, _METERED). An active
tenant's key belongs in its plan's usage plan, a suspended tenant's in none (API Gateway then refuses
the key: 403 Forbidden), a tenant without a key id is left alone. `usage_plan_place` makes AWS agree:
it finds which configured usage plans hold the key, takes it out of the wrong ones
(DeleteUsagePlanKey) and then puts it into the right one (CreateUsagePlanKey); out first, because API
Gateway refuses a key in two usage plans of the same API stage. Every move that changed something or
failed leaves a TenantChange row (field usage_plan, source "apigateway") and the tenant's
UsagePlanPlacement row says where the key is.

A plan, status or key id change reaches it through `tenant_change_listeners` (registered in
ApiGatewayConfig.ready): the row turns pending and a task places the key after commit, retried with
backoff while AWS throttles or fails; `usage_plans_sync` (the daily task, `sync_usage_plans`) checks
every tenant's key and repairs drift.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone
from kombu.exceptions import KombuError

from apigateway.models import UsagePlanPlacement
from core.aws import AwsError, AwsUnavailable, aws_call, aws_client, error_code
from core.validation import one_line
from tenants.models import Tenant, TenantChange
from tenants.services import tenant_history_record

logger = logging.getLogger(__name__)

SOURCE = "apigateway"
ACCESS_HINT = (
    "the platform's AWS identity needs apigateway:GET, apigateway:POST and apigateway:DELETE on "
    "arn:aws:apigateway:<region>::/usageplans/*"
)
NOT_CONFIGURED = (
    "no API Gateway usage plans configured: set APIGATEWAY_USAGE_PLAN_FREE and/or "
    "APIGATEWAY_USAGE_PLAN_METERED"
)
# History rows after which a tenant's key may belong elsewhere.
PLACING_FIELDS = frozenset(
    {
        TenantChange.Field.PLAN,
        TenantChange.Field.STATUS,
        TenantChange.Field.CREATED,
        TenantChange.Field.APIGATEWAY_KEY_ID,
    }
)
LIST_PAGE = 500  # GetUsagePlanKeys' largest page
ERROR_LENGTH = 500  # UsagePlanPlacement.last_error, TenantChange.reason


class UsagePlansNotConfigured(Exception):
    """Neither usage plan setting is set: there is nothing to place keys in."""


def configured_usage_plans() -> dict[str, str]:
    """{usage plan id: the billing plan(s) it serves}, for the settings that are set."""
    plans: dict[str, list[str]] = {}
    for plan, plan_id in (
        (Tenant.Plan.FREE, settings.APIGATEWAY_USAGE_PLAN_FREE),
        (Tenant.Plan.METERED, settings.APIGATEWAY_USAGE_PLAN_METERED),
    ):
        if plan_id:
            plans.setdefault(plan_id, []).append(str(plan))
    return {plan_id: "/".join(labels) for plan_id, labels in plans.items()}


def desired_usage_plan(tenant: Tenant) -> str:
    """The usage plan the tenant's key belongs in; "" for none (suspended, or no plan for its plan)."""
    if not tenant.is_active:
        return ""
    if tenant.plan == Tenant.Plan.METERED:
        return settings.APIGATEWAY_USAGE_PLAN_METERED
    return settings.APIGATEWAY_USAGE_PLAN_FREE


def plan_label(plan_id: str, plans: dict[str, str] | None = None) -> str:
    plans = configured_usage_plans() if plans is None else plans
    return f"usage plan {plan_id} ({plans.get(plan_id, 'not configured')})"


def apigateway_client():
    return aws_client("apigateway")


# --- Reading AWS --------------------------------------------------------------------------------


def _call(call, what: str):
    return aws_call(call, what=what, access_hint=ACCESS_HINT)


def key_in_usage_plan(client, *, plan_id: str, key_id: str) -> bool:
    """GetUsagePlanKey: 404 means the key is not in this plan (or the key or plan does not exist)."""
    try:
        _call(
            lambda: client.get_usage_plan_key(usagePlanId=plan_id, keyId=key_id),
            f"API Gateway GetUsagePlanKey ({plan_id}, {key_id})",
        )
    except ClientError as exc:
        if error_code(exc) == "NotFoundException":
            return False
        raise
    return True


def usage_plan_key_ids(client, *, plan_id: str) -> set[str]:
    """Every key id in the usage plan (GetUsagePlanKeys, all pages)."""
    keys: set[str] = set()
    position = None
    while True:
        params = {"usagePlanId": plan_id, "limit": LIST_PAGE}
        if position:
            params["position"] = position
        page = _call(
            lambda params=params: client.get_usage_plan_keys(**params),
            f"API Gateway GetUsagePlanKeys ({plan_id})",
        )
        keys.update(item["id"] for item in page.get("items", []))
        position = page.get("position")
        if not position:
            return keys


# --- Placing one tenant's key -------------------------------------------------------------------


@dataclass
class PlacementResult:
    tenant: Tenant
    key_id: str
    desired_plan_id: str
    lines: list[str] = field(default_factory=list)  # what changed (or, dry run, would change)
    error: str = ""
    retryable: bool = False

    @property
    def status(self) -> str:
        return UsagePlanPlacement.Status.FAILED if self.error else UsagePlanPlacement.Status.IN_PLACE


class _Failed(Exception):
    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message)
        self.message = one_line(message)[:ERROR_LENGTH]
        self.retryable = retryable


def _aws(call, what: str):
    """One AWS request; its failure as _Failed (retryable: throttling, 5xx, unreachable)."""
    try:
        return call()
    except AwsUnavailable as exc:  # no credentials, access denied: not better on a retry
        raise _Failed(str(exc), retryable=False) from None
    except AwsError as exc:  # retries spent on throttling, 5xx or the network
        raise _Failed(str(exc), retryable=True) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise _Failed(f"{what}: {error.get('Code')}: {error.get('Message', '')}", retryable=False) from None
    except BotoCoreError as exc:
        raise _Failed(f"{what}: {exc}", retryable=True) from None


def _plans_holding(client, key_id: str, plans: dict[str, str], seen) -> list[str]:
    if seen is not None:
        return [plan_id for plan_id in plans if key_id in seen.get(plan_id, ())]
    return [
        plan_id
        for plan_id in plans
        if _aws(
            lambda plan_id=plan_id: key_in_usage_plan(client, plan_id=plan_id, key_id=key_id),
            "GetUsagePlanKey",
        )
    ]


def _remove(client, *, plan_id: str, key_id: str) -> None:
    what = f"DeleteUsagePlanKey ({plan_id}, {key_id})"
    try:
        _call(lambda: client.delete_usage_plan_key(usagePlanId=plan_id, keyId=key_id), f"API Gateway {what}")
    except ClientError as exc:
        if error_code(exc) != "NotFoundException":  # gone already: what we wanted
            raise


def _add(client, *, plan_id: str, key_id: str) -> None:
    what = f"CreateUsagePlanKey ({plan_id}, {key_id})"
    try:
        _call(
            lambda: client.create_usage_plan_key(usagePlanId=plan_id, keyId=key_id, keyType="API_KEY"),
            f"API Gateway {what}",
        )
    except ClientError as exc:
        # Conflict: the key is there already (fine), or in another usage plan of the same API stage
        # (not fine): ask which.
        if error_code(exc) != "ConflictException" or not key_in_usage_plan(
            client, plan_id=plan_id, key_id=key_id
        ):
            raise


def _record(tenant: Tenant, *, old: str, new: str, reason: str) -> None:
    tenant_history_record(
        tenant=tenant,
        field=TenantChange.Field.USAGE_PLAN,
        old=old,
        new=new,
        actor=None,
        source=SOURCE,
        reason=reason[:ERROR_LENGTH],
    )


def usage_plan_place(
    *, tenant_id: int, seen: dict[str, set[str]] | None = None, dry_run: bool = False, client=None
) -> PlacementResult | None:
    """Put the tenant's key in exactly its desired usage plan; None when there is nothing to place
    (no usage plan configured, no such tenant, no key id and no key left to take out).

    `seen`: {usage plan id: key ids} as listed just before (the sync lists each plan once instead of
    asking per key). `dry_run`: say what would move, write nothing, move nothing. A failure is
    recorded (placement row, and a history row unless it repeats the last error), not raised."""
    plans = configured_usage_plans()
    if not plans:
        return None
    client = client or apigateway_client()
    with transaction.atomic():
        tenant = Tenant.objects.filter(pk=tenant_id).first()
        if tenant is None:
            return None
        placements = UsagePlanPlacement.objects.filter(tenant=tenant)
        # One placement of a tenant at a time (a plan change and the daily sync may meet).
        placement = placements.first() if dry_run else placements.select_for_update().first()
        key_id = tenant.apigateway_key_id or ""
        released = placement.key_id if placement and placement.key_id and placement.key_id != key_id else ""
        if released and Tenant.objects.filter(apigateway_key_id=released).exists():
            released = ""  # now another tenant's key: that tenant's placement moves it
        if not key_id and not released:
            if placement is not None and not dry_run:
                placement.delete()
            return None
        if placement is None and not dry_run:
            placement = UsagePlanPlacement.objects.create(tenant=tenant, key_id=key_id)
        desired = desired_usage_plan(tenant) if key_id else ""
        result = PlacementResult(tenant=tenant, key_id=key_id, desired_plan_id=desired)
        actual: list[str] = []
        try:
            if released:
                for plan_id in _plans_holding(client, released, plans, seen):
                    result.lines.append(
                        f"key {released} out of {plan_label(plan_id, plans)} (no longer the tenant's)"
                    )
                    if not dry_run:
                        _aws(
                            lambda plan_id=plan_id: _remove(client, plan_id=plan_id, key_id=released),
                            "DeleteUsagePlanKey",
                        )
                        _record(
                            tenant,
                            old=plan_label(plan_id, plans),
                            new="",
                            reason=f"key {released} removed: the tenant's API Gateway key id changed",
                        )
            if key_id:
                actual = _plans_holding(client, key_id, plans, seen)
                why = f"plan {tenant.plan}" if tenant.is_active else "tenant suspended"
                for plan_id in [plan_id for plan_id in actual if plan_id != desired]:
                    result.lines.append(f"key {key_id} out of {plan_label(plan_id, plans)} ({why})")
                    if not dry_run:
                        _aws(
                            lambda plan_id=plan_id: _remove(client, plan_id=plan_id, key_id=key_id),
                            "DeleteUsagePlanKey",
                        )
                        actual.remove(plan_id)
                        _record(
                            tenant,
                            old=plan_label(plan_id, plans),
                            new="",
                            reason=f"key {key_id} removed: {why}",
                        )
                if desired and desired not in actual:
                    result.lines.append(f"key {key_id} into {plan_label(desired, plans)} ({why})")
                    if not dry_run:
                        _aws(lambda: _add(client, plan_id=desired, key_id=key_id), "CreateUsagePlanKey")
                        actual.append(desired)
                        _record(
                            tenant,
                            old="",
                            new=plan_label(desired, plans),
                            reason=f"key {key_id} added: {why}",
                        )
        except _Failed as failure:
            result.error, result.retryable = failure.message, failure.retryable
        if dry_run:
            return result
        now = timezone.now()
        if result.error:
            if not (
                placement.status == UsagePlanPlacement.Status.FAILED and placement.last_error == result.error
            ):
                _record(
                    tenant,
                    old="",
                    new=plan_label(desired, plans) if desired else "no usage plan",
                    reason=f"failed: {result.error}",
                )
            placement.attempts += 1
        else:
            placement.attempts = 0
            placement.key_id = key_id
        if not key_id and not result.error:
            placement.delete()
            return result
        placement.desired_plan_id = desired
        placement.actual_plan_ids = sorted(actual) if key_id else []
        placement.status = result.status
        placement.last_error = result.error
        placement.last_checked_at = now
        placement.save()
    return result


# --- After a change: mark pending, place after commit ---------------------------------------------


def tenant_change_placement(change: TenantChange) -> None:
    """tenant_change_listeners' hook: a plan, status or key id change (or a new tenant) with a key
    to place marks the placement pending and queues it after commit (nothing when a change rolls back)."""
    if change.field not in PLACING_FIELDS or not configured_usage_plans():
        return
    tenant = change.tenant
    if tenant.apigateway_key_id:
        _mark_pending(tenant)
    elif not UsagePlanPlacement.objects.filter(tenant=tenant).exists():
        return  # no key now, none placed before
    transaction.on_commit(partial(usage_plan_placement_enqueue, tenant_id=tenant.pk), robust=True)


def _mark_pending(tenant: Tenant) -> None:
    now = timezone.now()
    try:
        with transaction.atomic():
            # A running placement holds the row while it talks to AWS: the change (an API call, a
            # webhook) does not wait for it; the placement queued after this commit re-checks anyway.
            placement = (
                UsagePlanPlacement.objects.select_for_update(nowait=True).filter(tenant=tenant).first()
            )
            if placement is None:
                UsagePlanPlacement.objects.create(
                    tenant=tenant,
                    key_id=tenant.apigateway_key_id,
                    status=UsagePlanPlacement.Status.PENDING,
                    requested_at=now,
                )
            else:
                placement.status, placement.requested_at = UsagePlanPlacement.Status.PENDING, now
                placement.save(update_fields=["status", "requested_at"])
    except DatabaseError:  # locked by a running placement (or, IntegrityError, made by one just now)
        logger.info("usage plan placement of tenant %s is running; the queued one re-checks", tenant.pk)


def usage_plan_placement_enqueue(*, tenant_id: int) -> None:
    """Queue the placement task. A broker that is down loses nothing: the row stays pending and the
    daily sync places the key."""
    from apigateway.tasks import place_usage_plan

    try:
        place_usage_plan.apply_async((tenant_id,))
    except (KombuError, OSError):
        logger.warning(
            "could not queue the usage plan placement of tenant %s; the daily sync will", tenant_id
        )


# --- Drift repair --------------------------------------------------------------------------------


@dataclass
class SyncResult:
    checked: int = 0
    moved: int = 0
    failed: int = 0
    lines: list[str] = field(default_factory=list)

    def summary(self, *, dry_run: bool = False) -> str:
        if not self.checked:
            return "no tenant has an API Gateway key id: nothing to place"
        if not self.moved and not self.failed:
            return f"checked {self.checked} tenant key(s): all in place, nothing changed"
        verb = "would move" if dry_run else "moved"
        return (
            f"checked {self.checked} tenant key(s): {verb} {self.moved}, failed {self.failed}, "
            f"{self.checked - self.moved - self.failed} already in place"
        )


def usage_plans_sync(*, tenant: Tenant | None = None, dry_run: bool = False) -> SyncResult:
    """Check every tenant with a key id (or `tenant` alone) against the usage plans' key lists, listed
    once each, and move what is out of place. Idempotent: a second run changes nothing.

    Raises UsagePlansNotConfigured, and AwsError / ClientError when a usage plan cannot be listed."""
    plans = configured_usage_plans()
    if not plans:
        raise UsagePlansNotConfigured(NOT_CONFIGURED)
    client = apigateway_client()
    seen = {plan_id: usage_plan_key_ids(client, plan_id=plan_id) for plan_id in plans}
    tenants = Tenant.objects.filter(
        Q(apigateway_key_id__isnull=False) | Q(usage_plan_placement__isnull=False)
    ).order_by("pk")
    if tenant is not None:
        tenants = tenants.filter(pk=tenant.pk)
    result = SyncResult()
    for tenant_id in tenants.values_list("pk", flat=True):
        placed = usage_plan_place(tenant_id=tenant_id, seen=seen, dry_run=dry_run, client=client)
        if placed is None:
            continue
        result.checked += 1
        slug = placed.tenant.slug
        if placed.error:
            result.failed += 1
            result.lines.append(f"{slug}: failed: {placed.error}")
        elif placed.lines:
            result.moved += 1
            result.lines.extend(f"{slug}: {'would move ' if dry_run else ''}{line}" for line in placed.lines)
    return result
