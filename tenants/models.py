from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from rest_framework_api_key.crypto import KeyGenerator
from rest_framework_api_key.models import AbstractAPIKey, BaseAPIKeyManager

from core.api_scopes import SCOPES

# API Gateway's key ids are 10 letters and digits; the id goes into usage event ids (apigateway's
# import), which are at most 100 characters.
APIGATEWAY_KEY_ID_MAX_LENGTH = 32
APIGATEWAY_KEY_ID_PATTERN = r"^[A-Za-z0-9]{1,32}\Z"
APIGATEWAY_KEY_ID_MESSAGE = "An API Gateway key id: 1 to 32 letters and digits (e.g. a1b2c3d4e5)."


class Tenant(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    class Plan(models.TextChoices):
        FREE = "free", "Free"
        METERED = "metered", "Metered"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    external_id = models.CharField(
        max_length=255,
        unique=True,
        null=True,
        blank=True,
        help_text="The SaaS's own id for this customer (optional, unique). A platform key names the "
        "tenant by it or by its slug.",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    plan = models.CharField(max_length=16, choices=Plan.choices, default=Plan.FREE)
    apigateway_key_id = models.CharField(
        "API Gateway key id",
        max_length=APIGATEWAY_KEY_ID_MAX_LENGTH,
        unique=True,
        null=True,
        blank=True,
        validators=[RegexValidator(APIGATEWAY_KEY_ID_PATTERN, APIGATEWAY_KEY_ID_MESSAGE)],
        help_text="The id (not the value) of the tenant's API key at AWS API Gateway (optional, unique): "
        "the key is kept in its plan's usage plan (apigateway app).",
    )
    monthly_free_allowance = models.DecimalField(
        max_digits=20,
        decimal_places=6,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0"))],
        help_text="Units of each meter the tenant may use free every calendar month (UTC).",
    )
    stripe_customer = models.OneToOneField(
        "djstripe.Customer",
        to_field="id",  # so stripe_customer_id holds Stripe's "cus_..." id
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="tenant",
        help_text="The tenant's Stripe customer; set when the tenant is onboarded to Stripe.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["status", "plan"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(monthly_free_allowance__gte=0),
                name="tenant_free_allowance_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class TenantChange(models.Model):
    """Append-only history of a tenant: plan, status, name, free allowance, external id, its keys
    (issued and revoked: the prefix, never the secret), its API Gateway key id and where that key was
    put (usage plan placements, source "apigateway"), with who or what changed it."""

    class Field(models.TextChoices):
        STATUS = "status", "Status"
        PLAN = "plan", "Plan"
        CREATED = "created", "Created"
        NAME = "name", "Name"
        FREE_ALLOWANCE = "free_allowance", "Free allowance"
        EXTERNAL_ID = "external_id", "External id"
        API_KEY = "api_key", "API key"
        APIGATEWAY_KEY_ID = "apigateway_key", "API Gateway key id"
        USAGE_PLAN = "usage_plan", "API Gateway usage plan"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="changes")
    field = models.CharField(max_length=16, choices=Field.choices)
    old_value = models.CharField(max_length=255, blank=True)
    new_value = models.CharField(max_length=255, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    platform_key = models.ForeignKey(
        "tenants.PlatformAPIKey",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The platform key that made the change through the API, if one did.",
    )
    source = models.CharField(
        max_length=64, help_text="What caused the change: admin, command, a Stripe event id, ..."
    )
    reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.tenant.slug}: {self.field} {self.old_value} -> {self.new_value}"


class TenantAPIKeyManager(BaseAPIKeyManager):
    def assign_key(self, obj: "TenantAPIKey") -> str:
        # The library makes "<prefix>.<hash>" the primary key, which would put the hash in every
        # admin URL and form; our keys have an integer id and keep the hash out of sight.
        key, prefix, hashed_key = self.key_generator.generate()
        obj.prefix = prefix
        obj.hashed_key = hashed_key
        return key


class TenantAPIKey(AbstractAPIKey):
    """An API key that belongs to one tenant.

    The key a client sends is `<prefix>.<secret>`; only the prefix (public, unique) and a SHA-512
    hash of the whole key are stored, by djangorestframework-api-key.
    """

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = TenantAPIKeyManager()

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


PLATFORM_KEY_PREFIX = "plat_"


class PlatformKeyGenerator(KeyGenerator):
    """Platform keys read `plat_<8 characters>.<secret>`: the kind shows in the key itself, and
    authentication finds the right table from the prefix (tenant prefixes never hold "_")."""

    def get_prefix(self) -> str:
        return PLATFORM_KEY_PREFIX + super().get_prefix()


class PlatformAPIKeyManager(TenantAPIKeyManager):
    key_generator = PlatformKeyGenerator()


class PlatformAPIKey(AbstractAPIKey):
    """A key of the SaaS's own backend, not of a tenant: it names tenants itself and may do only
    what its scopes allow (core.api_scopes). Stored hashed like tenant keys."""

    id = models.BigAutoField(primary_key=True)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    scopes = models.JSONField(default=list, help_text="What the key may do: " + ", ".join(SCOPES) + ".")
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    objects = PlatformAPIKeyManager()

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "platform API key"
        verbose_name_plural = "platform API keys"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
