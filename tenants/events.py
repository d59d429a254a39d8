"""Outgoing webhook events about tenants, and the tenant block every event carries.

`tenant_event_block` is the one shape of a tenant in every outgoing event of every app (tenant.*,
usage.*, payment.*, subscription.*, budget.alert). `tenant_change_publish` turns a TenantChange row
into its event; `tenant_history_record` calls it, so every change that leaves a history row (admin,
API, commands, Stripe webhooks, the event bus) is published without its caller having to remember.
"""

from __future__ import annotations

from outbound.services import webhook_event_publish
from tenants.models import Tenant, TenantChange


def tenant_event_block(tenant: Tenant) -> dict:
    """The tenant as outgoing events show it: id, slug, external id, name, plan and status."""
    return {
        "id": tenant.pk,
        "slug": tenant.slug,
        "external_id": tenant.external_id,
        "name": tenant.name,
        "plan": tenant.plan,
        "status": tenant.status,
    }


def _actor(change: TenantChange) -> dict | None:
    if change.platform_key_id is not None:
        return {
            "kind": "platform_key",
            "prefix": change.platform_key.prefix,
            "name": change.platform_key.name,
        }
    if change.actor_id is not None:
        return {"kind": "operator"}
    return None


# History rows that are not news about the tenant's details: its API keys (issued, revoked) stay out
# of tenant.updated (the caller that made a key knows; the secret is never in any event), and so do
# the apigateway app's usage plan placements (its own bookkeeping of a change already published as
# tenant.plan_changed or .suspended; retries would repeat it). A new API Gateway key id is published.
NOT_PUBLISHED_FIELDS = frozenset({"api_key", "usage_plan"})


def tenant_change_event(change: TenantChange) -> tuple[str, dict] | None:
    """The event type and data of one history row; None for a row that is not published."""
    if change.field in NOT_PUBLISHED_FIELDS:
        return None
    tenant = change.tenant
    common = {
        "tenant": tenant_event_block(tenant),
        "source": change.source,
        "reason": change.reason,
        "actor": _actor(change),
        "changed_at": change.created_at,
    }
    if change.field == TenantChange.Field.CREATED:
        return "tenant.created", common
    if change.field == TenantChange.Field.STATUS:
        kind = "tenant.suspended" if change.new_value == Tenant.Status.SUSPENDED else "tenant.reactivated"
        return kind, {**common, "old_status": change.old_value, "new_status": change.new_value}
    if change.field == TenantChange.Field.PLAN:
        return "tenant.plan_changed", {**common, "old_plan": change.old_value, "new_plan": change.new_value}
    # Any other recorded field (name, free_allowance, external_id, ...).
    return "tenant.updated", {
        **common,
        "field": change.field,
        "old_value": change.old_value,
        "new_value": change.new_value,
    }


def tenant_change_publish(change: TenantChange) -> None:
    """Publish the change's event in the current transaction, once per history row."""
    event = tenant_change_event(change)
    if event is None:
        return
    event_type, data = event
    webhook_event_publish(type=event_type, data=data, key=f"tenant-change:{change.pk}", tenant=change.tenant)
