"""The Stripe side of tenants and meters: which Stripe objects belong to which local ones."""

from django.db import models


class StripeMeter(models.Model):
    """A local Meter's Stripe billing meter and metered price (created by onboarding when missing)."""

    meter = models.OneToOneField("metering.Meter", on_delete=models.CASCADE, related_name="stripe")
    event_name = models.CharField(
        max_length=100, unique=True, help_text="The meter events' event_name at Stripe."
    )
    stripe_meter_id = models.CharField(max_length=255, blank=True)
    stripe_product_id = models.CharField(max_length=255, blank=True)
    stripe_price_id = models.CharField(max_length=255, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "Stripe meter"

    def __str__(self) -> str:
        return f"{self.event_name} ({self.stripe_meter_id or 'not at Stripe yet'})"


class TenantSubscription(models.Model):
    """Which Stripe subscription is the tenant's metered one (one row per tenant).

    `generation` counts the subscriptions the platform has made for the tenant: it is part of the
    Idempotency-Key of the next create, so a retry replays Stripe's answer but a tenant whose
    subscription was canceled can get a new one.
    """

    tenant = models.OneToOneField(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="stripe_subscription"
    )
    subscription = models.OneToOneField(
        "djstripe.Subscription",
        to_field="id",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The tenant's metered subscription (dj-stripe's mirror).",
    )
    generation = models.PositiveIntegerField(default=0)
    canceled_at = models.DateTimeField(null=True, blank=True)
    cancel_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "tenant subscription"

    def __str__(self) -> str:
        return f"{self.tenant_id}: {self.subscription_id or 'no subscription'}"
