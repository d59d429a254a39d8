"""The console's own rows: operator jobs started from admin and run by a Celery worker."""

from django.conf import settings
from django.db import models

from core.models import RunRecord


class OperatorJob(RunRecord):
    """One long operator action (re-aggregation, resync, budget check, reconciliation) queued to a
    worker, with its progress, so the page that started it can show where it is."""

    class Kind(models.TextChoices):
        REAGGREGATE = "reaggregate", "Re-aggregate an hour range"
        STRIPE_RESYNC = "stripe_resync", "Resync from Stripe"
        BUDGET_CHECK = "budget_check", "Budget check"
        RECONCILIATION = "reconciliation", "Reconciliation with Stripe"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    OPEN_STATUSES = (Status.QUEUED, Status.RUNNING)

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    tenant = models.ForeignKey(
        "tenants.Tenant",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="operator_jobs",
        help_text="The tenant whose page started the job (account-wide jobs too).",
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    params = models.JSONField(default=dict, blank=True, help_text="What the job was asked to do.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.CharField(max_length=500, blank=True)
    result = models.JSONField(default=dict, blank=True)
    task_id = models.CharField("Celery task id", max_length=64, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)  # when a worker took it
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        # Its table from before the console was an app of its own (billing_platform's OperatorJob).
        db_table = "billing_platform_operatorjob"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} ({self.status})"
