"""Rows of the apigateway app for tests."""

from datetime import date

import factory

from apigateway.models import ApiGatewayUsageDay, UsagePlanPlacement
from tenants.tests.factories import TenantFactory


class UsagePlanPlacementFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UsagePlanPlacement

    tenant = factory.SubFactory(TenantFactory)
    key_id = factory.Sequence(lambda n: f"key{n:07d}")
    desired_plan_id = "plan01"
    actual_plan_ids = factory.LazyFunction(lambda: ["plan01"])
    status = UsagePlanPlacement.Status.IN_PLACE


class ApiGatewayUsageDayFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ApiGatewayUsageDay

    usage_plan_id = "plan01"
    key_id = factory.Sequence(lambda n: f"key{n:07d}")
    day = factory.LazyFunction(lambda: date(2026, 11, 1))
    tenant = factory.SubFactory(TenantFactory)
    used = 100
    imported = 100
    events = 1
