"""Tenants' Stripe side in admin: the "Onboard to Stripe" action, links to dj-stripe's pages, and
the Stripe meters.

tenants must not import stripe_sync (apps depend downwards), so stripe_sync contributes its part of
the Tenant admin as a mixin, which the console composes with tenants' TenantAdmin and registers once
(console/admin.py).
"""

import stripe
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from core.permissions import ONBOARD_TO_STRIPE
from stripe_sync.catalog import OnboardingError, stripe_error_message, stripe_meter_ensure
from stripe_sync.client import StripeNotConfigured
from stripe_sync.models import StripeMeter, TenantSubscription
from stripe_sync.onboarding import tenant_onboard, tenants_waiting_for_onboarding

_FAILURES = (OnboardingError, StripeNotConfigured, stripe.StripeError)


def _failure_text(exc: Exception) -> str:
    return stripe_error_message(exc) if isinstance(exc, stripe.StripeError) else str(exc)


def _djstripe_link(model_name: str, obj) -> str:
    if obj is None:
        return "—"
    url = reverse(f"admin:djstripe_{model_name}_change", args=[obj.pk])
    status = getattr(obj, "status", "")
    return format_html('<a href="{}">{}</a>{}', url, obj.id, f" ({status})" if status else "")


class StripeOnboardingFilter(admin.SimpleListFilter):
    """Tenants on the metered plan that Stripe cannot bill yet (the dashboard's billing health links
    here)."""

    title = "Stripe onboarding"
    parameter_name = "onboarding"
    WAITING = "waiting"

    def lookups(self, request, model_admin):
        return [(self.WAITING, "Metered, waiting for onboarding")]

    def queryset(self, request, queryset):
        if self.value() == self.WAITING:
            return queryset.filter(pk__in=tenants_waiting_for_onboarding().values("pk"))
        return queryset


class StripeTenantAdminMixin:
    """stripe_sync's part of the Tenant admin: its action, its list filter and its read-only links."""

    stripe_actions = ["onboard_to_stripe"]
    stripe_list_filters = [StripeOnboardingFilter]
    stripe_readonly_fields = ["stripe_customer_page", "stripe_subscription_page"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("stripe_subscription__subscription")

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        # One "Stripe customer" row: editable, the raw-id field (its widget links the customer's page);
        # read-only, the link alone (the raw id would repeat it under the same label).
        if obj is not None and not self.has_change_permission(request, obj):
            return [name for name in fields if name != "stripe_customer"]
        return [name for name in fields if name != "stripe_customer_page"]

    @admin.display(description="Stripe customer")
    def stripe_customer_page(self, obj):
        return _djstripe_link("customer", obj.stripe_customer)

    @admin.display(description="metered subscription")
    def stripe_subscription_page(self, obj):
        try:
            record = obj.stripe_subscription
        except TenantSubscription.DoesNotExist:
            return "—"
        return _djstripe_link("subscription", record.subscription)

    def has_onboard_permission(self, request, obj=None):
        return request.user.has_perm(ONBOARD_TO_STRIPE)

    @admin.action(description="Onboard to Stripe (creates the customer at Stripe)", permissions=["onboard"])
    def onboard_to_stripe(self, request, queryset):
        if "apply" not in request.POST:
            # Onboarding sends the tenants' names to Stripe and may start subscriptions: ask first.
            return TemplateResponse(
                request,
                "admin/stripe_sync/onboard_to_stripe.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Onboard to Stripe",
                    "opts": self.model._meta,
                    "queryset": queryset,
                    "action": "onboard_to_stripe",
                    "action_checkbox_name": ACTION_CHECKBOX_NAME,
                    "confirm_field": "apply",
                    "confirm_value": "1",
                    "confirm_label": "Onboard to Stripe",
                },
            )
        for tenant in queryset:
            try:
                result = tenant_onboard(tenant=tenant, actor=request.user)
            except _FAILURES as exc:
                self.message_user(request, f"{tenant.slug}: {_failure_text(exc)}", messages.ERROR)
                continue
            summary = "; ".join(line.strip() for line in result.lines())
            self.log_change(request, tenant, f"Onboarded to Stripe: {summary}")
            self.message_user(request, summary, messages.SUCCESS)
        return None


@admin.register(StripeMeter)
class StripeMeterAdmin(admin.ModelAdmin):
    list_display = [
        "event_name",
        "meter",
        "stripe_meter_id",
        "stripe_price_id",
        "stripe_product_id",
        "synced_at",
    ]
    search_fields = ["event_name", "meter__code", "stripe_meter_id", "stripe_price_id"]
    list_select_related = ["meter"]
    readonly_fields = ["stripe_meter_id", "stripe_product_id", "stripe_price_id", "synced_at"]
    actions = ["create_at_stripe"]

    def has_onboard_permission(self, request, obj=None):
        return request.user.has_perm(ONBOARD_TO_STRIPE)

    @admin.action(
        description="Create at Stripe (billing meter and metered price, when missing)",
        permissions=["onboard"],
    )
    def create_at_stripe(self, request, queryset):
        for row in queryset.select_related("meter"):
            try:
                result = stripe_meter_ensure(meter=row.meter)
            except _FAILURES as exc:
                self.message_user(request, f"{row.event_name}: {_failure_text(exc)}", messages.ERROR)
                continue
            self.log_change(request, row, f"Ensured at Stripe: {result.describe()}")
            self.message_user(request, result.describe(), messages.SUCCESS)
