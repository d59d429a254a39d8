"""Rows of the console app for tests."""

import factory

from console.models import OperatorJob
from tenants.tests.factories import TenantFactory


class OperatorJobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OperatorJob

    kind = OperatorJob.Kind.REAGGREGATE
    tenant = factory.SubFactory(TenantFactory)
