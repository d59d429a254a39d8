from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import Count, Q
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from core.admin_mixins import PlainDecimalsMixin
from core.api_scopes import SCOPES
from core.permissions import MANAGE_API_KEYS, SUSPEND_TENANT
from tenants.models import PlatformAPIKey, TenantAPIKey, TenantChange
from tenants.services import (
    TenantError,
    api_key_issue,
    api_key_revoke,
    platform_key_issue,
    tenant_change_plan,
    tenant_history_record,
    tenant_reactivate,
    tenant_refs_check,
    tenant_suspend,
    tenant_update,
)


def _key_state(key: TenantAPIKey | PlatformAPIKey) -> str:
    if key.revoked:
        return "revoked"
    if key.has_expired:
        return "expired"
    return "active"


class TenantAPIKeyInline(admin.TabularInline):
    """Keys are listed, never edited here: the secret is not stored, and a key is made by the
    'Create API key' action so that it can be shown once."""

    model = TenantAPIKey
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ["name", "prefix", "state", "created", "last_used_at", "revoked_at", "expiry_date"]
    readonly_fields = fields

    @admin.display(description="state")
    def state(self, obj):
        return _key_state(obj)

    def has_add_permission(self, request, obj=None):
        return False


class TenantChangeInline(admin.TabularInline):
    model = TenantChange
    extra = 0
    can_delete = False
    verbose_name = "change"
    verbose_name_plural = "history (plan, status, name, allowance, ids, keys, usage plans)"
    fields = ["created_at", "field", "old_value", "new_value", "source", "actor", "platform_key", "reason"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


_RECORDED = ["name", "monthly_free_allowance", "external_id", "apigateway_key_id"]


class TenantAdminForm(forms.ModelForm):
    """Refuses a slug or external id that would name another tenant (a platform key names tenants
    by either), with the services' own check."""

    def clean(self):
        cleaned = super().clean()
        for field in ("slug", "external_id", "apigateway_key_id"):
            value = cleaned.get(field)
            if value is None or field in self.errors:
                continue
            try:
                tenant_refs_check(**{field: value}, tenant=self.instance if self.instance.pk else None)
            except TenantError as exc:
                self.add_error(field, str(exc))
        return cleaned


class TenantAdmin(PlainDecimalsMixin, admin.ModelAdmin):
    """The tenants app's part of the Tenant admin. Not registered here: the console registers the
    Tenant admin once, composed of this and what the other apps contribute (console/admin.py)."""

    form = TenantAdminForm
    list_display = [
        "name",
        "slug",
        "external_id",
        "plan",
        "status",
        "apigateway_key_id",
        "active_keys",
        "stripe_customer",
        "created_at",
    ]
    list_filter = ["plan", "status"]
    search_fields = ["name", "slug", "external_id", "apigateway_key_id", "stripe_customer__id"]
    readonly_fields = ["status", "created_at", "updated_at"]
    raw_id_fields = ["stripe_customer"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [TenantAPIKeyInline, TenantChangeInline]
    actions = ["create_api_key", "suspend", "reactivate"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("stripe_customer")
            .annotate(_active_keys=Count("api_keys", filter=Q(api_keys__revoked=False)))
        )

    @admin.display(description="active keys", ordering="_active_keys")
    def active_keys(self, obj):
        return obj._active_keys

    def has_manage_api_keys_permission(self, request, obj=None):
        return request.user.has_perm(MANAGE_API_KEYS)

    def has_suspend_permission(self, request, obj=None):
        return request.user.has_perm(SUSPEND_TENANT)

    @admin.action(description="Create an API key (shown once)", permissions=["manage_api_keys"])
    def create_api_key(self, request, queryset):
        if "apply" not in request.POST:
            return TemplateResponse(
                request,
                "admin/tenants/tenant/create_api_key.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Create API keys",
                    "opts": self.model._meta,
                    "queryset": queryset,
                    "action": "create_api_key",
                    "action_checkbox_name": ACTION_CHECKBOX_NAME,
                    "confirm_field": "apply",
                    "confirm_value": "1",
                    "confirm_label": "Create keys",
                    "default_name": f"admin {timezone.now():%Y-%m-%d}",
                },
            )
        name = request.POST.get("key_name", "")
        for tenant in queryset:
            try:
                issued = api_key_issue(tenant=tenant, name=name, actor=request.user, source="admin")
            except TenantError as exc:
                self.message_user(request, f"{tenant}: {exc}", messages.ERROR)
                return None
            self.log_change(request, tenant, f"Created API key {issued.api_key.prefix} ({name})")
            self.message_user(
                request,
                format_html(
                    "New API key for {}: <code>{}</code> — copy it now, it will not be shown again.",
                    tenant.slug,
                    issued.secret,
                ),
                messages.WARNING,
            )
        return None

    @admin.action(description="Suspend (their API keys get 403)", permissions=["suspend"])
    def suspend(self, request, queryset):
        changed = 0
        for tenant in queryset:
            if tenant_suspend(tenant=tenant, actor=request.user, source="admin"):
                self.log_change(request, tenant, "Suspended")
                changed += 1
        self.message_user(request, f"Suspended {changed} tenant(s).")

    @admin.action(description="Reactivate", permissions=["suspend"])
    def reactivate(self, request, queryset):
        changed = 0
        for tenant in queryset:
            if tenant_reactivate(tenant=tenant, actor=request.user, source="admin"):
                self.log_change(request, tenant, "Reactivated")
                changed += 1
        self.message_user(request, f"Reactivated {changed} tenant(s).")

    def save_model(self, request, obj, form, change):
        # Status changes only through the actions; plan, name, free allowance and external id
        # through the same services as the provisioning API: each leaves a history row with the
        # operator's name. The form saves the other fields (slug, Stripe customer).
        new_plan = obj.plan
        plan_changed = change and "plan" in form.changed_data
        updates = {field: getattr(obj, field) for field in _RECORDED if change and field in form.changed_data}
        if plan_changed:
            obj.plan = form.initial["plan"]
        for field in updates:
            setattr(obj, field, form.initial[field])
        super().save_model(request, obj, form, change)
        if updates:
            tenant_update(tenant=obj, **updates, actor=request.user, source="admin")
        if not change:
            tenant_history_record(
                tenant=obj,
                field=TenantChange.Field.CREATED,
                old="",
                new=f"{obj.plan}/{obj.status}",
                actor=request.user,
                source="admin",
            )
        elif plan_changed:
            tenant_change_plan(tenant=obj, plan=new_plan, actor=request.user, source="admin")


@admin.register(TenantAPIKey)
class TenantAPIKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant_link", "prefix", "state", "created", "last_used_at", "revoked_at"]
    list_filter = ["revoked", ("tenant", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "prefix", "tenant__slug", "tenant__name"]
    list_select_related = ["tenant"]
    fields = ["tenant", "name", "prefix", "state", "created", "last_used_at", "revoked_at", "expiry_date"]
    readonly_fields = ["tenant", "prefix", "state", "created", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request):
        # A key is created by the tenant's "Create API key" action, which shows it once.
        return False

    def has_delete_permission(self, request, obj=None):
        # Keep revoked keys: they explain past calls. Revoke instead of delete.
        return False

    @admin.display(description="tenant", ordering="tenant__slug")
    def tenant_link(self, obj):
        url = reverse("admin:tenants_tenant_change", args=[obj.tenant_id])
        return format_html('<a href="{}">{}</a>', url, obj.tenant.slug)

    @admin.display(description="state")
    def state(self, obj):
        return _key_state(obj)

    def has_manage_api_keys_permission(self, request, obj=None):
        return request.user.has_perm(MANAGE_API_KEYS)

    @admin.action(description="Revoke selected keys (cannot be undone)", permissions=["manage_api_keys"])
    def revoke(self, request, queryset):
        revoked = 0
        for api_key in queryset.select_related("tenant"):
            if api_key_revoke(api_key=api_key, actor=request.user, source="admin"):
                self.log_change(request, api_key, "Revoked")
                revoked += 1
        self.message_user(request, f"Revoked {revoked} key(s).")


class PlatformKeyAddForm(forms.ModelForm):
    """A platform key is made from a name and scopes; the key itself is shown once, after saving."""

    scopes = forms.MultipleChoiceField(
        choices=[(scope, f"{scope}: {description}") for scope, description in SCOPES.items()],
        widget=forms.CheckboxSelectMultiple,
        help_text="What the key may do. A backend that only sends usage needs events:write.",
    )

    class Meta:
        model = PlatformAPIKey
        fields = ["name", "scopes"]


@admin.register(PlatformAPIKey)
class PlatformAPIKeyAdmin(admin.ModelAdmin):
    """Keys of the SaaS's own backend. Made here (shown once, on the page after saving), by
    `create_platform_key`, never edited: revoke one and make another. Only the hash is stored."""

    list_display = ["name", "prefix", "scope_list", "created", "last_used_at", "state", "created_by"]
    list_filter = ["revoked"]
    search_fields = ["name", "prefix"]
    list_select_related = ["created_by"]
    fields = ["name", "prefix", "scope_list", "state", "created", "last_used_at", "revoked_at", "created_by"]
    readonly_fields = fields
    actions = ["revoke"]

    @admin.display(description="scopes")
    def scope_list(self, obj):
        return ", ".join(obj.scopes or ())

    @admin.display(description="state")
    def state(self, obj):
        return _key_state(obj)

    def has_manage_api_keys_permission(self, request, obj=None):
        return request.user.has_perm(MANAGE_API_KEYS)

    def has_add_permission(self, request):
        return self.has_manage_api_keys_permission(request)

    def has_change_permission(self, request, obj=None):
        return False  # nothing to edit: revoke (the action) and make another

    def has_delete_permission(self, request, obj=None):
        return False  # keep revoked keys: they explain past calls and the history rows naming them

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            return PlatformKeyAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        return ["name", "scopes"] if obj is None else self.fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        # The service makes the row (prefix, hash); the admin goes on with it as the saved object.
        issued = platform_key_issue(
            name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"], created_by=request.user
        )
        obj.pk, obj.prefix, obj.hashed_key = (
            issued.api_key.pk,
            issued.api_key.prefix,
            issued.api_key.hashed_key,
        )
        obj.name, obj.scopes, obj.created = issued.api_key.name, issued.api_key.scopes, issued.api_key.created
        obj._state.adding = False
        request._platform_key_secret = issued.secret

    def save_related(self, request, form, formsets, change):
        pass  # no relations to save; the service saved the row

    def response_add(self, request, obj, post_url_continue=None):
        response = TemplateResponse(
            request,
            "admin/tenants/platformapikey/key_created.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": f"New platform key {obj.name}",
                "api_key": obj,
                "secret": request._platform_key_secret,
                "page_url": reverse("admin:tenants_platformapikey_change", args=[obj.pk]),
                "changelist_url": reverse("admin:tenants_platformapikey_changelist"),
            },
        )
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected keys (cannot be undone)", permissions=["manage_api_keys"])
    def revoke(self, request, queryset):
        revoked = 0
        for api_key in queryset:
            if api_key_revoke(api_key=api_key):
                self.log_change(request, api_key, "Revoked")
                revoked += 1
        self.message_user(request, f"Revoked {revoked} key(s).")
