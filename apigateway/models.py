from django.db import models

from tenants.models import Tenant

SYNC_USAGE_PLANS = "sync_usage_plans"  # the permission of "Sync now" (apigateway.sync_usage_plans)


class UsagePlanPlacement(models.Model):
    """Where a tenant's API Gateway key should be and was last seen: one row per tenant with a key.

    Written by the placement (apigateway.services): pending when a change asked for a move, in place
    when the key was seen in exactly its desired usage plan, failed (with the error) when AWS refused
    or could not be reached. The daily sync checks every row again."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        IN_PLACE = "in_place", "In place"
        FAILED = "failed", "Failed"

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="usage_plan_placement")
    key_id = models.CharField(
        max_length=32, help_text="The API Gateway key this row is about (the tenant's, when last placed)."
    )
    desired_plan_id = models.CharField(
        max_length=64, blank=True, help_text="The usage plan the key belongs in; empty: none (suspended)."
    )
    actual_plan_ids = models.JSONField(
        default=list, blank=True, help_text="The configured usage plans that held the key when last checked."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    last_error = models.CharField(max_length=500, blank=True)
    attempts = models.PositiveIntegerField(
        default=0, help_text="Failed tries since the key was last in place (0 when in place)."
    )
    requested_at = models.DateTimeField(
        null=True, blank=True, help_text="When a change last asked for a move."
    )
    last_checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["tenant__name"]
        indexes = [models.Index(fields=["status"])]
        permissions = [(SYNC_USAGE_PLANS, "Can move API keys between API Gateway usage plans")]

    def __str__(self) -> str:
        return f"{self.tenant.slug}: {self.key_id} ({self.get_status_display()})"

    @property
    def in_place(self) -> bool:
        return self.status == self.Status.IN_PLACE


class ApiGatewayUsageDay(models.Model):
    """What was imported of one key's request count in one usage plan on one day (UTC), from
    API Gateway's GetUsage. AWS revises a day (the current one grows every hour); the difference
    between `used` and `imported` goes in as one more usage event, `apigw:<plan>:<key>:<day>:<n>`."""

    class Status(models.TextChoices):
        IMPORTED = "imported", "Imported"
        LOWERED = "lowered", "Count went down (not imported)"
        UNKNOWN_KEY = "unknown_key", "Key of no tenant"
        TOO_OLD = "too_old", "Older than the ingest window"
        REFUSED = "refused", "Refused by ingestion"

    usage_plan_id = models.CharField(max_length=64)
    key_id = models.CharField(max_length=128)
    day = models.DateField()
    tenant = models.ForeignKey(
        Tenant, on_delete=models.SET_NULL, null=True, blank=True, related_name="apigateway_usage_days"
    )
    used = models.BigIntegerField(default=0, help_text="The count AWS reported last.")
    imported = models.BigIntegerField(default=0, help_text="The requests ingested as usage events so far.")
    events = models.PositiveIntegerField(default=0, help_text="Usage events ingested for this day (n).")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.IMPORTED)
    note = models.CharField(max_length=500, blank=True)
    first_seen_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-day", "key_id"]
        constraints = [
            models.UniqueConstraint(fields=["usage_plan_id", "key_id", "day"], name="apigw_usage_day_once"),
            models.CheckConstraint(condition=models.Q(imported__gte=0), name="apigw_usage_imported_positive"),
        ]
        verbose_name = "API Gateway usage day"

    def __str__(self) -> str:
        return f"{self.key_id} {self.day}: {self.used}"
