import json
from datetime import UTC, datetime, time, timedelta

from botocore.exceptions import BotoCoreError, ClientError
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Max, OuterRef, Subquery
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html

from core.admin_mixins import PlainDecimalsMixin, ReadOnlyAdmin
from core.aws import AwsError
from core.money import format_quantity
from core.parsing import ParseError, parse_date
from core.permissions import can_see_revenue
from metering.allowances import allowance_resolve, plan_allowances_changed
from metering.charts import meter_usage_chart
from metering.eventbus import UsageQueueError, usage_queue_consume_configured
from metering.eventstore import event_store
from metering.models import (
    VALUE_AGGREGATIONS,
    AggregationRun,
    HourlyAggregate,
    HourlyAggregateChange,
    Meter,
    MeterFilter,
    PendingHour,
    PlanMeterAllowance,
    Price,
    UsageEvent,
    UsageQueue,
    UsageThreshold,
    UsageThresholdCrossing,
)
from metering.selectors import daily_usage, last_days
from metering.services import (
    MeterError,
    meter_check_aggregation_change,
    meter_filters_changed,
    meter_has_usage,
)
from tenants.models import Tenant

CHART_DAYS = 30
CHART_HEIGHT = 120


class EstimatedCountPaginator(Paginator):
    """A paginator that never counts a whole big table.

    COUNT(*) on PostgreSQL reads every row; on 10M events that is seconds per list page. An
    unfiltered list takes the planner's row estimate; anything else, or a table too small or
    not yet analyzed for the estimate to matter, counts at most `count_cap + 1` rows.
    """

    count_cap = 10_000
    count_is_estimate = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not queryset.query.where:
            estimate = self._planner_estimate(queryset)
            if estimate > self.count_cap:
                self.count_is_estimate = True
                return estimate
        return queryset.order_by().values("pk")[: self.count_cap + 1].count()

    @cached_property
    def count_text(self) -> str:
        """How the list states its size (templates/admin/pagination.html, search_form.html): never a
        capped count or an estimate as if it were exact."""
        count = self.count
        if self.count_is_estimate:
            return f"about {count:,} (estimate)"
        if count > self.count_cap:
            return f"more than {self.count_cap:,}"
        return f"{count:,}"

    @staticmethod
    def _planner_estimate(queryset) -> int:
        connection = connections[queryset.db]
        if connection.vendor != "postgresql":
            return -1
        with connection.cursor() as cursor:
            # reltuples is -1 for a table never vacuumed or analyzed (PostgreSQL 14+). A partitioned
            # table (the raw events) has no rows of its own: the sum of its partitions' estimates.
            table = queryset.model._meta.db_table
            cursor.execute(
                "SELECT CASE WHEN count(*) FILTER (WHERE reltuples >= 0) = 0 THEN -1 "
                "ELSE sum(greatest(reltuples, 0)) END::bigint FROM pg_class "
                "WHERE relkind <> 'p' AND oid IN (SELECT to_regclass(%s) "
                "UNION ALL SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass(%s))",
                [table, table],
            )
            row = cursor.fetchone()
        return row[0] if row and row[0] is not None else -1


class BigTableAdmin(ReadOnlyAdmin):
    """Lists over tables of millions of rows: no full counts, no facet counts, and ordering
    only by the primary key (sorting by another column would sort the whole table)."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    ordering = ["-id"]
    sortable_by = ()


class CommaSeparatedValuesField(forms.CharField):
    """A JSON list of values edited as text: "200, 201" <-> ["200", "201"]."""

    def prepare_value(self, value):
        if isinstance(value, list):
            return ", ".join(str(item) for item in value)
        return value

    def to_python(self, value):
        values = []
        for token in super().to_python(value).split(","):
            token = token.strip()
            if token and token not in values:
                values.append(token)
        return values


class MeterFilterForm(forms.ModelForm):
    # Kept as text: the filter compares an event's property as text (MeterFilter.text_values), so
    # "200" matches both 200 and "200", and "007" is not silently turned into 7.
    values = CommaSeparatedValuesField(
        help_text="Comma-separated; stored as text and compared as text, so 200 matches 200 and "
        "\"200\". A value cannot contain a comma. 'equals' takes exactly one value.",
        widget=forms.TextInput(attrs={"size": 40}),
    )

    class Meta:
        model = MeterFilter
        fields = ["property", "operator", "values"]

    def clean(self):
        cleaned = super().clean()
        values = cleaned.get("values")
        if cleaned.get("operator") == MeterFilter.Operator.EQUALS and values and len(values) != 1:
            self.add_error("values", "'equals' takes exactly one value; use 'is one of' for several.")
        return cleaned


class MeterFilterInline(admin.TabularInline):
    model = MeterFilter
    form = MeterFilterForm
    extra = 0
    verbose_name = "filter"
    verbose_name_plural = "filters (an event counts only if every filter matches)"


class PriceForm(forms.ModelForm):
    class Meta:
        model = Price
        fields = ["meter", "plan", "currency", "model", "unit_amount", "package_size", "tiers"]
        widgets = {"tiers": forms.Textarea(attrs={"rows": 4, "cols": 70})}

    def clean_currency(self):
        currency = self.cleaned_data["currency"].strip().lower()
        if len(currency) != 3 or not currency.isascii() or not currency.isalpha():
            raise forms.ValidationError("A three-letter ISO currency code, e.g. usd.")
        return currency

    def clean_tiers(self):
        tiers = self.cleaned_data["tiers"]
        if tiers is None:  # an emptied textarea
            return []
        if not isinstance(tiers, list):
            raise forms.ValidationError("A JSON list of tiers, or [] for per-unit and package prices.")
        return tiers

    def clean(self):
        cleaned = super().clean()
        if any(field in self.errors for field in ("model", "tiers", "package_size")):
            return cleaned
        # Imported here so that the admin loads even where the pricing module is not deployed yet.
        from metering.pricing import PricingError, price_tiers_validate

        try:
            price_tiers_validate(
                model=cleaned["model"], tiers=cleaned["tiers"], package_size=cleaned["package_size"]
            )
        except PricingError as exc:
            self.add_error("tiers", str(exc))
        return cleaned


class PriceInline(PlainDecimalsMixin, admin.StackedInline):
    model = Price
    form = PriceForm
    extra = 0


class PlanMeterAllowanceInline(PlainDecimalsMixin, admin.TabularInline):
    """Per plan: units included per billing period (UTC month), an optional hard limit and what
    happens at it. Refuse is for count and sum meters only (the model's clean says why)."""

    model = PlanMeterAllowance
    fields = ["plan", "included", "hard_limit", "at_limit"]
    extra = 0
    verbose_name = "plan allowance"
    verbose_name_plural = "plan allowances (per billing period; without one: the free plan's allowance)"


class MeterForm(forms.ModelForm):
    class Meta:
        model = Meter
        fields = ["code", "name", "unit", "aggregation", "unique_property", "value_property"]

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("value_property") and cleaned.get("aggregation") not in VALUE_AGGREGATIONS:
            self.add_error(
                "value_property",
                "Only sum, max and latest meters read a quantity; leave this empty for this aggregation.",
            )
        if cleaned.get("aggregation") == Meter.Aggregation.UNIQUE_COUNT and not cleaned.get(
            "unique_property"
        ):
            self.add_error("unique_property", "A distinct-values meter needs the property to count.")
        locked = [field for field in ("aggregation", "unique_property") if field in self.changed_data]
        if self.instance.pk and locked and {"aggregation", "unique_property"} <= cleaned.keys():
            try:
                meter_check_aggregation_change(
                    meter=self.instance,
                    aggregation=cleaned["aggregation"],
                    unique_property=cleaned["unique_property"],
                )
            except MeterError as exc:
                for field in locked:
                    self.add_error(field, str(exc))
        return cleaned


@admin.register(Meter)
class MeterAdmin(admin.ModelAdmin):
    form = MeterForm
    list_display = ["code", "name", "unit", "aggregation", "filters_summary"]
    list_filter = ["aggregation"]
    search_fields = ["code", "name"]
    fields = [
        "code",
        "name",
        "unit",
        "aggregation",
        "unique_property",
        "value_property",
        "created_at",
        "updated_at",
    ]
    readonly_fields = ["created_at", "updated_at"]
    inlines = [MeterFilterInline, PriceInline, PlanMeterAllowanceInline]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("filters")

    @admin.display(description="filters")
    def filters_summary(self, obj):
        parts = []
        for meter_filter in obj.filters.all():
            operator = "=" if meter_filter.operator == MeterFilter.Operator.EQUALS else "in"
            parts.append(f"{meter_filter.property} {operator} {', '.join(meter_filter.text_values())}")
        return "; ".join(parts) or "—"

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        if any(formset.model is PlanMeterAllowance and formset.has_changed() for formset in formsets):
            plan_allowances_changed()
        filters_changed = any(formset.model is MeterFilter and formset.has_changed() for formset in formsets)
        if change and filters_changed:
            # Hours with raw events still in Stripe's window are aggregated again under the new
            # filters, also when none matched before (and so no aggregate exists yet).
            result = meter_filters_changed(meter=form.instance)
            self.message_user(request, f"Filters changed: {result.marked} hour(s) will be aggregated again.")

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        # Tenants' services send this code and Stripe's meter carries it as its event name:
        # once events exist, renaming it would orphan both.
        if obj is not None and meter_has_usage(meter=obj):
            fields.append("code")
        return fields

    def has_delete_permission(self, request, obj=None):
        # Events and aggregates refer to the meter; deleting it would orphan billed usage.
        if obj is not None and meter_has_usage(meter=obj):
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request):
        # Bulk delete would skip the per-meter check above and list a meter's protected events,
        # a query by meter alone that no index of UsageEvent serves.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


@admin.register(PlanMeterAllowance)
class PlanMeterAllowanceAdmin(PlainDecimalsMixin, admin.ModelAdmin):
    """What each plan includes of each meter per billing period (the UTC calendar month), its hard
    limit and what happens at it; docs/api.md ("Allowances, limits and entitlements")."""

    list_display = ["plan", "meter", "included", "hard_limit", "at_limit", "updated_at"]
    list_filter = ["plan", "at_limit", "meter"]
    search_fields = ["meter__code"]
    list_select_related = ["meter"]
    fields = ["plan", "meter", "included", "hard_limit", "at_limit", "created_at", "updated_at"]
    readonly_fields = ["created_at", "updated_at"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        plan_allowances_changed()

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        plan_allowances_changed()

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset)
        plan_allowances_changed()


@admin.register(Price)
class PriceAdmin(PlainDecimalsMixin, admin.ModelAdmin):
    form = PriceForm
    list_display = ["meter", "plan", "currency", "model", "unit_amount", "package_size"]
    list_filter = ["plan", "model", "currency"]
    search_fields = ["meter__code"]
    list_select_related = ["meter"]


class UtcDayFilter(admin.SimpleListFilter):
    """The last 14 UTC days: a range on the timestamp, unlike date_hierarchy, which first runs
    a query over the whole table to find the dates that have rows."""

    title = "day (UTC)"
    parameter_name = "day"
    days = 14

    def lookups(self, request, model_admin):
        today = timezone.now().astimezone(UTC).date()
        return [
            (day.isoformat(), f"{day:%Y-%m-%d (%a)}")
            for day in (today - timedelta(days=offset) for offset in range(self.days))
        ]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        try:
            day = parse_date(self.value(), what="day:")
        except ParseError as exc:
            raise IncorrectLookupParameters(str(exc)) from exc
        start = datetime.combine(day, time.min, tzinfo=UTC)
        return queryset.filter(timestamp__gte=start, timestamp__lt=start + timedelta(days=1))


@admin.register(UsageEvent)
class UsageEventAdmin(BigTableAdmin):
    list_display = ["event_id", "tenant", "meter", "timestamp", "quantity", "received_at"]
    list_filter = ["tenant", "meter", UtcDayFilter]
    list_select_related = ["tenant", "meter"]
    search_fields = ["=event_id"]
    search_help_text = "An exact event id. Pick a tenant too for an indexed lookup."
    fields = ["event_id", "tenant", "meter", "timestamp", "quantity", "properties_json", "received_at"]
    readonly_fields = ["properties_json"]

    def get_search_results(self, request, queryset, search_term):
        # Exact and case-sensitive, unlike "=event_id" (iexact: UPPER(event_id) = UPPER(...)),
        # which no index can serve. With a tenant filter this is a (tenant, event_id) index lookup.
        term = search_term.strip()
        if not term:
            return queryset, False
        queryset = queryset.filter(event_id=term)
        tenant_id = request.GET.get("tenant__id__exact", "")
        if tenant_id.isdigit():
            # The store knows where the tenant's event sits in time (PostgreSQL: its key row), so
            # the lookup reads that day's partition instead of every day's.
            stamps = event_store().event_timestamps(term, tenant_id=int(tenant_id))
            if stamps is not None:
                queryset = queryset.filter(timestamp__in=stamps)
        return queryset, False

    @admin.display(description="properties")
    def properties_json(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.properties, indent=2, sort_keys=True))


class HourlyAggregateChangeInline(admin.TabularInline):
    model = HourlyAggregateChange
    extra = 0
    can_delete = False
    verbose_name_plural = "change history"
    fields = ["revision", "old", "new", "old_event_count", "new_event_count", "created_at"]
    readonly_fields = fields

    @admin.display(description="old value")
    def old(self, obj):
        return "-" if obj.old_value is None else format_quantity(obj.old_value)

    @admin.display(description="new value")
    def new(self, obj):
        return format_quantity(obj.new_value)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(HourlyAggregate)
class HourlyAggregateAdmin(BigTableAdmin):
    list_display = [
        "tenant",
        "meter",
        "hour",
        "value",
        "event_count",
        "revision",
        "updated_at",
        "usage_chart",
        "month_estimate",
    ]
    list_filter = ["tenant", "meter"]
    list_select_related = ["tenant", "meter"]
    inlines = [HourlyAggregateChangeInline]

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "usage-chart/<int:tenant_id>/",
                self.admin_site.admin_view(self.usage_chart_view),
                name="{}_{}_usage_chart".format(*info),
            ),
            path(
                "estimate/<int:tenant_id>/",
                self.admin_site.admin_view(self.estimate_view),
                name="{}_{}_estimate".format(*info),
            ),
            *super().get_urls(),
        ]

    def get_list_display(self, request):
        # The month estimate is money, and its page answers 403 without view_revenue: no column.
        columns = super().get_list_display(request)
        if can_see_revenue(request.user):
            return columns
        return [column for column in columns if column != "month_estimate"]

    @admin.display(description="usage chart")
    def usage_chart(self, obj):
        return format_html(
            '<a href="{}">usage chart</a>',
            reverse("admin:metering_hourlyaggregate_usage_chart", args=[obj.tenant_id]),
        )

    @admin.display(description="month estimate")
    def month_estimate(self, obj):
        return format_html(
            '<a href="{}">month estimate</a>',
            reverse("admin:metering_hourlyaggregate_estimate", args=[obj.tenant_id]),
        )

    def _report_context(self, request, tenant: Tenant, title: str) -> dict:
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "tenant": tenant,
            "aggregates_url": reverse("admin:metering_hourlyaggregate_changelist")
            + f"?tenant__id__exact={tenant.pk}",
            "chart_url": reverse("admin:metering_hourlyaggregate_usage_chart", args=[tenant.pk]),
            # The estimate is money: linked only for those who may open it.
            "estimate_url": reverse("admin:metering_hourlyaggregate_estimate", args=[tenant.pk])
            if can_see_revenue(request.user)
            else "",
        }

    def usage_chart_view(self, request, tenant_id: int):
        if not self.has_view_permission(request):
            raise PermissionDenied
        tenant = get_object_or_404(Tenant, pk=tenant_id)
        days = last_days(now=timezone.now(), count=CHART_DAYS)
        daily = daily_usage(tenant=tenant, days=days)
        units = dict(Meter.objects.filter(code__in=daily).values_list("code", "unit"))
        charts = [
            meter_usage_chart(
                code=code,
                unit=units.get(code, ""),
                daily=usage,
                days=days,
                plot_height=CHART_HEIGHT,
                every_day=False,
                css_class="usage-chart",
            )
            for code, usage in sorted(daily.items())
        ]
        context = self._report_context(request, tenant, f"Usage of {tenant.name}, last {CHART_DAYS} days")
        context.update(charts=charts, chart_days=CHART_DAYS, first_day=days[0], last_day=days[-1])
        return TemplateResponse(request, "admin/metering/hourlyaggregate/usage_chart.html", context)

    def estimate_view(self, request, tenant_id: int):
        # Charges are money: the revenue permission too, not only the right to view aggregates.
        if not self.has_view_permission(request) or not can_see_revenue(request.user):
            raise PermissionDenied
        tenant = get_object_or_404(Tenant, pk=tenant_id)
        # Imported here so that the admin loads even where the estimates module is not deployed yet.
        from metering.estimates import estimate_summary, tenant_month_estimate

        now = timezone.now().astimezone(UTC)
        month = now.date().replace(day=1)
        summary = estimate_summary(estimates=tenant_month_estimate(tenant=tenant, month=month), month=month)
        context = self._report_context(request, tenant, f"Estimate for {tenant.name}, {now:%B %Y}")
        context.update(rows=summary.lines, totals=summary.totals, now=now)
        return TemplateResponse(request, "admin/metering/hourlyaggregate/estimate.html", context)


@admin.register(PendingHour)
class PendingHourAdmin(ReadOnlyAdmin):
    list_display = ["tenant", "meter", "hour", "marked_at"]
    list_filter = ["meter"]
    list_select_related = ["tenant", "meter"]
    ordering = ["hour"]


@admin.register(AggregationRun)
class AggregationRunAdmin(ReadOnlyAdmin):
    list_display = [
        "started_at",
        "finished_at",
        "status",
        "trigger",
        "hours_aggregated",
        "hours_changed",
        "short_error",
    ]
    list_filter = ["status", "trigger"]

    @admin.display(description="error")
    def short_error(self, obj):
        first_line = obj.error.strip().splitlines()[0] if obj.error.strip() else ""
        return first_line[:120]


# A poll from an admin page does not long-poll and stops early; the periodic task does the rest.
ADMIN_POLL_MAX_MESSAGES = 100


@admin.register(UsageQueue)
class UsageQueueAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "meter",
        "enabled",
        "received",
        "processed",
        "duplicates",
        "failed",
        "short_error",
        "last_error_at",
        "last_polled_at",
    ]
    list_filter = ["enabled", "meter"]
    list_select_related = ["meter"]
    search_fields = ["url"]
    fields = [
        "url",
        "meter",
        "enabled",
        "visibility_timeout",
        "received",
        "processed",
        "duplicates",
        "failed",
        "last_error",
        "last_error_at",
        "last_polled_at",
        "created_at",
        "updated_at",
    ]
    readonly_fields = [
        "received",
        "processed",
        "duplicates",
        "failed",
        "last_error",
        "last_error_at",
        "last_polled_at",
        "created_at",
        "updated_at",
    ]
    actions = ["enable", "disable", "consume_now"]

    @admin.display(description="last error")
    def short_error(self, obj):
        return obj.last_error[:120]

    @admin.action(description="Enable (the periodic task polls them)", permissions=["change"])
    def enable(self, request, queryset):
        changed = queryset.filter(enabled=False).update(enabled=True, updated_at=timezone.now())
        self.message_user(request, f"{changed} queue(s) enabled.")

    @admin.action(description="Disable (messages wait in SQS)", permissions=["change"])
    def disable(self, request, queryset):
        changed = queryset.filter(enabled=True).update(enabled=False, updated_at=timezone.now())
        self.message_user(request, f"{changed} queue(s) disabled.")

    @admin.action(
        description=f"Consume now (up to {ADMIN_POLL_MAX_MESSAGES} messages each)", permissions=["change"]
    )
    def consume_now(self, request, queryset):
        for queue in queryset.select_related("meter"):
            try:
                result = usage_queue_consume_configured(
                    queue=queue, max_messages=ADMIN_POLL_MAX_MESSAGES, wait_seconds=0
                )
            except (UsageQueueError, AwsError, ClientError, BotoCoreError) as exc:  # kept on the row too
                self.message_user(request, f"{queue}: poll failed: {exc}", level=messages.ERROR)
                continue
            level = messages.WARNING if result.failed else messages.SUCCESS
            self.message_user(request, f"{queue}: {result.summary()}", level=level)


class UsageThresholdCrossingInline(PlainDecimalsMixin, admin.TabularInline):
    """The periods in which the threshold was crossed (and its webhook event published)."""

    model = UsageThresholdCrossing
    fields = ["period_start", "units", "usage", "crossed_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["-period_start"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(UsageThreshold)
class UsageThresholdAdmin(PlainDecimalsMixin, admin.ModelAdmin):
    """Levels of a tenant's monthly usage of a meter that publish `usage.threshold_crossed` once per
    month (UTC); docs/integrations.md ("Usage thresholds")."""

    list_display = ["tenant", "meter", "kind", "value", "units_now", "enabled", "last_crossed", "created_at"]
    list_filter = ["enabled", "kind", "meter", ("tenant", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["tenant", "meter"]
    search_fields = ["tenant__slug", "tenant__name", "tenant__external_id", "meter__code"]
    fields = ["tenant", "meter", "kind", "value", "enabled", "created_at", "updated_at"]
    readonly_fields = ["created_at", "updated_at"]
    inlines = [UsageThresholdCrossingInline]
    actions = ["enable", "disable"]

    def get_readonly_fields(self, request, obj=None):
        # Tenant and meter are the threshold's identity (its crossings belong to them): fixed once made.
        return [*self.readonly_fields, "tenant", "meter"] if obj is not None else self.readonly_fields

    @admin.display(description="units (this month)")
    def units_now(self, obj):
        # The plan's row for the meter, as the list's query read it (_plan_included), resolved as
        # everywhere else (metering.allowances).
        key = (obj.tenant.plan, obj.meter_id)
        rows = {}
        if obj._plan_included is not None:
            rows[key] = PlanMeterAllowance(plan=key[0], meter_id=key[1], included=obj._plan_included)
        units = obj.units(allowance_resolve(tenant=obj.tenant, meter_id=obj.meter_id, rows=rows).included)
        return "- (no allowance)" if units is None else format_quantity(units)

    def get_queryset(self, request):
        plan_row = PlanMeterAllowance.objects.filter(plan=OuterRef("tenant__plan"), meter=OuterRef("meter"))
        return (
            super()
            .get_queryset(request)
            .annotate(
                _last_crossed=Max("crossings__period_start"),
                _plan_included=Subquery(plan_row.values("included")[:1]),
            )
        )

    @admin.display(description="last crossed", ordering="_last_crossed")
    def last_crossed(self, obj):
        return f"{obj._last_crossed:%Y-%m}" if obj._last_crossed else "-"

    @admin.action(description="Enable", permissions=["change"])
    def enable(self, request, queryset):
        changed = queryset.filter(enabled=False).update(enabled=True, updated_at=timezone.now())
        self.message_user(request, f"{changed} threshold(s) enabled.")

    @admin.action(description="Disable (no events until enabled again)", permissions=["change"])
    def disable(self, request, queryset):
        changed = queryset.filter(enabled=True).update(enabled=False, updated_at=timezone.now())
        self.message_user(request, f"{changed} threshold(s) disabled.")
