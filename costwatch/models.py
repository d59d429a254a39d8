"""Budgets, the daily AWS cost rows Cost Explorer gives, each check's run, alerts and pass-through charges.

Money is Decimal in major units of the cost currency (Cost Explorer gives up to 10 decimals), months
are the first day of a UTC calendar month.
"""

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from core.models import TriggeredRun
from core.money import format_minor, format_money
from tenants.models import Tenant

COST_DIGITS = 24
COST_PLACES = 10


class Basis(models.TextChoices):
    ACTUAL = "actual", "Actual spend"
    FORECAST = "forecast", "Month-end forecast"
    BOTH = "both", "Actual and forecast"


class Budget(models.Model):
    """A monthly budget for the whole account, one AWS service, or one value of the tenant tag.

    `thresholds` is a list of `{"percent": "80", "basis": "actual"|"forecast"|"both"}`; see
    `costwatch.budgets.thresholds_parse` for the text form operators type.
    """

    class Scope(models.TextChoices):
        ACCOUNT = "account", "Whole account"
        SERVICE = "service", "One AWS service"
        TAG = "tag", "One tenant tag value"

    name = models.CharField(max_length=200, unique=True)
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.ACCOUNT)
    service = models.CharField(
        max_length=200,
        blank=True,
        help_text='With scope "service": the Cost Explorer SERVICE, e.g. "Amazon S3".',
    )
    tag_value = models.CharField(
        max_length=256,
        blank=True,
        help_text='With scope "tag": the value of the tenant tag (COSTWATCH_TENANT_TAG_KEY); defaults to the '
        "tenant's slug.",
    )
    tenant = models.ForeignKey(
        Tenant, on_delete=models.PROTECT, null=True, blank=True, related_name="budgets"
    )
    amount = models.DecimalField(
        max_digits=20, decimal_places=2, validators=[MinValueValidator(Decimal("0.01"))]
    )
    currency = models.CharField(max_length=3, default="USD")
    thresholds = models.JSONField(default=list)
    sns_topic_arn = models.CharField(
        max_length=256, blank=True, help_text="Empty: COSTWATCH_SNS_TOPIC_ARN, if set."
    )
    emails = models.JSONField(default=list, blank=True, help_text="Empty: OPERATOR_EMAILS.")
    pass_through = models.BooleanField(
        default=False,
        help_text="Bill the month's spend over the budget to the tenant in Stripe, once per month.",
    )
    markup_percent = models.DecimalField(
        max_digits=6,
        decimal_places=2,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("1000"))],
    )
    active = models.BooleanField(default=True)
    snoozed_until = models.DateTimeField(
        null=True, blank=True, help_text="No alert of this budget is sent before this time."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="budget_amount_positive"),
            models.CheckConstraint(
                condition=~models.Q(scope="service") | ~models.Q(service=""),
                name="budget_service_scope_names_service",
            ),
            models.CheckConstraint(
                condition=~models.Q(scope="tag") | ~models.Q(tag_value=""),
                name="budget_tag_scope_names_value",
            ),
            models.CheckConstraint(
                condition=models.Q(pass_through=False) | models.Q(tenant__isnull=False, scope="tag"),
                name="budget_pass_through_needs_tenant_tag",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        errors = {}
        if self.scope == self.Scope.SERVICE and not self.service:
            errors["service"] = 'A budget with scope "service" names the service.'
        if self.scope == self.Scope.TAG and not self.tag_value:
            if self.tenant_id:
                self.tag_value = self.tenant.slug
            else:
                errors["tag_value"] = 'A budget with scope "tag" names the tag value or a tenant.'
        if self.pass_through and not (self.tenant_id and self.scope == self.Scope.TAG):
            errors["pass_through"] = 'Pass-through needs a tenant and scope "tag".'  # noqa: S105
        self.currency = (self.currency or "").upper()
        if errors:
            raise ValidationError(errors)

    @property
    def scope_label(self) -> str:
        if self.scope == self.Scope.SERVICE:
            return f"service {self.service}"
        if self.scope == self.Scope.TAG:
            return f"{settings.COSTWATCH_TENANT_TAG_KEY}={self.tag_value}"
        return "whole account"

    @property
    def thresholds_label(self) -> str:
        from costwatch.budgets import thresholds_format

        return thresholds_format(self.thresholds)


class DailyCost(models.Model):
    """One UTC day's cost of one service and one tenant-tag value ("" = no tag: unattributed)."""

    metric = models.CharField(max_length=32)
    day = models.DateField()
    service = models.CharField(max_length=200)
    tag_value = models.CharField(max_length=256, blank=True)
    amount = models.DecimalField(max_digits=COST_DIGITS, decimal_places=COST_PLACES)
    currency = models.CharField(max_length=3)
    estimated = models.BooleanField(default=False, help_text="Cost Explorer still marks the day Estimated.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-day", "service", "tag_value"]
        constraints = [
            models.UniqueConstraint(
                fields=["metric", "day", "service", "tag_value"], name="daily_cost_unique"
            ),
        ]
        indexes = [models.Index(fields=["metric", "tag_value", "day"])]

    def __str__(self) -> str:
        return (
            f"{self.day} {self.service} {self.tag_value or '(unattributed)'}: "
            f"{format_money(self.amount, self.currency)}"
        )


class CostCheckRun(TriggeredRun):
    """One run of the daily check: what it asked Cost Explorer, what it found and what it sent."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        PARTIAL = "partial", "Completed with errors"
        FAILED = "failed", "Failed"

    checked_date = models.DateField(help_text="The last UTC day of costs the run judged.")
    window_start = models.DateField(null=True, blank=True)
    window_end = models.DateField(null=True, blank=True, help_text="Exclusive.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    ce_requests = models.PositiveIntegerField(
        default=0, help_text="Cost Explorer requests made (each is billed by AWS), retries included."
    )
    cost_rows = models.PositiveIntegerField(default=0)
    estimated_days = models.PositiveIntegerField(default=0)
    month_to_date = models.DecimalField(
        max_digits=COST_DIGITS, decimal_places=COST_PLACES, null=True, blank=True
    )
    unattributed = models.DecimalField(
        max_digits=COST_DIGITS, decimal_places=COST_PLACES, null=True, blank=True
    )
    alerts_sent = models.PositiveIntegerField(default=0)
    summary = models.TextField(blank=True, help_text="What the run found and sent, a line per item.")

    class Meta(TriggeredRun.Meta):
        verbose_name = "cost check run"

    def __str__(self) -> str:
        return f"cost check {self.checked_date} at {self.started_at:%Y-%m-%d %H:%M} ({self.status})"


class BudgetEvaluation(models.Model):
    """A budget as one run judged it: month-to-date spend and the month-end forecast."""

    class ForecastMethod(models.TextChoices):
        AWS = "aws", "Cost Explorer forecast"
        LINEAR = "linear", "Linear from month to date"
        FINAL = "final", "Month complete"

    run = models.ForeignKey(CostCheckRun, on_delete=models.CASCADE, related_name="evaluations")
    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="evaluations")
    month = models.DateField()
    actual = models.DecimalField(max_digits=COST_DIGITS, decimal_places=COST_PLACES)
    forecast = models.DecimalField(max_digits=COST_DIGITS, decimal_places=COST_PLACES)
    forecast_method = models.CharField(max_length=16, choices=ForecastMethod.choices)
    forecast_note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-run__started_at", "budget__name"]

    def __str__(self) -> str:
        return f"{self.budget} {self.month:%Y-%m}: {self.actual} (forecast {self.forecast})"


class Alert(models.Model):
    """A budget threshold crossed (once per budget, month, threshold and basis) or a cost spike."""

    class Kind(models.TextChoices):
        ACTUAL = "actual", "Threshold on actual spend"
        FORECAST = "forecast", "Threshold on forecast"
        ANOMALY = "anomaly", "Daily cost anomaly"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Delivery failed (retried next run)"
        SUPPRESSED = "suppressed", "Acknowledged before sending"

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    month = models.DateField()
    threshold = models.DecimalField(max_digits=7, decimal_places=2, null=True, blank=True)
    day = models.DateField(null=True, blank=True, help_text="Anomalies: the day of the spike.")
    run = models.ForeignKey(CostCheckRun, on_delete=models.SET_NULL, null=True, related_name="alerts")
    actual = models.DecimalField(max_digits=COST_DIGITS, decimal_places=COST_PLACES)
    forecast = models.DecimalField(max_digits=COST_DIGITS, decimal_places=COST_PLACES, null=True)
    subject = models.CharField(max_length=100)
    message = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    sns_topic_arn = models.CharField(max_length=256, blank=True)
    sns_message_id = models.CharField(max_length=100, blank=True)
    emailed_to = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "month", "kind", "threshold"],
                condition=models.Q(kind__in=["actual", "forecast"]),
                name="alert_once_per_threshold",
            ),
            models.UniqueConstraint(
                fields=["budget", "day"],
                condition=models.Q(kind="anomaly"),
                name="alert_once_per_anomaly_day",
            ),
        ]

    def __str__(self) -> str:
        return self.subject


class PassThroughCharge(models.Model):
    """A tenant budget's overage for one month, billed in Stripe as an invoice item (once)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending (retried next run)"
        BILLED = "billed", "Billed"
        NOT_BILLABLE = "not_billable", "Not billable"

    budget = models.ForeignKey(Budget, on_delete=models.PROTECT, related_name="pass_through_charges")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="pass_through_charges")
    month = models.DateField()
    spend = models.DecimalField(max_digits=COST_DIGITS, decimal_places=COST_PLACES)
    budget_amount = models.DecimalField(max_digits=20, decimal_places=2)
    overage = models.DecimalField(max_digits=COST_DIGITS, decimal_places=COST_PLACES)
    markup_percent = models.DecimalField(max_digits=6, decimal_places=2)
    amount_minor = models.BigIntegerField(help_text="What is billed, in minor units of the currency.")
    currency = models.CharField(max_length=3)
    idempotency_key = models.CharField(max_length=100, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    stripe_customer_id = models.CharField(max_length=255, blank=True)
    stripe_invoice_item_id = models.CharField(max_length=255, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    billed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-month", "budget__name"]
        constraints = [
            models.UniqueConstraint(fields=["budget", "month"], name="pass_through_once_per_month"),
        ]

    def __str__(self) -> str:
        amount = format_minor(self.amount_minor, self.currency)
        return f"{self.budget} {self.month:%Y-%m}: {amount} ({self.status})"


class TenantMargin(Tenant):
    """Tenants seen through their AWS cost and revenue: the admin's cost and margin page."""

    class Meta:
        proxy = True
        verbose_name = "tenant cost and margin"
        verbose_name_plural = "tenant cost and margin"
