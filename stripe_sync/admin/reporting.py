"""Admin for usage reporting: the outbox, the circuit breaker and reconciliation runs."""

from django.contrib import admin, messages
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from core.admin_mixins import ReadOnlyAdmin
from core.permissions import CANCEL_AT_STRIPE, RUN_OPERATOR_JOBS
from stripe_sync.circuit import circuit_is_open, circuit_reset
from stripe_sync.client import StripeNotConfigured
from stripe_sync.models import (
    CircuitBreaker,
    ReconciliationItem,
    ReconciliationRun,
    ReportingBalance,
    UsageReport,
)
from stripe_sync.reporting import ReportError, usage_report_cancel, usage_report_retry
from stripe_sync.tasks.reporting import reconcile_usage


def confirm(modeladmin, request, queryset, *, action: str, title: str, explanation: str, label: str):
    """The confirmation page of an action that sends something out; None once confirmed."""
    if request.POST.get("confirmed") == "yes":
        return None
    return TemplateResponse(
        request,
        "admin/action_confirm.html",
        {
            **modeladmin.admin_site.each_context(request),
            "opts": modeladmin.model._meta,
            "title": title,
            "explanation": explanation,
            "queryset": queryset,
            "action": action,
            "confirm_label": label,
        },
    )


@admin.register(UsageReport)
class UsageReportAdmin(ReadOnlyAdmin):
    list_display = (
        "identifier",
        "tenant",
        "meter",
        "hour",
        "quantity",
        "value",
        "status",
        "attempts",
        "first_attempt_at",
        "error",
    )
    list_filter = ("status", "outcome_unknown", "meter", ("hour", admin.DateFieldListFilter))
    search_fields = ("=identifier", "tenant__slug", "=customer_id")
    list_select_related = ("tenant", "meter")
    date_hierarchy = "hour"
    actions = ["resend", "cancel_at_stripe"]
    readonly_fields = [f.name for f in UsageReport._meta.fields]

    @admin.display(description="Error")
    def error(self, obj):
        return (obj.error_message[:80] + "…") if len(obj.error_message) > 80 else obj.error_message

    def has_resend_permission(self, request, obj=None):
        return request.user.has_perm("stripe_sync.change_usagereport")

    def has_cancel_at_stripe_permission(self, request, obj=None):
        return request.user.has_perm(CANCEL_AT_STRIPE)

    @admin.action(description="Resend failed reports (same identifier and value)", permissions=["resend"])
    def resend(self, request, queryset):
        page = confirm(
            self,
            request,
            queryset,
            action="resend",
            title="Resend failed reports to Stripe",
            explanation="These reports go back to the queue and are sent by the next reporting run, "
            "with their identifiers and values unchanged.",
            label="Yes, resend them",
        )
        if page:
            return page
        done = 0
        for report in queryset:
            if usage_report_retry(report=report):
                done += 1
                self.log_change(request, report, "Queued again for sending to Stripe")
        skipped = queryset.count() - done
        self.message_user(request, f"{done} report(s) queued again; {skipped} were not failed and were left.")
        return None

    @admin.action(
        description="Cancel at Stripe (meter event adjustment, within 24 h)", permissions=["cancel_at_stripe"]
    )
    def cancel_at_stripe(self, request, queryset):
        page = confirm(
            self,
            request,
            queryset,
            action="cancel_at_stripe",
            title="Cancel reports at Stripe",
            explanation="Stripe will stop billing these meter events. Only reports sent in the last 24 hours "
            "can be canceled; the usage then shows in reconciliation as not sent.",
            label="Yes, cancel them at Stripe",
        )
        if page:
            return page
        for report in queryset:
            try:
                usage_report_cancel(report=report)
            except (ReportError, StripeNotConfigured) as error:
                self.message_user(request, f"{report}: {error}", messages.ERROR)
            except Exception as error:  # noqa: BLE001 (Stripe's answer, shown to the operator)
                self.message_user(request, f"{report}: Stripe refused: {error}", messages.ERROR)
            else:
                self.log_change(request, report, "Canceled at Stripe")
                self.message_user(request, f"{report}: canceled at Stripe.")
        return None


@admin.register(CircuitBreaker)
class CircuitBreakerAdmin(admin.ModelAdmin):
    list_display = ("name", "state", "failures", "open_until", "last_error", "updated_at")
    readonly_fields = ("name", "failures", "opened_at", "open_until", "last_error", "updated_at")
    actions = ["close"]

    @admin.display(description="State")
    def state(self, obj):
        if circuit_is_open(obj):
            return format_html('<strong style="color:#ba2121">OPEN until {} UTC</strong>', obj.open_until)
        return (
            "closed (calls go through)" if obj.failures == 0 else f"closed, {obj.failures} recent failure(s)"
        )

    def has_add_permission(self, request):
        return False

    @admin.action(description="Close the breaker now (calls resume)", permissions=["change"])
    def close(self, request, queryset):
        for breaker in queryset:
            circuit_reset(breaker.name)
            self.log_change(request, breaker, "Closed by hand")
        self.message_user(request, "Closed; the next reporting run calls Stripe again.")


class ReconciliationItemInline(admin.TabularInline):
    model = ReconciliationItem
    fields = ("hour", "tenant", "meter", "kind", "local_quantity", "sent_value", "stripe_value", "resolution")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(admin.ModelAdmin):
    list_display = (
        "started_at",
        "trigger",
        "status",
        "hours_checked",
        "differences",
        "resent",
        "stripe_calls",
        "duration",
    )
    list_filter = ("status", "trigger")
    readonly_fields = [f.name for f in ReconciliationRun._meta.fields]
    inlines = [ReconciliationItemInline]
    change_list_template = "admin/stripe_sync/reconciliationrun/change_list.html"

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Duration")
    def duration(self, obj):
        return "running" if obj.duration is None else f"{obj.duration.total_seconds():.1f} s"

    def get_urls(self):
        run = path("run/", self.admin_site.admin_view(self.run_now), name="stripe_sync_reconciliationrun_run")
        return [run, *super().get_urls()]

    def has_run_permission(self, request) -> bool:
        return request.user.has_perm(RUN_OPERATOR_JOBS)

    def changelist_view(self, request, extra_context=None):
        # The "Run reconciliation now" button only for those who may press it.
        extra_context = {**(extra_context or {}), "can_run": self.has_run_permission(request)}
        return super().changelist_view(request, extra_context)

    def run_now(self, request):
        """POST from the list's button: queue a reconciliation for a worker (recorded in the admin log)."""
        if not self.has_run_permission(request):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        result = reconcile_usage.delay(trigger="admin")
        LogEntry.objects.create(
            user_id=request.user.pk,
            content_type=ContentType.objects.get_for_model(ReconciliationRun),
            object_repr=f"reconciliation task {result.id}",
            action_flag=ADDITION,
            change_message="Queued a reconciliation run from admin",
        )
        self.message_user(
            request,
            f"Reconciliation queued at {timezone.now():%H:%M:%S} UTC (task {result.id}); "
            "it appears in this list when a worker has run it.",
        )
        return HttpResponseRedirect(reverse("admin:stripe_sync_reconciliationrun_changelist"))


class PairFailedFilter(admin.SimpleListFilter):
    title = "preparation"
    parameter_name = "failed"

    def lookups(self, request, model_admin):
        return [("yes", "Failed"), ("no", "Fine")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(failed_at__isnull=self.value() == "no")
        return queryset


@admin.register(ReportingBalance)
class ReportingBalanceAdmin(ReadOnlyAdmin):
    """Per (tenant, meter): what was reported, and whether preparing its reports failed (the other
    pairs went on; the mark clears itself once the pair is prepared fine again)."""

    list_display = ("tenant", "meter", "quantity", "units", "state", "failed_at", "error")
    list_filter = (PairFailedFilter, "meter")
    search_fields = ("tenant__slug",)
    list_select_related = ("tenant", "meter")
    readonly_fields = [f.name for f in ReportingBalance._meta.fields]

    @admin.display(description="State")
    def state(self, obj):
        if obj.failed_at is not None:
            return "FAILED: not reported until fixed"
        return "reporting"
