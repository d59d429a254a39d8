"""The usage reporting outbox, what it has covered, the circuit breaker and reconciliation."""

from django.db import models

from core.models import TriggeredRun
from core.money import format_quantity
from metering.models import QUANTITY_DECIMAL_PLACES, TOTAL_MAX_DIGITS


def _quantity(**kwargs):
    return models.DecimalField(max_digits=TOTAL_MAX_DIGITS, decimal_places=QUANTITY_DECIMAL_PLACES, **kwargs)


class UsageReport(models.Model):
    """One meter event for Stripe: the change of one (tenant, meter, hour) aggregate.

    Written in the same transaction that reads the aggregate, with an identifier derived from
    (tenant, meter, hour, revision) and a value fixed at that moment, so a resend after any crash
    sends the same identifier with the same value and Stripe drops it.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed (Stripe refused it)"
        NOTHING_TO_SEND = "nothing", "Nothing to send (under one whole unit, carried)"
        CANCELING = "canceling", "Being canceled at Stripe"
        CANCELED = "canceled", "Canceled at Stripe"
        CORRECTING = "correcting", "Being canceled at Stripe (its hour was lowered)"

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="usage_reports")
    meter = models.ForeignKey("metering.Meter", on_delete=models.PROTECT, related_name="+")
    hour = models.DateTimeField()
    revision = models.PositiveIntegerField(
        help_text="The aggregate revision this report brings Stripe up to."
    )
    identifier = models.CharField(max_length=100, unique=True)
    quantity = _quantity(help_text="Change of the local hourly aggregate that this report carries.")
    value = models.BigIntegerField(help_text="Whole units sent to Stripe (the fraction is carried).")
    customer_id = models.CharField(max_length=255)
    event_name = models.CharField(max_length=100)
    timestamp = models.DateTimeField(help_text="The meter event's timestamp.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    replaces_hour = models.BooleanField(
        default=False,
        help_text="Carries the hour's whole new total after a recompute lowered it: sent once the "
        "hour's earlier events are canceled at Stripe (or, if Stripe refuses, turned into an offset).",
    )
    attempts = models.PositiveIntegerField(default=0)
    first_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="When it first went to Stripe (Stripe de-duplicates for ~24 h)."
    )
    outcome_unknown = models.BooleanField(
        default=False,
        help_text="An attempt was made and its answer never came (timeout, 5xx, lost response, crash): "
        "Stripe may hold the event. Past ~23 h it is checked against Stripe's summaries before a resend.",
    )
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    stripe_response = models.JSONField(null=True, blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    error_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at", "id"],
                condition=models.Q(status="pending"),
                name="usage_report_pending",
            ),
            models.Index(fields=["id"], condition=models.Q(status="failed"), name="usage_report_failed"),
            models.Index(fields=["tenant", "meter", "hour"], name="usage_report_tmh"),
            # The sender excludes rows of hours being corrected (almost never any): without this, a
            # stale estimate can make that anti-join scan the whole outbox once per pending row.
            models.Index(
                fields=["tenant", "meter", "hour"],
                condition=models.Q(status="correcting"),
                name="usage_report_correcting",
            ),
        ]

    def __str__(self) -> str:
        return self.identifier


class ReportedHour(models.Model):
    """How far the outbox has covered one (tenant, meter, hour): the aggregate revision and value."""

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+", db_index=False)
    meter = models.ForeignKey("metering.Meter", on_delete=models.CASCADE, related_name="+", db_index=False)
    hour = models.DateTimeField()
    revision = models.PositiveIntegerField()
    quantity = _quantity()
    billed = models.BooleanField(
        help_text="False when the tenant was on the free plan: the hour is covered but not billed."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "meter", "hour"], name="reported_hour_unique"),
        ]

    def __str__(self) -> str:
        return f"tenant {self.tenant_id} meter {self.meter_id} {self.hour:%Y-%m-%d %H}:00 r{self.revision}"


class ReportingBalance(models.Model):
    """Per (tenant, meter): local quantity reported so far and whole units sent for it.

    The difference is the carried fraction; every report sends floor(quantity) - units, so no
    fraction is lost or billed twice.
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+", db_index=False)
    meter = models.ForeignKey("metering.Meter", on_delete=models.CASCADE, related_name="+", db_index=False)
    quantity = _quantity(default=0)
    units = models.BigIntegerField(default=0)
    # A sender holds this (tenant, meter) until then: one call at a time per customer and meter.
    sending_until = models.DateTimeField(null=True, blank=True)
    # Set when preparing this pair's reports failed (the other pairs went on); cleared when it works.
    failed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "meter"], name="reporting_balance_unique"),
        ]

    def __str__(self) -> str:
        quantity = format_quantity(self.quantity)
        return f"tenant {self.tenant_id} meter {self.meter_id}: {quantity} reported, {self.units:,} units"


class CircuitBreaker(models.Model):
    """Stops calls to a service after a run of failures, for a while (shown in admin)."""

    name = models.CharField(max_length=64, unique=True)
    failures = models.PositiveIntegerField(default=0, help_text="Failed calls in a row.")
    open_until = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.name


class ReconciliationRun(TriggeredRun):
    """One comparison of local usage, what was sent and Stripe's summaries over a window of hours."""

    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    hours_checked = models.PositiveIntegerField(default=0)
    differences = models.PositiveIntegerField(default=0)
    resent = models.PositiveIntegerField(default=0)
    stripe_calls = models.PositiveIntegerField(default=0)
    at_risk = models.PositiveIntegerField(
        default=0, help_text="Unsent (tenant, meter, hour)s close to Stripe's 35-day window."
    )

    class Meta(TriggeredRun.Meta):
        pass

    def __str__(self) -> str:
        return f"Reconciliation {self.pk} ({self.started_at:%Y-%m-%d %H:%M})"


class ReconciliationItem(models.Model):
    """One (tenant, meter, hour) where local aggregates, what was sent and Stripe's summary differ."""

    class Kind(models.TextChoices):
        NOT_SENT = "not_sent", "Local usage not (fully) sent"
        STRIPE_MISSING = "stripe_missing", "Sent but missing at Stripe"
        STRIPE_EXTRA = "stripe_extra", "Stripe has more than was sent"
        OFFSET = "offset", "Lowered too late to cancel at Stripe: offset against later usage"

    run = models.ForeignKey(ReconciliationRun, on_delete=models.CASCADE, related_name="items")
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    meter = models.ForeignKey("metering.Meter", on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    local_quantity = _quantity()
    sent_value = models.BigIntegerField()
    stripe_value = _quantity(null=True)
    resolution = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["hour"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.hour:%Y-%m-%d %H}:00"
