"""Guards on the third-party admins registered on the console's site: django-celery-beat's and
dj-stripe's, and which of their models the console shows at all.

Django offers an admin action without `permissions=[...]` to anyone who may view the list, and a
custom admin URL checks only that the user is staff. Both packages have such actions and dj-stripe
such a URL (`.../action/<action>/<model>/`, which re-syncs from Stripe or cancels subscriptions at
Stripe for any staff user, whatever the model admin offers). The console's site
(console/sites.py) registers their admins through `guarded()`, which puts a guard in front: every
action declares its permission (core.permissions) and the custom URL runs only an action the model's
admin offers the user. dj-stripe's admins are read-only here (the mirror is written from Stripe),
and only the models the platform mirrors are shown; the API-key library's own admin is left out (the
tenants' keys have theirs).

Nothing here imports the packages' admin modules: they are being imported (and registering) when
`guarded()` runs, so the guards are mixins found by what the admin class offers.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.exceptions import NotRegistered
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.urls import path

from core.admin_mixins import ReadOnlyAdminMixin
from core.permissions import CANCEL_AT_STRIPE, RUN_OPERATOR_JOBS

# The dj-stripe models the platform mirrors or links to (stripe_sync/mirror.py, the tenant page,
# the Finance role); the others dj-stripe registers are not shown.
DJSTRIPE_SHOWN = frozenset(
    {
        "customer",
        "subscription",
        "invoice",
        "lineitem",
        "price",
        "product",
        "charge",
        "paymentintent",
        "refund",
        "balancetransaction",
        "coupon",
        "discount",
    }
)
# Apps whose own admin the console leaves out: rest_framework_api_key's APIKey (the tenants' keys,
# a subclass of it, have their admin in tenants/admin.py).
HIDDEN_APPS = frozenset({"rest_framework_api_key"})


def shown(model) -> bool:
    """Whether the console registers an admin for this model at all."""
    label = model._meta.app_label
    if label in HIDDEN_APPS:
        return False
    return label != "djstripe" or model._meta.model_name in DJSTRIPE_SHOWN


def guarded(model, admin_class: type[admin.ModelAdmin]) -> type[admin.ModelAdmin]:
    """The admin class to register for `model`: a third-party one with its guard in front."""
    if model._meta.app_label == "django_celery_beat" and hasattr(admin_class, "run_tasks"):
        guards = (PeriodicTaskGuard,)
    elif model._meta.app_label == "djstripe":
        guards = (StripeMirrorListMixin, ReadOnlyAdminMixin)
        if hasattr(admin_class, "_resync_instances"):
            guards = (StripeActionGuard, *guards)
    else:
        return admin_class
    return type(f"Guarded{admin_class.__name__}", (*guards, admin_class), {"__module__": __name__})


class StripeMirrorListMixin:
    """dj-stripe's lists show each object's id twice (`__str__` is "<id=...>") and its owner
    account, the same on every row of one account; without them the lists fit 1280 px."""

    def get_list_display(self, request):
        hidden = {"__str__", "djstripe_owner_account"}
        return [name for name in super().get_list_display(request) if name not in hidden]


# --- django-celery-beat -----------------------------------------------------------------------------


class PeriodicTaskGuard:
    """Enabling, disabling and toggling a schedule is changing it; running tasks now is an operator job."""

    def has_run_permission(self, request, obj=None):
        return request.user.has_perm(RUN_OPERATOR_JOBS)

    @admin.action(description="Enable selected tasks", permissions=["change"])
    def enable_tasks(self, request, queryset):
        return super().enable_tasks(request, queryset)

    @admin.action(description="Disable selected tasks", permissions=["change"])
    def disable_tasks(self, request, queryset):
        return super().disable_tasks(request, queryset)

    @admin.action(description="Toggle activity of selected tasks", permissions=["change"])
    def toggle_tasks(self, request, queryset):
        return super().toggle_tasks(request, queryset)

    @admin.action(description="Run selected tasks", permissions=["run"])
    def run_tasks(self, request, queryset):
        return super().run_tasks(request, queryset)


# --- dj-stripe --------------------------------------------------------------------------------------
_DJSTRIPE_ACTION_URL = "djstripe_custom_action"


def djstripe_custom_action(request, action_name: str, model_name: str):
    """dj-stripe's confirmation view, for an action the model's admin offers this user only."""
    from djstripe.admin.views import ConfirmCustomAction
    from djstripe.utils import get_model

    try:
        model = get_model(model_name)
    except LookupError:
        raise Http404("no such dj-stripe model") from None
    try:
        model_admin = admin.site.get_model_admin(model)
    except NotRegistered:
        raise PermissionDenied from None
    if action_name not in model_admin.get_actions(request):
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
