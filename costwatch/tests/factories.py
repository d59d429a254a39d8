"""Rows of the costwatch app for tests."""

from decimal import Decimal

import factory
from django.utils import timezone

from costwatch.budgets import thresholds_parse
from costwatch.models import Alert, Budget, CostCheckRun, DailyCost


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
