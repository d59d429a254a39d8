import factory

from tenants.models import Tenant
from tenants.services import api_key_issue


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Tenant {n}")
    slug = factory.Sequence(lambda n: f"tenant-{n}")
    plan = Tenant.Plan.METERED


def issue_key(tenant: Tenant, name: str = "test") -> str:
    return api_key_issue(tenant=tenant, name=name).secret
