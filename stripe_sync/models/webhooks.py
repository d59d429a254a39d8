"""The webhook inbox and billing notifications."""

from django.db import models

__all__ = ["BillingNotification", "WebhookEvent"]


class WebhookEvent(models.Model):
    """One Stripe event, stored once per Stripe event id before anything is done with it.

    The raw payload is kept as received (for replay and for `handle_stripe_event`); processing
    re-fetches the event's object from Stripe instead of trusting it, so replays and out-of-order
    deliveries end in Stripe's current state.
    """

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        PROCESSING = "processing", "Processing"
        PROCESSED = "processed", "Processed"
        IGNORED = "ignored", "Ignored"
        FAILED = "failed", "Failed"

    FINAL_STATUSES = (Status.PROCESSED, Status.IGNORED)

    id = models.BigAutoField(primary_key=True)
    stripe_id = models.CharField("Stripe event id", max_length=255, unique=True)
    type = models.CharField(max_length=255)
    livemode = models.BooleanField(default=False)
    api_version = models.CharField(max_length=64, blank=True)
    thin = models.BooleanField(
        default=False, help_text="A v2 thin event notification: the event itself is fetched from Stripe."
    )
    stripe_created = models.DateTimeField("created at Stripe", null=True, blank=True)
    object_id = models.CharField(
        max_length=255, blank=True, help_text="The id of the Stripe object the event is about."
    )
    payload = models.JSONField(help_text="The event exactly as Stripe delivered it.")
    tenant = models.ForeignKey(
        "tenants.Tenant",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The tenant the event turned out to be about (set by processing).",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    plan_applied = models.BooleanField(
        default=False,
        help_text="Processing set the tenant's plan from this event (an older plan event arriving "
        "later is then not applied over it).",
    )
    attempts = models.PositiveIntegerField(default=0)
    result = models.CharField(max_length=1000, blank=True, help_text="What processing did.")
    error = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        verbose_name = "Stripe webhook event"
        indexes = [
            models.Index(fields=["status", "received_at"], name="webhook_event_status"),
            models.Index(fields=["type", "received_at"], name="webhook_event_type"),
            models.Index(fields=["tenant", "stripe_created"], name="webhook_event_tenant"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.stripe_id}"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES


class BillingNotification(models.Model):
    """A billing event told to the outside world (SNS topic, operators' e-mail), and how that went."""

    class Kind(models.TextChoices):
        PAYMENT_SUCCEEDED = "payment_succeeded", "Payment succeeded"
        PAYMENT_FAILED = "payment_failed", "Payment failed"
        PLAN_CHANGED = "plan_changed", "Plan changed"
        SUBSCRIPTION_CHANGED = "subscription_changed", "Subscription changed"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        NOT_CONFIGURED = "not_configured", "Nowhere to send (no topic, no operator e-mail)"

    id = models.BigAutoField(primary_key=True)
    key = models.CharField(
        max_length=255,
        unique=True,
        help_text="De-duplication key: one notification per payment, plan change or event.",
    )
    kind = models.CharField(max_length=32, choices=Kind.choices)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    webhook_event = models.ForeignKey(
        WebhookEvent, on_delete=models.SET_NULL, null=True, blank=True, related_name="notifications"
    )
    subject = models.CharField(max_length=100)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    sns_topic_arn = models.CharField(max_length=255, blank=True)
    sns_message_id = models.CharField(max_length=255, blank=True)
    email_recipients = models.JSONField(default=list, blank=True)
    email_sent = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "created_at"], name="billing_notification_status")]

    def __str__(self) -> str:
        return self.subject
