"""Admin for the webhook inbox (read-only, with Replay) and the billing notifications sent."""

import json

from django.contrib import admin, messages
from django.utils.html import format_html
from django.utils.text import Truncator

from stripe_sync.models import BillingNotification, WebhookEvent
from stripe_sync.notifications import billing_notification_send
from stripe_sync.webhooks import webhook_event_replay


class _RecordAdmin(admin.ModelAdmin):
    """Rows that record what happened: shown with their JSON payload, never added or edited here."""

    @admin.display(description="payload")
    def pretty_payload(self, obj):
        return format_html(
            '<pre style="white-space: pre-wrap">{}</pre>', json.dumps(obj.payload, indent=2, sort_keys=True)
        )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class BillingNotificationInline(admin.TabularInline):
    model = BillingNotification
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ["kind", "subject", "status", "sns_message_id", "created_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WebhookEvent)
class WebhookEventAdmin(_RecordAdmin):
    """Events are Stripe's record: nobody edits them; an operator can only replay one."""

    list_display = [
        "stripe_id",
        "type",
        "status",
        "tenant",
        "stripe_created",
        "received_at",
        "processed_at",
        "attempts",
        "short_error",
    ]
    list_filter = ["status", "type", "thin", "livemode", "received_at"]
    search_fields = ["stripe_id", "type", "object_id"]
    date_hierarchy = "received_at"
    list_select_related = ["tenant"]
    actions = ["replay"]
    inlines = [BillingNotificationInline]
    fields = [
        "stripe_id",
        "type",
        "status",
        "result",
        "error",
        "tenant",
        "object_id",
        "livemode",
        "thin",
        "api_version",
        "stripe_created",
        "received_at",
        "processed_at",
        "attempts",
        "pretty_payload",
    ]
    readonly_fields = fields

    @admin.display(description="error")
    def short_error(self, obj):
        last_line = obj.error.strip().splitlines()[-1] if obj.error.strip() else ""
        return Truncator(last_line).chars(80)

    def has_replay_permission(self, request):
        return request.user.has_perm("stripe_sync.change_webhookevent")

    @admin.action(description="Replay: process the selected events again", permissions=["replay"])
    def replay(self, request, queryset):
        count = 0
        for event in queryset:
            webhook_event_replay(event=event)
            self.log_change(
                request, event, f"Replayed Stripe event {event.stripe_id} (queued for processing)."
            )
            count += 1
        self.message_user(request, f"{count} event(s) queued for processing again.", messages.SUCCESS)


@admin.register(BillingNotification)
class BillingNotificationAdmin(_RecordAdmin):
    list_display = [
        "created_at",
        "kind",
        "subject",
        "tenant",
        "status",
        "sns_message_id",
        "recipients",
        "sent_at",
    ]
    list_filter = ["kind", "status", "created_at"]
    search_fields = ["subject", "key", "sns_message_id", "webhook_event__stripe_id", "tenant__slug"]
    date_hierarchy = "created_at"
    list_select_related = ["tenant"]
    actions = ["send_again"]
    fields = [
        "kind",
        "subject",
        "status",
        "error",
        "tenant",
        "webhook_event",
        "key",
        "sns_topic_arn",
        "sns_message_id",
        "email_recipients",
        "email_sent",
        "attempts",
        "created_at",
        "sent_at",
        "pretty_payload",
    ]
    readonly_fields = fields

    @admin.display(description="e-mailed to")
    def recipients(self, obj):
        return ", ".join(obj.email_recipients or [])

    def has_resend_permission(self, request):
        return request.user.has_perm("stripe_sync.change_billingnotification")

    @admin.action(description="Send the selected failed notifications again", permissions=["resend"])
    def send_again(self, request, queryset):
        sent = failed = 0
        for notification in queryset.filter(status=BillingNotification.Status.FAILED):
            result = billing_notification_send(notification_id=notification.pk)
            if result is not None and result.status == BillingNotification.Status.SENT:
                sent += 1
                self.log_change(request, notification, "Sent again.")
            else:
                failed += 1
        level = messages.WARNING if failed else messages.SUCCESS
        self.message_user(request, f"{sent} sent, {failed} still failing.", level)
