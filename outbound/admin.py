"""Admin: webhook endpoints (create, re-enable, rotate the secret, send a test event) and the delivery
log (read-only, with Replay). The signing secret is shown once, in the message after creation or
rotation; it is never displayed again (rotate to get a new one)."""

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import Truncator

from outbound.events import ALL_EVENTS, EVENT_TYPES, event_types_validate
from outbound.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookMessage
from outbound.services import (
    webhook_delivery_replay,
    webhook_endpoint_create,
    webhook_endpoint_enable,
    webhook_endpoint_rotate_secret,
    webhook_endpoint_send_test,
    webhook_endpoint_update,
    webhook_url_validate,
)

EVENT_CHOICES = [
    (ALL_EVENTS, "* — every event type, present and future"),
    *((name, f"{name} — {description}") for name, description in EVENT_TYPES.items()),
]


class WebhookEndpointForm(forms.ModelForm):
    event_types = forms.MultipleChoiceField(
        choices=EVENT_CHOICES,
        # "radiolist": the admin's own class for a choice list, whose labels take their natural width.
        widget=forms.CheckboxSelectMultiple(attrs={"class": "radiolist"}),
        help_text="At least one.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["url", "description", "event_types"]

    def clean_url(self):
        return webhook_url_validate(self.cleaned_data["url"])

    def clean_event_types(self):
        try:
            return event_types_validate(self.cleaned_data["event_types"])
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


def _compact(moment) -> str:
    """Date over time: two short lines keep the log's eight columns within 1280 px."""
    return "—" if moment is None else format_html("{}<br>{}", f"{moment:%Y-%m-%d}", f"{moment:%H:%M:%S}")


def _show_secret(model_admin, request, endpoint, secret, what):
    model_admin.message_user(
        request,
        format_html(
            "{} for {}: <code>{}</code> — copy it now, it will not be shown again.",
            what,
            endpoint.url,
            secret,
        ),
        messages.WARNING,
    )


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = [
        "short_url",
        "enabled",
        "events",
        "failing_since",
        "last_success_at",
        "open",
        "short_reason",
    ]
    list_filter = ["enabled"]
    search_fields = ["url", "description"]
    actions = ["re_enable", "disable", "rotate_secret", "send_test"]
    readonly_fields = [
        "enabled",
        "disabled_at",
        "disabled_reason",
        "failing_since",
        "last_success_at",
        "created_at",
    ]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                _open=Count("deliveries", filter=Q(deliveries__status__in=WebhookDelivery.OPEN_STATUSES))
            )
        )

    def get_fields(self, request, obj=None):
        fields = ["url", "description", "event_types"]
        return fields if obj is None else [*fields, *self.readonly_fields]

    @admin.display(description="URL", ordering="url")
    def short_url(self, obj):
        return Truncator(obj.url).chars(48)

    @admin.display(description="event types")
    def events(self, obj):
        if ALL_EVENTS in obj.event_types:
            return "all"
        return format_html_join(
            mark_safe("<br>"),
            '<span style="white-space: nowrap">{}</span>',
            ((name,) for name in obj.event_types),
        )

    @admin.display(description="open deliveries", ordering="_open")
    def open(self, obj):
        url = reverse("admin:outbound_webhookdelivery_changelist")
        return format_html('<a href="{}?endpoint__id__exact={}">{}</a>', url, obj.pk, obj._open)

    @admin.display(description="disabled because")
    def short_reason(self, obj):
        return Truncator(obj.disabled_reason).chars(80)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            webhook_endpoint_update(
                endpoint=obj,
                url=data["url"],
                event_types=data["event_types"],
                description=data["description"],
            )
            return
        created = webhook_endpoint_create(
            url=data["url"], event_types=data["event_types"], description=data["description"]
        )
        obj.pk = created.pk
        obj.secret = created.secret
        _show_secret(self, request, created, created.secret, "Signing secret")

    @admin.action(description="Re-enable (open deliveries resume)", permissions=["change"])
    def re_enable(self, request, queryset):
        count = 0
        for endpoint in queryset.filter(enabled=False):
            webhook_endpoint_enable(endpoint=endpoint)
            self.log_change(request, endpoint, "Re-enabled")
            count += 1
        self.message_user(request, f"Re-enabled {count} endpoint(s).")

    @admin.action(description="Disable (deliveries wait until re-enabled)", permissions=["change"])
    def disable(self, request, queryset):
        count = 0
        for endpoint in queryset.filter(enabled=True):
            webhook_endpoint_update(endpoint=endpoint, enabled=False)
            self.log_change(request, endpoint, "Disabled")
            count += 1
        self.message_user(request, f"Disabled {count} endpoint(s).")

    @admin.action(description="Rotate the signing secret (shown once)", permissions=["change"])
    def rotate_secret(self, request, queryset):
        for endpoint in queryset:
            secret = webhook_endpoint_rotate_secret(endpoint=endpoint)
            self.log_change(request, endpoint, "Rotated the signing secret")
            _show_secret(
                self, request, endpoint, secret, "New signing secret (the old one also signs for 24 h)"
            )

    @admin.action(description="Send a test event", permissions=["change"])
    def send_test(self, request, queryset):
        count = 0
        for endpoint in queryset:
            webhook_endpoint_send_test(endpoint=endpoint)
            count += 1
        self.message_user(
            request, f"Queued a test event to {count} endpoint(s); see the delivery log.", messages.SUCCESS
        )


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ["number", "attempted_at", "succeeded", "status_code", "latency_ms", "error", "response_excerpt"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class _LogAdmin(admin.ModelAdmin):
    """Rows that record what was sent: never added or edited here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="body")
    def pretty_payload(self, obj):
        message = obj if isinstance(obj, WebhookMessage) else obj.message
        return format_html(
            '<pre style="white-space: pre-wrap">{}</pre>',
            json.dumps(message.payload, indent=2, sort_keys=True),
        )


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(_LogAdmin):
    # Eight compact columns: the list fits 1280 px beside its filters (the trigger is a filter).
    list_display = [
        "created",
        "event_type",
        "short_endpoint",
        "tenant",
        "status",
        "attempts",
        "last_answer",
        "next_attempt",
    ]
    list_filter = ["status", "message__type", "trigger", "endpoint", "created_at"]
    search_fields = [
        "message__public_id",
        "message__key",
        "message__tenant_slug",
        "message__tenant_external_id",
        "endpoint__url",
    ]
    date_hierarchy = "created_at"
    list_select_related = ["message", "endpoint"]
    actions = ["replay"]
    inlines = [WebhookAttemptInline]
    fields = [
        "message",
        "endpoint",
        "trigger",
        "status",
        "attempts",
        "next_attempt_at",
        "last_attempt_at",
        "last_status_code",
        "last_latency_ms",
        "last_error",
        "created_at",
        "finished_at",
        "pretty_payload",
    ]
    readonly_fields = fields

    @admin.display(description="created (UTC)", ordering="created_at")
    def created(self, obj):
        return _compact(obj.created_at)

    @admin.display(description="type", ordering="message__type")
    def event_type(self, obj):
        return format_html('<span style="white-space: nowrap">{}</span>', obj.message.type)

    @admin.display(description="endpoint", ordering="endpoint__url")
    def short_endpoint(self, obj):
        return Truncator(obj.endpoint.url).chars(24)

    @admin.display(description="last answer", ordering="last_status_code")
    def last_answer(self, obj):
        if obj.last_status_code is None:
            return Truncator(obj.last_error.split(":")[0]).chars(30) or "—"
        latency = "" if obj.last_latency_ms is None else f", {obj.last_latency_ms} ms"
        return format_html('<span style="white-space: nowrap">{}{}</span>', obj.last_status_code, latency)

    @admin.display(description="next attempt (UTC)", ordering="next_attempt_at")
    def next_attempt(self, obj):
        return _compact(obj.next_attempt_at)

    @admin.display(description="tenant", ordering="message__tenant_slug")
    def tenant(self, obj):
        return obj.message.tenant_slug or "—"

    def has_replay_permission(self, request):
        return request.user.has_perm("outbound.change_webhookdelivery")

    @admin.action(description="Replay: send the message again to its endpoint", permissions=["replay"])
    def replay(self, request, queryset):
        count = 0
        for delivery in queryset.select_related("endpoint", "message"):
            webhook_delivery_replay(delivery=delivery)
            self.log_change(
                request, delivery, f"Replayed {delivery.message.public_id} to {delivery.endpoint}"
            )
            count += 1
        disabled = queryset.filter(endpoint__enabled=False).count()
        note = f" ({disabled} on disabled endpoints: they wait until re-enabled)" if disabled else ""
        self.message_user(request, f"Queued {count} replay(s){note}.", messages.SUCCESS)


@admin.register(WebhookMessage)
class WebhookMessageAdmin(_LogAdmin):
    list_display = ["created_at", "type", "public_id", "tenant_slug", "tenant_external_id", "key"]
    list_filter = ["type", "created_at"]
    search_fields = ["public_id", "key", "tenant_slug", "tenant_external_id"]
    date_hierarchy = "created_at"
    fields = [
        "public_id",
        "type",
        "key",
        "tenant_id",
        "tenant_slug",
        "tenant_external_id",
        "created_at",
        "pretty_payload",
    ]
    readonly_fields = fields
