"""The ground floor's models: the holder of the operator roles' permissions, and the abstract record
of a run (aggregation, cost check, reconciliation, operator job) that each app's run model extends."""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.utils import timezone


class OperatorAccess(models.Model):
    """No table: the holder of the operator roles' own permissions (core.permissions),
    which guard admin actions, custom admin views and operator jobs of every app."""

    class Meta:
        managed = False
        default_permissions = ()
        verbose_name = "operator access"
        verbose_name_plural = "operator access"
        permissions = [
            ("view_revenue", "Can see revenue, invoice, margin and cost figures"),
            (
                "run_operator_jobs",
                "Can run operator jobs and syncs (re-aggregation, resync, budget check, reconciliation)",
            ),
            ("suspend_tenant", "Can suspend and reactivate tenants"),
            ("manage_api_keys", "Can create, rotate and revoke tenants' API keys"),
            ("onboard_to_stripe", "Can onboard tenants to Stripe and create meters at Stripe"),
            ("cancel_at_stripe", "Can cancel usage reports and subscriptions at Stripe"),
        ]

    def __str__(self) -> str:
        return "operator access"


class RunRecord(models.Model):
    """One run of a job, for operators: when it started and finished, how it ended, its error.

    A subclass adds its own counts; one with other statuses declares its own `Status` and overrides
    `status` (and OPEN_STATUSES, the statuses of a run not finished yet).
    """

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    OPEN_STATUSES: tuple[str, ...] = (Status.RUNNING,)

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    error = models.TextField(blank=True)

    class Meta:
        abstract = True
        ordering = ["-started_at", "-id"]
        get_latest_by = "started_at"

    @property
    def is_finished(self) -> bool:
        return self.status not in self.OPEN_STATUSES

    @property
    def duration(self) -> timedelta | None:
        """From start to finish; None while it runs (or has not started)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def finish(self, status: str, *, error: str | None = None, update_fields: list[str] | None = None):
        """End the run now with `status` (and `error`, when given) and save it: the whole row, or
        `update_fields` with the status, error and finish time."""
        self.status = status
        if error is not None:
            self.error = error
        self.finished_at = timezone.now()
        if update_fields is None:
            self.save()
        else:
            self.save(update_fields=[*update_fields, "status", "error", "finished_at"])


class TriggeredRun(RunRecord):
    """A run of a periodic job, which may also be started by a command or from admin."""

    trigger = models.CharField(max_length=32, help_text="beat, command, admin, ...")

    class Meta(RunRecord.Meta):
        abstract = True


def error_line(exc: BaseException) -> str:
    """An exception as a run records it: its type and message."""
    return f"{type(exc).__name__}: {exc}"
