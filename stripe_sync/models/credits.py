"""Credit granted to a tenant through Stripe Billing credit grants: the audit record of each grant."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from core.money import format_minor


class CreditGrant(models.Model):
    """One grant of billing credit to a tenant's Stripe customer, written before Stripe is asked.

    The row is the audit record: who granted how much, why, what Stripe answered, and who voided it.
    Its fields are never edited after creation; only the Stripe outcome and a void are recorded.
    The create call's Idempotency-Key is derived from the row's id, so a retry cannot grant twice.
    """

    class Category(models.TextChoices):
        PAID = "paid", "paid (prepaid)"
        PROMOTIONAL = "promotional", "promotional"

    class Status(models.TextChoices):
        PENDING = "pending", "pending (Stripe's answer not known yet)"
        ACTIVE = "active", "active"
        FAILED = "failed", "failed (Stripe refused it)"
        VOIDED = "voided", "voided"
        EXPIRED = "expired", "expired"

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="credit_grants")
    stripe_id = models.CharField(
        max_length=255, blank=True, help_text="The credit grant at Stripe (credgr_...), once it exists."
    )
    customer_id = models.CharField(max_length=255, help_text="The Stripe customer the credit went to.")
    amount_minor = models.PositiveBigIntegerField(help_text="In the currency's minor unit (cents).")
    currency = models.CharField(max_length=3, help_text="Lower case ISO code, as Stripe writes it.")
    category = models.CharField(max_length=20, choices=Category.choices, default=Category.PAID)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="None: the credit never expires.")
    reason = models.CharField(max_length=500)
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    granted_by_name = models.CharField(
        max_length=150, blank=True, help_text="Who granted it, kept if the user is deleted."
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True, help_text="When Stripe last answered.")
    voided_at = models.DateTimeField(null=True, blank=True)
    voided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    voided_by_name = models.CharField(max_length=150, blank=True)
    void_reason = models.CharField(max_length=500, blank=True)

    class Meta:
        verbose_name = "credit grant"
        ordering = ["-created_at", "-id"]
        permissions = [("void_creditgrant", "Can void credit grants at Stripe")]
        constraints = [
            models.CheckConstraint(condition=Q(amount_minor__gt=0), name="credit_grant_amount_positive"),
            models.UniqueConstraint(
                fields=["stripe_id"], condition=~Q(stripe_id=""), name="credit_grant_stripe_id_unique"
            ),
        ]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="credit_grant_tenant_created")]

    def __str__(self) -> str:
        return f"{self.amount_display} of credit to {self.tenant.slug}"

    @property
    def amount_display(self) -> str:
        return format_minor(self.amount_minor, self.currency)

    @property
    def idempotency_key(self) -> str:
        return f"credit-grant-{self.pk}-create"

    def status_at(self, now) -> str:
        """The status as of `now`: an active grant whose expiry has passed is expired."""
        if self.status == self.Status.ACTIVE and self.expires_at is not None and self.expires_at <= now:
            return self.Status.EXPIRED
        return self.status
