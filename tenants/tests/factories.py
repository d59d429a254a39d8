"""Rows of the tenants app for tests."""

import factory

from core.api_scopes import SCOPES
from tenants.models import PlatformAPIKey, Tenant, TenantAPIKey, TenantChange


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Tenant {n}")
    slug = factory.Sequence(lambda n: f"tenant-{n}")
    plan = Tenant.Plan.METERED


class TenantChangeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TenantChange

    tenant = factory.SubFactory(TenantFactory)
    field = TenantChange.Field.PLAN
    source = "test"


class TenantAPIKeyFactory(factory.django.DjangoModelFactory):
    """A tenant key row; its secret is not kept (tests that call the API use support.issue_key)."""

    class Meta:
        model = TenantAPIKey

    tenant = factory.SubFactory(TenantFactory)
    name = "test"

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        api_key, _secret = model_class.objects.create_key(**kwargs)
        return api_key


class PlatformAPIKeyFactory(TenantAPIKeyFactory):
    class Meta:
        model = PlatformAPIKey

    tenant = None
    name = "backend"
    scopes = factory.LazyFunction(lambda: list(SCOPES))

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        kwargs.pop("tenant", None)
        return super()._create(model_class, *args, **kwargs)
