"""Rows of the costwatch app for tests."""

from decimal import Decimal

import factory
from django.utils import timezone

from costwatch.budgets import thresholds_parse
from costwatch.models import Alert, Budget, BudgetEvaluation, CostCheckRun, DailyCost, PassThroughCharge
from tenants.tests.factories import TenantFactory


class BudgetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Budget

    name = factory.Sequence(lambda n: f"Budget {n}")
    amount = Decimal("1000.00")
    currency = "USD"
    thresholds = factory.LazyFunction(lambda: thresholds_parse("50,80,100", default_basis="actual"))


class DailyCostFactory(factory.django.DjangoModelFactory):
    """One day of AWS cost of one service and tag value, as the cost check stores it."""

    class Meta:
        model = DailyCost

    metric = "UnblendedCost"
    day = factory.LazyFunction(lambda: timezone.now().date())
    service = "Amazon EC2"
    tag_value = ""
    amount = Decimal("1")
    currency = "USD"


class CostCheckRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CostCheckRun

    trigger = "test"
    checked_date = factory.LazyFunction(lambda: timezone.now().date())
    started_at = factory.LazyFunction(timezone.now)


class AlertFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Alert

    budget = factory.SubFactory(BudgetFactory)
    kind = "actual"
    month = factory.LazyFunction(lambda: timezone.now().date().replace(day=1))
    actual = Decimal("1")
    subject = factory.LazyAttribute(lambda alert: f"{alert.budget.name} alert")
    message = "..."


class PassThroughChargeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PassThroughCharge

    budget = factory.SubFactory(BudgetFactory)
    tenant = factory.SubFactory(TenantFactory)
    month = factory.LazyFunction(lambda: timezone.now().date().replace(day=1))
    spend = Decimal("120.5")
    budget_amount = Decimal("100")
    overage = Decimal("20.5")
    markup_percent = Decimal("10")
    amount_minor = 2255
    currency = "USD"
    idempotency_key = factory.Sequence(lambda n: f"pass-through-{n}")


class BudgetEvaluationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = BudgetEvaluation

    run = factory.SubFactory(CostCheckRunFactory)
    budget = factory.SubFactory(BudgetFactory)
    month = factory.LazyFunction(lambda: timezone.now().date().replace(day=1))
    actual = Decimal("12.5")
    forecast = Decimal("40.25")
    forecast_method = BudgetEvaluation.ForecastMethod.LINEAR
