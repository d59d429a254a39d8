"""Permissions on the third-party admins we register: django-celery-beat's and dj-stripe's.

Django offers an admin action without `permissions=[...]` to anyone who may view the list, and a
custom admin URL checks only that the user is staff. Both packages have such actions and dj-stripe
such a URL (`.../action/<action>/<model>/`, which re-syncs from Stripe or cancels subscriptions at
Stripe for any staff user, whatever the model admin offers). Their admins are replaced here by
subclasses whose every action declares its permission (billing_platform.permissions) and whose
custom URL runs only an action the model's admin offers the user. Imported by billing_platform.admin,
which Django's autodiscovery loads after every other app's admin.
"""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.urls import path
from django_celery_beat.admin import PeriodicTaskAdmin
from django_celery_beat.models import PeriodicTask
from djstripe.admin.actions import CustomActionMixin
from djstripe.admin.views import ConfirmCustomAction

from billing_platform.permissions import CANCEL_AT_STRIPE, RUN_OPERATOR_JOBS

# --- django-celery-beat -----------------------------------------------------------------------------


class GuardedPeriodicTaskAdmin(PeriodicTaskAdmin):
    """Enabling, disabling and toggling a schedule is changing it; running tasks now is an operator job."""

    def has_run_permission(self, request, obj=None):
        return request.user.has_perm(RUN_OPERATOR_JOBS)

    @admin.action(description=PeriodicTaskAdmin.enable_tasks.short_description, permissions=["change"])
    def enable_tasks(self, request, queryset):
        return super().enable_tasks(request, queryset)

    @admin.action(description=PeriodicTaskAdmin.disable_tasks.short_description, permissions=["change"])
    def disable_tasks(self, request, queryset):
        return super().disable_tasks(request, queryset)

    @admin.action(description=PeriodicTaskAdmin.toggle_tasks.short_description, permissions=["change"])
    def toggle_tasks(self, request, queryset):
        return super().toggle_tasks(request, queryset)

    @admin.action(description=PeriodicTaskAdmin.run_tasks.short_description, permissions=["run"])
    def run_tasks(self, request, queryset):
        return super().run_tasks(request, queryset)


if isinstance(admin.site._registry.get(PeriodicTask), PeriodicTaskAdmin):
    admin.site.unregister(PeriodicTask)
    admin.site.register(PeriodicTask, GuardedPeriodicTaskAdmin)


# --- dj-stripe --------------------------------------------------------------------------------------

_DJSTRIPE_ACTION_URL = "djstripe_custom_action"


def djstripe_custom_action(request, action_name: str, model_name: str):
    """dj-stripe's confirmation view, for an action the model's admin offers this user only."""
    from djstripe.utils import get_model

    try:
        model = get_model(model_name)
    except LookupError:
        raise Http404("no such dj-stripe model") from None
    model_admin = admin.site._registry.get(model)
    if model_admin is None or action_name not in model_admin.get_actions(request):
        raise PermissionDenied
    return ConfirmCustomAction.as_view()(request, action_name=action_name, model_name=model_name)


class StripeActionGuard:
    """Mixed in front of a dj-stripe model admin: every action declares a permission."""

    def has_stripe_sync_permission(self, request, obj=None):
        return request.user.has_perm(RUN_OPERATOR_JOBS)

    def has_cancel_at_stripe_permission(self, request, obj=None):
        return request.user.has_perm(CANCEL_AT_STRIPE)

    @admin.action(description="Re-Sync Selected Instances", permissions=["stripe_sync"])
    def _resync_instances(self, request, queryset):
        return super()._resync_instances(request, queryset)

    @admin.action(description="Sync All Instances for all API Keys", permissions=["stripe_sync"])
    def _sync_all_instances(self, request, queryset):
        return super()._sync_all_instances(request, queryset)

    # Only SubscriptionAdmin offers it (its get_actions adds it after Django's permission filter).
    @admin.action(description="Cancel selected subscriptions", permissions=["cancel_at_stripe"])
    def _cancel(self, request, queryset):
        return super()._cancel(request, queryset)

    def get_actions(self, request):
        # Filtered again: dj-stripe's admins add actions after Django's filter has run.
        actions = super().get_actions(request)
        allowed = self._filter_actions_by_permissions(request, actions.values())
        return {name: (func, name, description) for func, name, description in allowed}

    def get_urls(self):
        urls = super().get_urls()
        return [
            path(
                str(url.pattern),
                self.admin_site.admin_view(djstripe_custom_action),
                name=_DJSTRIPE_ACTION_URL,
            )
            if getattr(url, "name", None) == _DJSTRIPE_ACTION_URL
            else url
            for url in urls
        ]


for _model, _model_admin in list(admin.site._registry.items()):
    if isinstance(_model_admin, CustomActionMixin) and not isinstance(_model_admin, StripeActionGuard):
        _class = type(_model_admin)
        admin.site.unregister(_model)
        admin.site.register(
            _model, type(f"Guarded{_class.__name__}", (StripeActionGuard, _class), {"__module__": __name__})
        )
