"""The tenant page: an overview above the Tenant form and the operator actions it offers.

Apps depend downwards, so no app's admin can show a tenant's usage, Stripe objects, costs and jobs
together; the console can. The Tenant admin is registered here, once, composed of what each app
contributes: tenants' TenantAdmin (fields, keys, suspend), stripe_sync's StripeTenantAdminMixin
(onboarding, links to the Stripe objects) and the console's overview and operations. Reads are in
`console.tenant_overview`; long actions are operator jobs (`console.operator_jobs`) run by a worker,
short ones call their service here.
"""

from __future__ import annotations

from datetime import UTC, timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from apigateway.admin import UsagePlanTenantAdminMixin
from console.models import OperatorJob
from console.operator_jobs import JOB_PERMISSIONS, operator_job_queue
from console.tenant_overview import tenant_jobs, tenant_overview
from core.admin_mixins import ReadOnlyAdmin
from core.permissions import MANAGE_API_KEYS, ONBOARD_TO_STRIPE, SUSPEND_TENANT, can_see_revenue
from metering.aggregation import HOUR, recompute_horizon
from stripe_sync.admin.credits import GRANT_PERMISSION
from stripe_sync.admin.customers import StripeTenantAdminMixin
from tenants.admin import TenantAdmin
from tenants.models import Tenant, TenantAPIKey
from tenants.services import TenantError, api_key_issue, api_key_revoke, tenant_reactivate, tenant_suspend

HOUR_INPUT = "%Y-%m-%dT%H:%M"
MAX_REAGGREGATE_HOURS = 45 * 24  # raw events are kept 45 days: older hours have nothing to recompute


def _hour_field(label: str) -> forms.DateTimeField:
    return forms.DateTimeField(
        label=label,
        input_formats=[HOUR_INPUT, "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": 3600}, format=HOUR_INPUT),
    )


class ReaggregateForm(forms.Form):
    first_hour = _hour_field("First hour (UTC)")
    last_hour = _hour_field("Last hour (UTC, included)")

    def _whole_hour(self, name: str):
        value = self.cleaned_data[name]
        if value.minute or value.second or value.microsecond:
            raise forms.ValidationError("Whole hours only (minutes 00).")
        return value.astimezone(UTC)

    def clean_first_hour(self):
        return self._whole_hour("first_hour")

    def clean_last_hour(self):
        return self._whole_hour("last_hour")

    def clean(self):
        cleaned = super().clean()
        first, last = cleaned.get("first_hour"), cleaned.get("last_hour")
        if first is None or last is None:
            return cleaned
        if last < first:
            self.add_error("last_hour", "The last hour must not be before the first.")
        elif first > timezone.now():
            self.add_error("first_hour", "The first hour is in the future: there is nothing to aggregate.")
        elif (last - first) / HOUR + 1 > MAX_REAGGREGATE_HOURS:
            self.add_error("first_hour", f"At most {MAX_REAGGREGATE_HOURS // 24} days at once.")
        elif first < (horizon := recompute_horizon()):
            self.add_error(
                "first_hour",
                f"Hours before {horizon:%Y-%m-%d %H:00} UTC cannot be re-aggregated: their raw events are "
                "past retention or pruned, and recomputing from what is left would lower their kept "
                f"aggregates. Start at {horizon:%Y-%m-%d %H:00} or later.",
            )
        return cleaned


class RotateKeyForm(forms.Form):
    name = forms.CharField(label="Name of the new key", max_length=50)


class SuspendForm(forms.Form):
    reason = forms.CharField(label="Reason (kept in the tenant's history)", max_length=500, required=False)


@admin.register(Tenant)
class TenantPageAdmin(StripeTenantAdminMixin, UsagePlanTenantAdminMixin, TenantAdmin):
    """The tenant page. The keys and history inlines give way to the overview, which lists both with
    links (and bounds the history)."""

    actions = [*TenantAdmin.actions, *StripeTenantAdminMixin.stripe_actions]
    list_filter = [*TenantAdmin.list_filter, *StripeTenantAdminMixin.stripe_list_filters]
    readonly_fields = [
        *TenantAdmin.readonly_fields,
        *StripeTenantAdminMixin.stripe_readonly_fields,
        *UsagePlanTenantAdminMixin.usage_plan_readonly_fields,
    ]

    change_form_template = "admin/tenants/tenant/change_form.html"
    inlines = []

    # --- Page -------------------------------------------------------------------------------------

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and change:
            # Money (estimate, invoices, cost and margin, budget alerts) only with the revenue permission:
            # without it those panels are neither computed nor in the page.
            context["overview"] = tenant_overview(tenant=obj, money=can_see_revenue(request.user))
            # Each action's button only for those holding its permission (the views check it again).
            user = request.user
            context["can"] = {
                "suspend": user.has_perm(SUSPEND_TENANT),
                "keys": user.has_perm(MANAGE_API_KEYS),
                "onboard": user.has_perm(ONBOARD_TO_STRIPE),
                "jobs": all(user.has_perm(permission) for permission in JOB_PERMISSIONS.values()),
                "grant_credit": user.has_perm(GRANT_PERMISSION),
            }
            context["operations"] = {
                name: reverse(f"admin:tenants_tenant_{name}", args=[obj.pk])
                for name in ("reaggregate", "resync", "budget_check", "reconcile", "suspend", "reactivate")
            }
            context["jobs_url"] = reverse("admin:tenants_tenant_jobs", args=[obj.pk])
            context["changelist_url"] = reverse("admin:tenants_tenant_changelist")
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self):
        def view(func, route: str, name: str):
            return path(route, self.admin_site.admin_view(func), name=f"tenants_tenant_{name}")

        return [
            view(self.reaggregate_view, "<int:tenant_id>/operations/reaggregate/", "reaggregate"),
            view(self.resync_view, "<int:tenant_id>/operations/resync/", "resync"),
            view(self.budget_check_view, "<int:tenant_id>/operations/budget-check/", "budget_check"),
            view(self.reconcile_view, "<int:tenant_id>/operations/reconcile/", "reconcile"),
            view(self.suspend_view, "<int:tenant_id>/operations/suspend/", "suspend"),
            view(self.reactivate_view, "<int:tenant_id>/operations/reactivate/", "reactivate"),
            view(self.rotate_key_view, "<int:tenant_id>/keys/<int:key_id>/rotate/", "rotate_key"),
            view(self.jobs_view, "<int:tenant_id>/jobs.json", "jobs"),
            *super().get_urls(),
        ]

    # --- Helpers ----------------------------------------------------------------------------------

    def _tenant(self, request, tenant_id: int, *, permission: str | None) -> Tenant:
        """The tenant of a custom view, for a user who may view it and holds `permission` (the one the
        view's action needs; None: a read-only view); 403 otherwise, before anything is looked up."""
        if not self.has_view_permission(request) or (permission and not request.user.has_perm(permission)):
            raise PermissionDenied
        tenant = self.get_object(request, str(tenant_id))
        if tenant is None:
            raise Http404("no such tenant")
        return tenant

    def _page(self, tenant: Tenant, anchor: str = "") -> HttpResponseRedirect:
        url = reverse("admin:tenants_tenant_change", args=[tenant.pk])
        return HttpResponseRedirect(f"{url}#{anchor}" if anchor else url)

    def _confirm(
        self,
        request,
        tenant: Tenant,
        *,
        title: str,
        explanation: list[str],
        confirm_label: str,
        form: forms.Form | None = None,
        outbound: bool = True,
    ) -> TemplateResponse:
        return TemplateResponse(
            request,
            "admin/tenants/tenant/operation_confirm.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": title,
                "tenant": tenant,
                "original": tenant,
                "explanation": explanation,
                "confirm_label": confirm_label,
                "form": form,
                "outbound": outbound,
                "page_url": reverse("admin:tenants_tenant_change", args=[tenant.pk]),
            },
        )

    @staticmethod
    def _confirmed(request) -> bool:
        """A POST from the confirmation page (an outbound action never runs from a bare POST)."""
        return request.method == "POST" and request.POST.get("confirmed") == "yes"

    def _queue(self, request, tenant: Tenant, *, kind: str, params: dict | None = None, what: str):
        with transaction.atomic():
            job = operator_job_queue(kind=kind, tenant=tenant, requested_by=request.user, params=params)
            self.log_change(request, tenant, f"{what} (operator job {job.pk})")
        self.message_user(
            request,
            f"{what}: queued as job {job.pk}; its progress is under “Operator jobs”.",
            messages.SUCCESS,
        )
        return self._page(tenant, "operator-jobs")

    # --- Long actions, queued as operator jobs ----------------------------------------------------

    def reaggregate_view(self, request, tenant_id: int):
        tenant = self._tenant(request, tenant_id, permission=JOB_PERMISSIONS[OperatorJob.Kind.REAGGREGATE])
        if request.method == "POST":
            form = ReaggregateForm(request.POST)
            if form.is_valid():
                first, last = form.cleaned_data["first_hour"], form.cleaned_data["last_hour"]
                return self._queue(
                    request,
                    tenant,
                    kind=OperatorJob.Kind.REAGGREGATE,
                    params={"since": first.isoformat(), "until": (last + HOUR).isoformat()},
                    what=f"Re-aggregation of {first:%Y-%m-%d %H:00} to {last:%Y-%m-%d %H:00} UTC",
                )
        else:
            previous = timezone.now().astimezone(UTC).replace(minute=0, second=0, microsecond=0) - HOUR
            form = ReaggregateForm(
                initial={"first_hour": previous - timedelta(hours=23), "last_hour": previous}
            )
        return self._confirm(
            request,
            tenant,
            title=f"Re-aggregate hours of {tenant.name}",
            explanation=[
                "Every hour of the range in which the tenant has events is recomputed from its raw events, "
                "by a worker, as the hourly aggregation does.",
                "Where an hour's value changes, the next usage report sends Stripe the difference: the "
                "tenant's bill follows the recomputed figures.",
                "Hours older than the raw events' retention (45 days), or before the last prune's "
                "cutoff, cannot be re-aggregated: their aggregates stand.",
            ],
            confirm_label="Re-aggregate",
            form=form,
        )

    def resync_view(self, request, tenant_id: int):
        tenant = self._tenant(request, tenant_id, permission=JOB_PERMISSIONS[OperatorJob.Kind.STRIPE_RESYNC])
        if request.method != "POST":  # reads from Stripe, sends nothing: no confirmation needed
            return self._confirm(
                request,
                tenant,
                title=f"Resync {tenant.name} from Stripe",
                explanation=[
                    "The customer, its subscriptions and invoices are read from Stripe and "
                    "mirrored here. Nothing is sent to Stripe."
                ],
                confirm_label="Resync",
                outbound=False,
            )
        return self._queue(request, tenant, kind=OperatorJob.Kind.STRIPE_RESYNC, what="Resync from Stripe")

    def budget_check_view(self, request, tenant_id: int):
        tenant = self._tenant(request, tenant_id, permission=JOB_PERMISSIONS[OperatorJob.Kind.BUDGET_CHECK])
        if not self._confirmed(request):
            return self._confirm(
                request,
                tenant,
                title="Run the budget check now",
                explanation=[
                    "Yesterday's AWS costs are read from Cost Explorer and every active budget (of all "
                    "tenants and the account) is judged, as the daily 06:00 UTC check does.",
                    "Alerts that are due are sent (SNS and e-mail), and pass-through overages are billed "
                    "to tenants as Stripe invoice items, once per month.",
                ],
                confirm_label="Yes, run the budget check",
            )
        return self._queue(request, tenant, kind=OperatorJob.Kind.BUDGET_CHECK, what="Budget check")

    def reconcile_view(self, request, tenant_id: int):
        tenant = self._tenant(request, tenant_id, permission=JOB_PERMISSIONS[OperatorJob.Kind.RECONCILIATION])
        if not self._confirmed(request):
            return self._confirm(
                request,
                tenant,
                title="Run reconciliation with Stripe now",
                explanation=[
                    "Local usage, what was sent and Stripe's meter summaries are compared for every tenant "
                    "over Stripe's 35-day window, as the nightly run does.",
                    "Usage that Stripe is missing is sent again (same identifiers: nothing is billed "
                    "twice), and differences are e-mailed to the operators.",
                ],
                confirm_label="Yes, reconcile now",
            )
        return self._queue(request, tenant, kind=OperatorJob.Kind.RECONCILIATION, what="Reconciliation")

    def jobs_view(self, request, tenant_id: int):
        """The tenant's recent jobs, for the page's progress poll (staff with view permission)."""
        tenant = self._tenant(request, tenant_id, permission=None)
        jobs = tenant_jobs(tenant_id=tenant.pk)
        return JsonResponse(
            {
                "running": any(not job.is_finished for job in jobs),
                "jobs": [
                    {
                        "id": job.pk,
                        "kind": job.kind,
                        "kind_label": job.get_kind_display(),
                        "state": job.status,
                        "state_label": job.get_status_display(),
                        "progress": job.progress,
                        "started_at": job.started_at.isoformat() if job.started_at else None,
                        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
                        "result": job.result,
                    }
                    for job in jobs
                ],
            },
            headers={"Cache-Control": "no-store"},
        )

    # --- Short actions ----------------------------------------------------------------------------

    def suspend_view(self, request, tenant_id: int):
        tenant = self._tenant(request, tenant_id, permission=SUSPEND_TENANT)
        form = SuspendForm(request.POST if self._confirmed(request) else None)
        if not form.is_bound or not form.is_valid():
            return self._confirm(
                request,
                tenant,
                title=f"Suspend {tenant.name}",
                explanation=[
                    "Every API key of the tenant answers 403 until it is reactivated. Usage "
                    "already recorded is still aggregated and reported."
                ],
                confirm_label="Yes, suspend",
                form=form,
                outbound=False,
            )
        reason = form.cleaned_data["reason"]
        if tenant_suspend(tenant=tenant, actor=request.user, source="admin", reason=reason):
            self.log_change(request, tenant, f"Suspended{f': {reason}' if reason else ''}")
            self.message_user(request, f"{tenant.name} is suspended: its API keys get 403.", messages.SUCCESS)
        else:
            self.message_user(request, f"{tenant.name} was already suspended.", messages.WARNING)
        return self._page(tenant)

    def reactivate_view(self, request, tenant_id: int):
        tenant = self._tenant(request, tenant_id, permission=SUSPEND_TENANT)
        if request.method != "POST":
            return self._confirm(
                request,
                tenant,
                title=f"Reactivate {tenant.name}",
                explanation=["The tenant's active API keys work again."],
                confirm_label="Reactivate",
                outbound=False,
            )
        if tenant_reactivate(tenant=tenant, actor=request.user, source="admin"):
            self.log_change(request, tenant, "Reactivated")
            self.message_user(request, f"{tenant.name} is active again.", messages.SUCCESS)
        else:
            self.message_user(request, f"{tenant.name} was already active.", messages.WARNING)
        return self._page(tenant)

    def rotate_key_view(self, request, tenant_id: int, key_id: int):
        """Issue a new key and revoke the old one, in one transaction, after confirmation; the new
        key is shown once, on this response (never stored, never put in a message or a redirect)."""
        tenant = self._tenant(request, tenant_id, permission=MANAGE_API_KEYS)
        old = TenantAPIKey.objects.filter(pk=key_id, tenant=tenant).first()
        if old is None:
            raise Http404("no such key for this tenant")
        if old.revoked:
            self.message_user(
                request, f"Key {old.prefix} is already revoked: create a new key instead.", messages.ERROR
            )
            return self._page(tenant)
        default_name = f"{old.name} (rotated {timezone.now():%Y-%m-%d})"[:50]
        form = RotateKeyForm(
            request.POST if self._confirmed(request) else None, initial={"name": default_name}
        )
        if not form.is_bound or not form.is_valid():
            return self._confirm(
                request,
                tenant,
                title=f"Rotate API key {old.prefix}",
                explanation=[
                    f"A new key is issued for {tenant.name} and shown once, on the next page: give it to "
                    "the tenant.",
                    f"The key “{old.name}” ({old.prefix}…) is revoked at the same moment: calls with it "
                    "get 401 from then on.",
                ],
                confirm_label="Yes, rotate the key",
                form=form,
            )
        try:
            with transaction.atomic():
                issued = api_key_issue(
                    tenant=tenant, name=form.cleaned_data["name"], actor=request.user, source="admin"
                )
                if not api_key_revoke(api_key=old, actor=request.user, source="admin"):
                    # Rotated by someone else meanwhile: keep one replacement, not two.
                    raise TenantError(f"key {old.prefix} was revoked meanwhile; no new key was made")
        except TenantError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return self._page(tenant)
        self.log_change(
            request, tenant, f"Rotated API key {old.prefix}: revoked, replaced by {issued.api_key.prefix}"
        )
        self.log_change(request, old, f"Revoked by rotation (replaced by {issued.api_key.prefix})")
        response = TemplateResponse(
            request,
            "admin/tenants/tenant/key_rotated.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": f"New API key for {tenant.name}",
                "tenant": tenant,
                "original": tenant,
                "old": old,
                "issued": issued,
                "page_url": reverse("admin:tenants_tenant_change", args=[tenant.pk]),
            },
        )
        response["Cache-Control"] = "no-store"
        return response


@admin.register(OperatorJob)
class OperatorJobAdmin(ReadOnlyAdmin):
    """Jobs are the record of what operators ran: read-only."""

    list_display = [
        "id",
        "kind",
        "tenant_link",
        "status",
        "progress",
        "requested_by",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "kind"]
    search_fields = ["tenant__slug", "tenant__name", "task_id"]
    list_select_related = ["tenant", "requested_by"]
    readonly_fields = [f.name for f in OperatorJob._meta.fields]

    @admin.display(description="tenant", ordering="tenant__name")
    def tenant_link(self, obj):
        if obj.tenant is None:
            return "—"
        url = reverse("admin:tenants_tenant_change", args=[obj.tenant_id])
        return format_html('<a href="{}">{}</a>', url, obj.tenant.name)
