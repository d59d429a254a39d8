from django.conf import settings
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from apigateway.models import SYNC_USAGE_PLANS, ApiGatewayUsageDay, UsagePlanPlacement
from apigateway.services import configured_usage_plans, plan_label, usage_plan_place
from core.admin_mixins import ReadOnlyAdmin

SYNC_PERMISSION = f"apigateway.{SYNC_USAGE_PLANS}"


def _tenant_link(tenant):
    url = reverse("admin:tenants_tenant_change", args=[tenant.pk])
    return format_html('<a href="{}">{}</a>', url, tenant.slug)


class OutOfPlaceFilter(admin.SimpleListFilter):
    """Keys not (known to be) in their usage plan: a failed or still pending placement."""

    title = "placement"
    parameter_name = "placement"
    OUT = "out"

    def lookups(self, request, model_admin):
        return [(self.OUT, "Out of place (failed or pending)")]

    def queryset(self, request, queryset):
        if self.value() == self.OUT:
            return queryset.exclude(status=UsagePlanPlacement.Status.IN_PLACE)
        return queryset


@admin.register(UsagePlanPlacement)
class UsagePlanPlacementAdmin(ReadOnlyAdmin):
    """Where each tenant's API Gateway key should be and was last seen. Rows are written by the
    placement (after a plan, status or key id change, and by the daily sync); "Sync now" checks the
    selected tenants' keys at AWS and moves them."""

    list_display = [
        "tenant_link",
        "key_id",
        "desired",
        "actual",
        "status",
        "attempts",
        "last_checked_at",
        "last_error",
    ]
    list_filter = [OutOfPlaceFilter, "status"]
    search_fields = ["tenant__slug", "tenant__name", "tenant__external_id", "key_id"]
    list_select_related = ["tenant"]
    fields = [
        "tenant",
        "key_id",
        "desired",
        "actual",
        "status",
        "attempts",
        "last_error",
        "requested_at",
        "last_checked_at",
    ]
    readonly_fields = fields
    actions = ["sync_now"]

    @admin.display(description="tenant", ordering="tenant__slug")
    def tenant_link(self, obj):
        return _tenant_link(obj.tenant)

    @admin.display(description="desired usage plan")
    def desired(self, obj):
        return plan_label(obj.desired_plan_id) if obj.desired_plan_id else "none"

    @admin.display(description="usage plans holding the key")
    def actual(self, obj):
        plans = configured_usage_plans()
        return ", ".join(plan_label(plan_id, plans) for plan_id in obj.actual_plan_ids or []) or "none"

    def has_sync_permission(self, request, obj=None):
        return request.user.has_perm(SYNC_PERMISSION)

    def changelist_view(self, request, extra_context=None):
        if not configured_usage_plans():
            # An empty list would otherwise look like "every key is in place".
            self.message_user(
                request,
                "Placement is off: neither APIGATEWAY_USAGE_PLAN_FREE nor APIGATEWAY_USAGE_PLAN_METERED "
                "is set (docs/integrations.md, API Gateway usage plans).",
                messages.WARNING,
            )
        return super().changelist_view(request, extra_context)

    @admin.action(description="Sync now (check at AWS and move the keys)", permissions=["sync"])
    def sync_now(self, request, queryset):
        if not configured_usage_plans():
            self.message_user(request, "No API Gateway usage plans are configured.", messages.ERROR)
            return
        for placement in queryset.select_related("tenant"):
            result = usage_plan_place(tenant_id=placement.tenant_id)
            if result is None:
                continue
            if result.error:
                self.message_user(request, f"{result.tenant.slug}: failed: {result.error}", messages.ERROR)
            elif result.lines:
                self.log_change(request, placement, "; ".join(result.lines))
                self.message_user(
                    request, f"{result.tenant.slug}: {'; '.join(result.lines)}", messages.SUCCESS
                )
            else:
                self.message_user(request, f"{result.tenant.slug}: in place, nothing to move")


@admin.register(ApiGatewayUsageDay)
class ApiGatewayUsageDayAdmin(ReadOnlyAdmin):
    """What the GetUsage import took in per (usage plan, key, day); rows that need a look (a count
    AWS lowered, a key of no tenant, a day too old, a refusal) say why."""

    list_display = [
        "day",
        "key_id",
        "usage_plan_id",
        "tenant_link",
        "used",
        "imported",
        "events",
        "status",
        "note",
    ]
    list_filter = ["status", "usage_plan_id", "day"]
    search_fields = ["key_id", "tenant__slug"]
    list_select_related = ["tenant"]
    date_hierarchy = "day"

    @admin.display(description="tenant", ordering="tenant__slug")
    def tenant_link(self, obj):
        return _tenant_link(obj.tenant) if obj.tenant_id else "—"

    def changelist_view(self, request, extra_context=None):
        if not settings.APIGATEWAY_USAGE_METER or not configured_usage_plans():
            self.message_user(
                request,
                "The import is off: it needs APIGATEWAY_USAGE_METER and at least one of "
                "APIGATEWAY_USAGE_PLAN_FREE and APIGATEWAY_USAGE_PLAN_METERED (docs/integrations.md).",
                messages.WARNING,
            )
        return super().changelist_view(request, extra_context)


class UsagePlanTenantAdminMixin:
    """apigateway's part of the Tenant admin (composed in console/admin.py): the key's placement."""

    usage_plan_readonly_fields = ["usage_plan_placement_state"]

    @admin.display(description="API Gateway usage plan")
    def usage_plan_placement_state(self, obj):
        if obj is None or obj.pk is None:
            return "—"
        placement = UsagePlanPlacement.objects.filter(tenant=obj).first()
        if placement is None:
            return "no API Gateway key" if not obj.apigateway_key_id else "not placed yet"
        url = reverse("admin:apigateway_usageplanplacement_change", args=[placement.pk])
        where = plan_label(placement.desired_plan_id) if placement.desired_plan_id else "no usage plan"
        if placement.in_place:
            state = f"in place: key {placement.key_id} in {where}"
        elif placement.status == UsagePlanPlacement.Status.PENDING:
            state = f"pending: key {placement.key_id} moving to {where}"
        else:
            state = f"out of place: key {placement.key_id} should be in {where} ({placement.last_error})"
        return format_html('<a href="{}">{}</a>', url, state)
