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
