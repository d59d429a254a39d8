"""Outgoing webhooks: the SaaS's endpoints, the messages the platform publishes and their deliveries.

The rows are the truth, not the broker: a message and one delivery per subscribed endpoint are written
in the publisher's transaction; a worker (or the Beat sweep, or `deliver_webhooks`) claims a due
delivery, sends it, and records every attempt. No foreign key to any domain app: this app sits below
them all, so a message names its tenant by plain fields.
"""

from __future__ import annotations

import base64
import secrets
import uuid

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from outbound.events import ALL_EVENTS

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
SECRET_BYTES = 32  # Standard Webhooks asks for 24 to 64 random bytes


def signing_secret_new() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def message_id_new() -> str:
    return f"msg_{uuid.uuid4().hex}"


class WebhookEndpoint(models.Model):
    url = models.URLField("URL", max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(
        default=list, help_text='The event types it receives; ["*"] for every type, present and future.'
    )
    enabled = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.TextField(blank=True)
    # The signing secret is shown once (at creation and rotation) and used to sign every attempt.
    secret = models.CharField(max_length=120, default=signing_secret_new, editable=False)
    # After a rotation, deliveries are signed with both secrets for a day (the signature header
    # carries both), so the receiver can switch to the new secret without losing any message.
    previous_secret = models.CharField(max_length=120, blank=True, editable=False)
    previous_secret_until = models.DateTimeField(null=True, blank=True, editable=False)
    # Since when every attempt has failed (None: the last attempt succeeded, or none was made).
    failing_since = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pk"]
        verbose_name = "webhook endpoint"

    def __str__(self) -> str:
        return self.url

    def receives(self, event_type: str) -> bool:
        return ALL_EVENTS in self.event_types or event_type in self.event_types


class WebhookMessage(models.Model):
    """One published event: the body every delivery of it sends (same `webhook-id` on every attempt)."""

    public_id = models.CharField(
        "message id", max_length=40, unique=True, default=message_id_new, editable=False
    )
    type = models.CharField(max_length=64, db_index=True)
    # The Standard Webhooks body: {"type", "timestamp", "data"}.
    payload = models.JSONField(encoder=DjangoJSONEncoder)
    # De-duplication: a second publish with the same key sends nothing (a replayed Stripe event).
    key = models.CharField(max_length=255, unique=True)
    tenant_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    tenant_slug = models.CharField(max_length=100, blank=True, db_index=True)
    tenant_external_id = models.CharField(max_length=255, blank=True, db_index=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "webhook message"

    def __str__(self) -> str:
        return f"{self.type} {self.public_id}"


class WebhookDelivery(models.Model):
    """One message to one endpoint, tried until it succeeds or the retry schedule runs out."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"  # not tried yet
        FAILED = "failed", "Failed, will retry"
        SUCCEEDED = "succeeded", "Succeeded"
        GAVE_UP = "gave_up", "Gave up"

    OPEN_STATUSES = (Status.PENDING, Status.FAILED)

    class Trigger(models.TextChoices):
        EVENT = "event", "Event"
        REPLAY = "replay", "Replay"
        TEST = "test", "Test event"

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    message = models.ForeignKey(WebhookMessage, on_delete=models.CASCADE, related_name="deliveries")
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.EVENT)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # A sender holds the delivery until then; one killed mid-send leaves it to be claimed again.
    leased_until = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_latency_ms = models.PositiveIntegerField("latency (ms)", null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "webhook delivery"
        verbose_name_plural = "webhook deliveries"
        indexes = [
            # The sweep's query: open deliveries by due time.
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status__in=["pending", "failed"]),
                name="outbound_delivery_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.message} to {self.endpoint}"


class WebhookAttempt(models.Model):
    """One HTTP request of a delivery and what came back: the delivery log's detail."""

    RESPONSE_EXCERPT_CHARS = 1000

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    attempted_at = models.DateTimeField()
    succeeded = models.BooleanField(default=False)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField("latency (ms)", null=True, blank=True)
    response_excerpt = models.TextField(blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["delivery", "number"]
        verbose_name = "webhook attempt"
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="outbound_attempt_once"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}"
