"""Rows of the tenants app for tests."""

import factory

from tenants.models import Tenant, TenantChange


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
