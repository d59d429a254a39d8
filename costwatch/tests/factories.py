from decimal import Decimal

import factory

from costwatch.budgets import thresholds_parse
from costwatch.models import Budget


class BudgetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Budget

    name = factory.Sequence(lambda n: f"Budget {n}")
    amount = Decimal("1000.00")
    currency = "USD"
    thresholds = factory.LazyFunction(lambda: thresholds_parse("50,80,100", default_basis="actual"))
