from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from core.models import TriggeredRun
from core.money import format_quantity
from tenants.models import Tenant

# Quantities: up to 20 integer digits and 12 decimals (Stripe's unit_amount_decimal precision).
QUANTITY_MAX_DIGITS = 32
QUANTITY_DECIMAL_PLACES = 12
# Aggregates add many quantities: room for 26 integer digits.
TOTAL_MAX_DIGITS = 38
# A meter's value property: a name, or a path into nested objects (`usage.tokens`), with or without
# OpenMeter's JSONPath root (`$.usage.tokens`).
VALUE_PROPERTY_PATTERN = r"^(\$\.)?[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$"
# Only these aggregations read an event's quantity; count and unique_count never do.
VALUE_AGGREGATIONS = ("sum", "max", "latest")


class Meter(models.Model):
    """What is billable: events whose `meter` field equals `code`, aggregated per hour."""

    class Aggregation(models.TextChoices):
        COUNT = "count", "Count of events"
        SUM = "sum", "Sum of quantity"
        MAX = "max", "Maximum quantity"
        UNIQUE_COUNT = "unique_count", "Distinct values of a property"
        LATEST = "latest", "Latest quantity in the hour"

    code = models.CharField(
        max_length=100,
        unique=True,
        validators=[
            RegexValidator(
                r"^[a-z0-9][a-z0-9_.\-]*$",
                "Lower-case letters, digits, '_', '.', '-'; it starts with a letter or digit.",
            )
        ],
        help_text="The `meter` field of events, and the Stripe meter's event name.",
    )
    name = models.CharField(max_length=200)
    unit = models.CharField(max_length=50, default="unit", help_text="e.g. request, GB, seat")
    aggregation = models.CharField(max_length=16, choices=Aggregation.choices)
    unique_property = models.CharField(
        max_length=100,
        blank=True,
        help_text="For 'Distinct values of a property': the property whose distinct values count.",
    )
    value_property = models.CharField(
        max_length=100,
        blank=True,
        validators=[
            RegexValidator(
                VALUE_PROPERTY_PATTERN,
                "A property name, or a path into nested objects: 'tokens', 'usage.tokens' or "
                "'$.usage.tokens' (letters, digits, '_' and '-' between the dots).",
            )
        ],
        help_text="For sum, max and latest meters: an event without a quantity takes it from this "
        "property ('tokens', or a path such as '$.usage.tokens'). Lago's field_name, OpenMeter's "
        "valueProperty.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(aggregation="unique_count") | ~models.Q(unique_property=""),
                name="meter_unique_count_needs_property",
            ),
            models.CheckConstraint(
                condition=models.Q(value_property="") | models.Q(aggregation__in=VALUE_AGGREGATIONS),
                name="meter_value_property_needs_value_aggregation",
            ),
        ]

    def __str__(self) -> str:
        return self.code


class MeterFilter(models.Model):
    """Only events whose property equals (or is in) the given values count for the meter.

    Values are compared as text, so `200` and `"200"` both match the value 200.
    """

    class Operator(models.TextChoices):
        EQUALS = "eq", "equals"
        IN = "in", "is one of"

    meter = models.ForeignKey(Meter, on_delete=models.CASCADE, related_name="filters")
    property = models.CharField(max_length=100)
    operator = models.CharField(max_length=4, choices=Operator.choices, default=Operator.EQUALS)
    values = models.JSONField(help_text="A list of accepted values (one for 'equals').")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["meter", "property"], name="meter_filter_one_per_property"),
        ]

    def __str__(self) -> str:
        return f"{self.property} {self.get_operator_display()} {self.values}"

    def text_values(self) -> list[str]:
        return [str(value) for value in self.values]


class UsageEvent(models.Model):
    """One usage event as the tenant sent it. Append-only; kept in metering.eventstore.

    On PostgreSQL the table is partitioned by UTC day of `timestamp` (migration 0011) and
    idempotency per (tenant, event_id) is kept by EventKey; on SQLite (the demo) a unique index
    on (tenant, event_id) does it. See metering/eventstore and docs/scaling.md."""

    id = models.BigAutoField(primary_key=True)
    # No foreign key constraints and no single-column indexes: every index and constraint check
    # costs on the ingestion path, and ingestion has resolved tenant and meter already. (Neither is
    # ever deleted while it has events: PROTECT is enforced by the ORM, see the admin.)
    tenant = models.ForeignKey(
        Tenant, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    meter = models.ForeignKey(
        Meter, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    event_id = models.CharField(max_length=100)
    timestamp = models.DateTimeField()
    quantity = models.DecimalField(
        max_digits=QUANTITY_MAX_DIGITS, decimal_places=QUANTITY_DECIMAL_PLACES, default=Decimal("1")
    )
    properties = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField()

    class Meta:
        indexes = [
            # Aggregation and read-back: one tenant's events of one meter in a time range.
            models.Index(fields=["tenant", "meter", "timestamp"], name="usage_event_tmt"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} ({self.meter_id} x {format_quantity(self.quantity)})"


class EventKey(models.Model):
    """The idempotency key of a stored event (PostgreSQL): (tenant, event id) in a generation, a
    36-day slice of time. The table is partitioned by generation; a batch writes each key into
    the current and the previous generation and stores the event only if both were new, so two
    sends less than a generation apart always meet in one partition's primary key. Unused on
    SQLite. See metering/eventstore/postgresql.py."""

    pk = models.CompositePrimaryKey("tenant_id", "event_id", "generation")
    tenant_id = models.BigIntegerField()
    event_id = models.CharField(max_length=100)
    generation = models.IntegerField()
    timestamp = models.DateTimeField(help_text="The first send's timestamp (where the event sits).")

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.event_id} (generation {self.generation})"


class PendingHour(models.Model):
    """An hour that received events since it was last aggregated (a work queue, not history).

    Ingestion upserts a row here in the same transaction as the events; aggregation locks, reads
    and deletes it in one transaction, so an event is either seen by that aggregation or leaves
    the hour pending again.
    """

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)
    meter = models.ForeignKey(Meter, on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField()
    marked_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "meter", "hour"], name="pending_hour_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.meter_id} {self.hour:%Y-%m-%d %H}:00 pending"


class HourlyAggregate(models.Model):
    """The value of one meter for one tenant in one UTC hour. `revision` grows on every change."""

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(
        Tenant, on_delete=models.PROTECT, related_name="hourly_aggregates", db_index=False
    )
    meter = models.ForeignKey(Meter, on_delete=models.PROTECT, related_name="hourly_aggregates")
    hour = models.DateTimeField()
    value = models.DecimalField(max_digits=TOTAL_MAX_DIGITS, decimal_places=QUANTITY_DECIMAL_PLACES)
    event_count = models.PositiveBigIntegerField()
    revision = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "meter", "hour"], name="hourly_aggregate_unique"),
        ]
        ordering = ["-hour"]

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.meter_id} {self.hour:%Y-%m-%d %H}:00 = {format_quantity(self.value)}"


class HourlyAggregateChange(models.Model):
    """Append-only record of each change of an hourly aggregate (late events, re-aggregation)."""

    id = models.BigAutoField(primary_key=True)
    aggregate = models.ForeignKey(HourlyAggregate, on_delete=models.CASCADE, related_name="changes")
    revision = models.PositiveIntegerField()
    old_value = models.DecimalField(
        max_digits=TOTAL_MAX_DIGITS, decimal_places=QUANTITY_DECIMAL_PLACES, null=True
    )
    new_value = models.DecimalField(max_digits=TOTAL_MAX_DIGITS, decimal_places=QUANTITY_DECIMAL_PLACES)
    old_event_count = models.PositiveBigIntegerField(null=True)
    new_event_count = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["aggregate", "revision"], name="aggregate_change_revision"),
        ]
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        old = "-" if self.old_value is None else format_quantity(self.old_value)
        return f"revision {self.revision}: {old} -> {format_quantity(self.new_value)}"


class AggregationRun(TriggeredRun):
    """One run of aggregation, for operators: when, how long, what it did, how it ended."""

    hours_aggregated = models.PositiveIntegerField(default=0)
    hours_changed = models.PositiveIntegerField(default=0)

    class Meta(TriggeredRun.Meta):
        pass

    def __str__(self) -> str:
        return f"aggregation {self.started_at:%Y-%m-%d %H:%M} ({self.status})"


class PruneRun(models.Model):
    """One run of raw-event retention pruning. Its `cutoff` is written before anything is deleted:
    an hour that starts before the latest cutoff may have lost some of its raw events, so it is
    never recomputed from them again (its aggregate stands)."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    cutoff = models.DateTimeField(help_text="Events received and timed before this were deleted.")
    deleted = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-started_at"]
        get_latest_by = "started_at"

    def __str__(self) -> str:
        return f"prune {self.started_at:%Y-%m-%d %H:%M}: before {self.cutoff:%Y-%m-%d %H:%M}"


class Price(models.Model):
    """How a meter's monthly usage is charged on a plan (the pricing preview).

    Amounts are in minor units of `currency` (cents), as Decimals so that sub-cent unit prices
    (Stripe's unit_amount_decimal) are exact; a charge is rounded to whole minor units once.
    """

    class Model(models.TextChoices):
        PER_UNIT = "per_unit", "Per unit"
        PACKAGE = "package", "Per package (rounded up)"
        GRADUATED = "graduated", "Graduated tiers"
        VOLUME = "volume", "Volume tiers"

    meter = models.ForeignKey(Meter, on_delete=models.CASCADE, related_name="prices")
    plan = models.CharField(max_length=16, choices=Tenant.Plan.choices)
    currency = models.CharField(max_length=3, default="usd")
    model = models.CharField(max_length=16, choices=Model.choices, default=Model.PER_UNIT)
    unit_amount = models.DecimalField(
        max_digits=24,
        decimal_places=12,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0"))],
        help_text="Minor units per unit (per_unit) or per package (package).",
    )
    package_size = models.PositiveBigIntegerField(
        default=1, help_text="Units per package, for the package model (e.g. 1000 calls)."
    )
    tiers = models.JSONField(
        default=list,
        blank=True,
        help_text='Tiers, for the tiered models: [{"up_to": 1000, "unit_amount": "0.5", '
        '"flat_amount": "0"}, ..., {"up_to": null, ...}]; amounts in minor units.',
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["meter", "plan"], name="price_one_per_meter_and_plan"),
        ]

    def __str__(self) -> str:
        return f"{self.meter.code} on {self.plan}: {self.get_model_display()}"


# Refusing events at a limit needs usage that only grows as events arrive, so that the usage after
# a batch is the usage before it plus the batch's own events: true of count and sum. A max, latest or
# unique count can stay put or even fall when events arrive; "refuse beyond N" has no exact meaning.
REFUSABLE_AGGREGATIONS = ("count", "sum")


class PlanMeterAllowance(models.Model):
    """What a plan includes of a meter per billing period (the UTC calendar month), an optional hard
    limit, and what happens at that limit. Without a row, the old rule holds (metering.allowances):
    free-plan tenants get their `monthly_free_allowance`, metered tenants no allowance and no limit."""

    class AtLimit(models.TextChoices):
        REPORT = "report", "Report only (usage beyond the limit is recorded and billed)"
        REFUSE = "refuse", "Refuse events beyond the limit"

    plan = models.CharField(max_length=16, choices=Tenant.Plan.choices)
    meter = models.ForeignKey(Meter, on_delete=models.CASCADE, related_name="plan_allowances")
    included = models.DecimalField(
        max_digits=QUANTITY_MAX_DIGITS,
        decimal_places=QUANTITY_DECIMAL_PLACES,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0"))],
        help_text="Units of the meter included per billing period (UTC calendar month); billed beyond.",
    )
    hard_limit = models.DecimalField(
        max_digits=QUANTITY_MAX_DIGITS,
        decimal_places=QUANTITY_DECIMAL_PLACES,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0.000000000001"))],
        help_text="Optional: units per billing period past which the plan stops (refuse) or only "
        "reports (report); at least the included allowance.",
    )
    at_limit = models.CharField(
        max_length=8,
        choices=AtLimit.choices,
        default=AtLimit.REPORT,
        verbose_name="at the limit",
        help_text="Refuse is offered for count and sum meters only: their usage only grows as events "
        "arrive, so 'the events beyond the limit' is exact.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["plan", "meter__code"]
        verbose_name = "plan allowance"
        constraints = [
            models.UniqueConstraint(fields=["plan", "meter"], name="plan_meter_allowance_unique"),
            models.CheckConstraint(condition=models.Q(included__gte=0), name="plan_allowance_included_gte_0"),
            models.CheckConstraint(
                condition=models.Q(hard_limit__isnull=True) | models.Q(hard_limit__gt=0),
                name="plan_allowance_limit_positive",
            ),
            models.CheckConstraint(
                condition=models.Q(hard_limit__isnull=True) | models.Q(hard_limit__gte=models.F("included")),
                name="plan_allowance_limit_gte_included",
            ),
            models.CheckConstraint(
                condition=~models.Q(at_limit="refuse") | models.Q(hard_limit__isnull=False),
                name="plan_allowance_refuse_needs_limit",
            ),
        ]

    def __str__(self) -> str:
        limit = (
            "" if self.hard_limit is None else f", limit {format_quantity(self.hard_limit)} ({self.at_limit})"
        )
        return f"{self.plan} {self.meter.code}: {format_quantity(self.included)} included{limit}"

    def clean(self):
        problems = {}
        if self.hard_limit is not None and self.included is not None and self.hard_limit < self.included:
            problems["hard_limit"] = "must be at least the included allowance"
        if self.at_limit == self.AtLimit.REFUSE:
            if self.hard_limit is None:
                problems["hard_limit"] = "is required to refuse events at the limit"
            try:
                # The meter as the form has it (an admin inline's parent, saved or not), not reloaded.
                meter = self.meter
            except Meter.DoesNotExist:
                meter = None
            if meter is not None and meter.aggregation not in REFUSABLE_AGGREGATIONS:
                problems["at_limit"] = (
                    f"refuse works on count and sum meters only; {meter.code} is a "
                    f"{meter.get_aggregation_display().lower()} meter, whose usage does not grow with each "
                    "event"
                )
        if problems:
            raise ValidationError(problems)


class UsageQueue(models.Model):
    """An SQS queue of usage events (seed 000's EventBridge BILLING/ONBOARD events, directly or
    through SNS) that the periodic task consumes into `meter` (metering/eventbus.py).

    The counters are per received message: a message that fails is received again after its
    visibility timeout, so `failed` counts attempts; SQS's redrive policy moves it to the
    dead-letter queue after its maxReceiveCount.
    """

    url = models.URLField(
        max_length=1024,
        unique=True,
        verbose_name="queue URL",
        help_text="The SQS queue URL, e.g. https://sqs.eu-west-1.amazonaws.com/123456789012/usage.",
    )
    meter = models.ForeignKey(
        Meter,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The meter every BILLING event of this queue is recorded in.",
    )
    enabled = models.BooleanField(default=True, help_text="Polled by the periodic task when enabled.")
    visibility_timeout = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(43200)],
        help_text="Seconds a received message stays hidden while it is processed (at most 43200); "
        "empty: the queue's own setting.",
    )
    received = models.PositiveBigIntegerField(default=0, help_text="Messages received (every delivery).")
    processed = models.PositiveBigIntegerField(
        default=0, help_text="Messages whose effect was committed and that were deleted from the queue."
    )
    duplicates = models.PositiveBigIntegerField(
        default=0, help_text="Billing events already recorded (a redelivery); deleted, nothing changed."
    )
    failed = models.PositiveBigIntegerField(
        default=0, help_text="Deliveries that could not be processed; left in the queue for its redrive."
    )
    last_error = models.CharField(max_length=500, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["url"]
        verbose_name = "usage queue (SQS)"
        verbose_name_plural = "usage queues (SQS)"

    def __str__(self) -> str:
        return self.url.rsplit("/", 1)[-1] or self.url


class UsageThreshold(models.Model):
    """A level of a tenant's monthly usage of a meter that the SaaS wants to hear about: crossing it
    publishes `usage.threshold_crossed` once per billing period (the UTC calendar month, as the
    allowances). Absolute (units of the meter) or a percentage of the tenant's allowance of the meter
    (metering.allowances).
    """

    class Kind(models.TextChoices):
        ABSOLUTE = "absolute", "Units of the meter"
        PERCENT_OF_ALLOWANCE = "percent_of_allowance", "Percent of the meter's allowance"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="usage_thresholds")
    meter = models.ForeignKey(Meter, on_delete=models.CASCADE, related_name="thresholds")
    kind = models.CharField(max_length=24, choices=Kind.choices, default=Kind.ABSOLUTE)
    value = models.DecimalField(
        max_digits=QUANTITY_MAX_DIGITS,
        decimal_places=QUANTITY_DECIMAL_PLACES,
        validators=[MinValueValidator(Decimal("0.000000000001"))],
        help_text="Units of the meter (absolute), or a percentage of the tenant's allowance of the meter "
        "(its plan's per-meter allowance, else its monthly free allowance; e.g. 80 or 100).",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant_id", "meter_id", "kind", "value"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "meter", "kind", "value"], name="usage_threshold_unique"
            ),
            models.CheckConstraint(condition=models.Q(value__gt=0), name="usage_threshold_value_positive"),
        ]

    def __str__(self) -> str:
        level = (
            f"{format_quantity(self.value)}%"
            if self.kind == self.Kind.PERCENT_OF_ALLOWANCE
            else (format_quantity(self.value))
        )
        return f"{self.tenant.slug} {self.meter.code} at {level}"

    def units(self, allowance: Decimal) -> Decimal | None:
        """The threshold in units of the meter; None for a percentage of an allowance of zero."""
        if self.kind == self.Kind.ABSOLUTE:
            return self.value
        if not allowance:
            return None
        return allowance * self.value / 100


class UsageThresholdCrossing(models.Model):
    """A threshold crossed in one billing period: at most one per period, so the event is sent once."""

    threshold = models.ForeignKey(UsageThreshold, on_delete=models.CASCADE, related_name="crossings")
    period_start = models.DateTimeField()
    units = models.DecimalField(
        max_digits=TOTAL_MAX_DIGITS, decimal_places=QUANTITY_DECIMAL_PLACES, help_text="The level crossed."
    )
    usage = models.DecimalField(
        max_digits=TOTAL_MAX_DIGITS,
        decimal_places=QUANTITY_DECIMAL_PLACES,
        help_text="The period's usage when the crossing was found.",
    )
    crossed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-crossed_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["threshold", "period_start"], name="usage_threshold_once_per_period"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.threshold} crossed in {self.period_start:%Y-%m}"
