from datetime import date

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, HttpResponseBadRequest
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from core.admin_mixins import PlainDecimalsMixin, ReadOnlyAdmin
from core.db_routing import lagging_reads
from core.money import format_minor, format_money
from core.parsing import ParseError, parse_int, parse_month
from core.permissions import can_see_revenue
from costwatch.alerts import alerts_acknowledge, budgets_snooze
from costwatch.budgets import DEFAULT_THRESHOLDS, thresholds_format, thresholds_parse
from costwatch.conf import CostwatchConfigError, costwatch_config
from costwatch.margin import margin_csv, margin_table, month_chart
from costwatch.models import (
    Alert,
    Budget,
    BudgetEvaluation,
    CostCheckRun,
    DailyCost,
    PassThroughCharge,
    TenantMargin,
)

SNOOZE_DAYS = 7


class ThresholdsField(forms.CharField):
    """Thresholds as operators type them: "50,80:forecast,100" (no suffix: actual and forecast)."""

    def prepare_value(self, value):
        return thresholds_format(value) if isinstance(value, list) else value

    def to_python(self, value):
        return thresholds_parse(super().to_python(value) or DEFAULT_THRESHOLDS)


class EmailsField(forms.CharField):
    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        emails = [item.strip() for item in (super().to_python(value) or "").split(",") if item.strip()]
        for email in emails:
            forms.EmailField().clean(email)
        return emails


class BudgetForm(forms.ModelForm):
    thresholds = ThresholdsField(
        initial=DEFAULT_THRESHOLDS,
        help_text="Percentages, comma-separated; each may end in :actual, :forecast or :both (the default).",
    )
    emails = EmailsField(required=False, help_text="Comma-separated; empty: OPERATOR_EMAILS.")

    class Meta:
        model = Budget
        fields = [
            "name",
            "active",
            "amount",
            "currency",
            "thresholds",
            "scope",
            "service",
            "tag_value",
            "tenant",
            "sns_topic_arn",
            "emails",
            "snoozed_until",
            "pass_through",
            "markup_percent",
        ]


class EvaluationInline(admin.TabularInline):
    model = BudgetEvaluation
    fields = ["budget", "month", "actual", "forecast", "forecast_method", "forecast_note"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Budget)
class BudgetAdmin(PlainDecimalsMixin, admin.ModelAdmin):
    form = BudgetForm
    list_display = [
        "name",
        "scope_label",
        "amount",
        "currency",
        "thresholds_label",
        "tenant",
        "pass_through",
        "active",
        "snoozed_until",
        "latest",
        "chart",
    ]
    list_filter = ["active", "scope", "pass_through"]
    search_fields = ["name", "service", "tag_value", "tenant__slug"]
    autocomplete_fields = ["tenant"]
    actions = ["unsnooze"]
    fieldsets = [
        (None, {"fields": ["name", "active", "amount", "currency", "thresholds"]}),
        ("Scope", {"fields": ["scope", "service", "tag_value", "tenant"]}),
        ("Notifications", {"fields": ["sns_topic_arn", "emails", "snoozed_until"]}),
        ("Pass-through", {"fields": ["pass_through", "markup_percent"]}),
    ]

    @admin.display(description="scope")
    def scope_label(self, obj):
        return obj.scope_label

    @admin.display(description="thresholds")
    def thresholds_label(self, obj):
        return obj.thresholds_label

    @admin.display(description="latest check")
    def latest(self, obj):
        evaluation = obj.evaluations.order_by("-run__started_at", "-pk").first()
        if evaluation is None:
            return "-"
        actual = format_money(evaluation.actual, obj.currency)
        forecast = format_money(evaluation.forecast, obj.currency)
        return f"{actual} (forecast {forecast}, {evaluation.forecast_method})"

    @admin.display(description="chart")
    def chart(self, obj):
        return format_html(
            '<a href="{}?budget={}">chart</a>', reverse("admin:costwatch_tenantmargin_changelist"), obj.pk
        )

    @admin.action(description="End the snooze of the selected budgets", permissions=["change"])
    def unsnooze(self, request, queryset):
        updated = queryset.update(snoozed_until=None)
        self.message_user(request, f"{updated} budget(s) no longer snoozed.")


@admin.register(DailyCost)
class DailyCostAdmin(ReadOnlyAdmin):
    list_display = ["day", "service", "tag", "amount", "currency", "estimated", "metric", "updated_at"]
    list_filter = ["estimated", "metric", ("tag_value", admin.EmptyFieldListFilter), "service"]
    search_fields = ["service", "tag_value"]
    date_hierarchy = "day"

    @admin.display(description="tenant tag", ordering="tag_value")
    def tag(self, obj):
        return obj.tag_value or "(unattributed)"


@admin.register(CostCheckRun)
class CostCheckRunAdmin(ReadOnlyAdmin):
    list_display = [
        "started_at",
        "checked_date",
        "status",
        "trigger",
        "ce_requests",
        "cost_rows",
        "estimated_days",
        "month_to_date",
        "unattributed",
        "alerts_sent",
        "short_error",
    ]
    list_filter = ["status", "trigger"]
    inlines = [EvaluationInline]
    fields = [
        "trigger",
        "checked_date",
        "window_start",
        "window_end",
        "started_at",
        "finished_at",
        "status",
        "ce_requests",
        "cost_rows",
        "estimated_days",
        "month_to_date",
        "unattributed",
        "alerts_sent",
        "summary",
        "error",
    ]

    @admin.display(description="error")
    def short_error(self, obj):
        lines = obj.error.strip().splitlines()
        return lines[-1][:160] if lines else ""


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "budget",
        "kind",
        "month",
        "threshold",
        "day",
        "status",
        "sent_at",
        "acknowledged_at",
        "subject",
    ]
    list_filter = ["status", "kind", ("acknowledged_at", admin.EmptyFieldListFilter), "budget"]
    list_select_related = ["budget"]
    actions = ["acknowledge", "snooze"]
    fields = [
        "budget",
        "kind",
        "month",
        "threshold",
        "day",
        "actual",
        "forecast",
        "subject",
        "message",
        "status",
        "sns_topic_arn",
        "sns_message_id",
        "emailed_to",
        "error",
        "run",
        "created_at",
        "sent_at",
        "acknowledged_at",
        "acknowledged_by",
    ]

    def has_change_permission(self, request, obj=None):
        # Actions (acknowledge, snooze) need it; every field stays read-only.
        return admin.ModelAdmin.has_change_permission(self, request, obj)

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_snooze_permission(self, request, obj=None):
        # Snoozing changes the alerts' budgets.
        return self.has_change_permission(request) and request.user.has_perm("costwatch.change_budget")

    @admin.action(
        description="Acknowledge the selected alerts (not sent yet: never sent)", permissions=["change"]
    )
    def acknowledge(self, request, queryset):
        count = alerts_acknowledge(alert_ids=list(queryset.values_list("pk", flat=True)), user=request.user)
        self.message_user(request, f"{count} alert(s) acknowledged.")

    @admin.action(
        description=f"Snooze the budgets of the selected alerts for {SNOOZE_DAYS} days",
        permissions=["snooze"],
    )
    def snooze(self, request, queryset):
        budget_ids = sorted(set(queryset.values_list("budget_id", flat=True)))
        until = budgets_snooze(budget_ids=budget_ids, days=SNOOZE_DAYS)
        self.message_user(request, f"{len(budget_ids)} budget(s) snoozed until {until:%Y-%m-%d %H:%M} UTC.")


@admin.register(PassThroughCharge)
class PassThroughChargeAdmin(ReadOnlyAdmin):
    list_display = [
        "month",
        "budget",
        "tenant",
        "spend",
        "budget_amount",
        "overage",
        "markup_percent",
        "billed_amount",
        "status",
        "stripe_invoice_item_id",
        "reason",
        "billed_at",
    ]
    list_filter = ["status"]
    list_select_related = ["budget", "tenant"]

    @admin.display(description="amount billed", ordering="amount_minor")
    def billed_amount(self, obj):
        return format_minor(obj.amount_minor, obj.currency)


def _month(request) -> date:
    """The `month` query parameter (YYYY-MM, 2000 to 2100), the current month when absent;
    ParseError when it is not a month the page can show."""
    value = request.GET.get("month", "").strip()
    if value:
        return parse_month(value, what="month:")
    return timezone.now().date().replace(day=1)


def _budget_id(value: str) -> int | None:
    """The `budget` query parameter: a budget id, or None when it is not one."""
    try:
        return parse_int(value, minimum=1, maximum=2**63 - 1, what="budget")
    except ParseError:
        return None


def _shift(month: date, months: int) -> date:
    index = month.year * 12 + month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


@admin.register(TenantMargin)
class TenantMarginAdmin(ReadOnlyAdmin):
    """Not a list of rows: the per-tenant cost and margin page, its chart and its CSV."""

    def has_view_permission(self, request, obj=None):
        # Revenue and margin figures: also the revenue permission (core.permissions).
        return super().has_view_permission(request, obj) and can_see_revenue(request.user)

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path("csv/", self.admin_site.admin_view(self.csv_view), name="{}_{}_csv".format(*info)),
            *super().get_urls(),
        ]

    def _config(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            return costwatch_config()
        except CostwatchConfigError as exc:
            messages.error(request, str(exc))
            raise PermissionDenied(str(exc)) from None

    def changelist_view(self, request, extra_context=None):
        config = self._config(request)
        try:
            month = _month(request)
        except ParseError as exc:
            messages.error(request, f"{exc}; showing the current month")
            month = timezone.now().date().replace(day=1)
        budgets = list(Budget.objects.filter(active=True).order_by("name"))
        budget = None
        chosen = request.GET.get("budget", "")
        if chosen.isascii() and chosen.isdigit():  # "²" is a digit int() refuses
            budget = next((b for b in budgets if b.pk == _budget_id(chosen)), None)
        elif chosen != "none":
            budget = next((b for b in budgets if b.scope == Budget.Scope.ACCOUNT), None)
        with lagging_reads():  # the read replica when configured (docs/operations.md, "Read replica")
            table = margin_table(month=month, config=config)
            chart = month_chart(month=month, budget=budget, config=config)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Tenant cost and margin, {month:%B %Y}",
            "table": table,
            "chart": chart,
            "budget": budget,
            "budgets": budgets,
            "month": month,
            "previous_month": _shift(month, -1),
            "next_month": _shift(month, 1),
            "csv_url": reverse("admin:costwatch_tenantmargin_csv") + f"?month={month:%Y-%m}",
        }
        return TemplateResponse(request, "admin/costwatch/tenantmargin/margin.html", context)

    def csv_view(self, request):
        config = self._config(request)
        try:
            month = _month(request)
        except ParseError as exc:
            return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
        with lagging_reads():
            table = margin_table(month=month, config=config)
        response = HttpResponse(margin_csv(table), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="tenant-margin-{month:%Y-%m}.csv"'
        return response
