"""Budgets: creating them, and judging each against month-to-date spend and the month-end forecast."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from core.validation import row_validate
from costwatch.conf import ANOMALY_WINDOW_DAYS, CostwatchConfig
from costwatch.cost_explorer import CostExplorer
from costwatch.costs import (
    budget_scope_q,
    history_reaches,
    month_end,
    month_start,
    next_month,
    other_currencies,
    scope_daily_totals,
    scope_total,
)
from costwatch.models import Basis, Budget, BudgetEvaluation, CostCheckRun
from tenants.models import Tenant

DEFAULT_THRESHOLDS = "50,80,100"
_THRESHOLD = re.compile(r"^\s*(?P<percent>[0-9]+(?:\.[0-9]{1,2})?)\s*(?::\s*(?P<basis>[a-z]+)\s*)?$")


def thresholds_parse(text: str, *, default_basis: str = Basis.BOTH) -> list[dict]:
    """ "50,80:forecast,100" -> [{"percent": "50", "basis": <default>}, ...], sorted, no duplicates."""
    if default_basis not in Basis.values:
        raise ValidationError(f"basis must be one of {', '.join(Basis.values)}, got {default_basis!r}")
    parsed: dict[Decimal, str] = {}
    for part in text.split(","):
        match = _THRESHOLD.match(part)
        if not match:
            raise ValidationError(
                f"thresholds: {part.strip()!r} is not a percentage such as 80 or 80:forecast"
            )
        percent = Decimal(match["percent"])
        basis = match["basis"] or default_basis
        if basis not in Basis.values:
            raise ValidationError(f"thresholds: basis {basis!r} must be one of {', '.join(Basis.values)}")
        if not 0 < percent <= 1000:
            raise ValidationError(f"thresholds: {percent} must be above 0 and at most 1000 (percent)")
        if percent in parsed:
            raise ValidationError(f"thresholds: {percent} is given twice")
        parsed[percent] = basis
    return [{"percent": str(percent), "basis": parsed[percent]} for percent in sorted(parsed)]


def thresholds_format(thresholds: list[dict]) -> str:
    return ",".join(
        item["percent"] if item["basis"] == Basis.BOTH else f"{item['percent']}:{item['basis']}"
        for item in thresholds
    )


@transaction.atomic
def budget_create(
    *,
    name: str,
    amount: Decimal,
    currency: str,
    thresholds: str = DEFAULT_THRESHOLDS,
    basis: str = Basis.BOTH,
    service: str = "",
    tag_value: str = "",
    tenant: Tenant | None = None,
    sns_topic_arn: str = "",
    emails: list[str] | None = None,
    pass_through: bool = False,
    markup_percent: Decimal = Decimal(0),
) -> Budget:
    """Create a budget; ValidationError (with the field named) on anything it cannot be."""
    if service and (tag_value or tenant):
        raise ValidationError("a budget covers one service or one tag value, not both")
    if markup_percent and not pass_through:
        raise ValidationError("--markup applies only to a pass-through budget")
    if Budget.objects.filter(name=name).exists():
        raise ValidationError(f"a budget named {name!r} already exists")
    if service:
        scope = Budget.Scope.SERVICE
    elif tag_value or tenant:
        scope = Budget.Scope.TAG
    else:
        scope = Budget.Scope.ACCOUNT
    budget = Budget(
        name=name,
        scope=scope,
        service=service,
        tag_value=tag_value or (tenant.slug if tenant else ""),
        tenant=tenant,
        amount=amount,
        currency=currency.upper(),
        thresholds=thresholds_parse(thresholds, default_basis=basis),
        sns_topic_arn=sns_topic_arn,
        emails=list(emails or []),
        pass_through=pass_through,
        markup_percent=markup_percent,
    )
    row_validate(budget)
    budget.save()
    return budget


def budget_needs_forecast(budget: Budget) -> bool:
    return any(item["basis"] in (Basis.FORECAST, Basis.BOTH) for item in budget.thresholds)


def forecast_expression(budget: Budget, *, tag_key: str) -> dict | None:
    if budget.scope == Budget.Scope.SERVICE:
        return {"Dimensions": {"Key": "SERVICE", "Values": [budget.service]}}
    if budget.scope == Budget.Scope.TAG:
        return {"Tags": {"Key": tag_key, "Values": [budget.tag_value]}}
    return None


def linear_forecast(*, actual: Decimal, day: date) -> Decimal:
    """Month-to-date spend through `day`, carried on at the same daily rate to the month's end."""
    return actual / day.day * month_end(day).day


@dataclass
class Judgement:
    """A budget as one run judged it, and the threshold crossings and anomaly it found."""

    budget: Budget
    evaluation: BudgetEvaluation | None
    crossings: list[tuple[str, Decimal]] = field(default_factory=list)  # (kind, threshold percent)
    anomaly: tuple[Decimal, Decimal] | None = None  # (the day's cost, trailing mean)
    notes: list[str] = field(default_factory=list)


class ForecastCache:
    """AWS forecasts of one run, one request per distinct scope at most."""

    def __init__(self, *, explorer: CostExplorer, config: CostwatchConfig) -> None:
        self.explorer = explorer
        self.config = config
        self._answers: dict[str, tuple[Decimal | None, str]] = {}

    def remaining(self, *, budget: Budget, start: date, end: date) -> tuple[Decimal | None, str]:
        expression = forecast_expression(budget, tag_key=self.config.tag_key)
        key = repr(expression)
        if key not in self._answers:
            self._answers[key] = self.explorer.forecast(start=start, end=end, expression=expression)
        return self._answers[key]


def budget_judge(
    *, budget: Budget, day: date, run: CostCheckRun, config: CostwatchConfig, forecasts: ForecastCache
) -> Judgement:
    """Spend of `day`'s month through `day`, the month-end forecast, crossed thresholds, a spike."""
    judgement = Judgement(budget=budget, evaluation=None)
    scope = budget_scope_q(budget)
    month = month_start(day)
    currency = budget.currency
    foreign = other_currencies(metric=config.metric, scope=scope, currency=currency, start=month, end=day)
    if foreign:
        judgement.notes.append(f"costs in {', '.join(foreign)} left out (the budget is in {currency})")
    actual = scope_total(
        metric=config.metric, scope=scope, currency=currency, start=month, end=day + timedelta(days=1)
    )

    note = ""
    if day == month_end(day):
        forecast, method = actual, BudgetEvaluation.ForecastMethod.FINAL
    else:
        remaining = None
        tomorrow = day + timedelta(days=1)
        if not budget_needs_forecast(budget):
            note = "no forecast threshold: Cost Explorer not asked"
        elif tomorrow < timezone.now().date():
            note = "a past day: Cost Explorer forecasts only from today"
        else:
            remaining, note = forecasts.remaining(budget=budget, start=tomorrow, end=next_month(day))
        if remaining is not None:
            forecast, method = actual + remaining, BudgetEvaluation.ForecastMethod.AWS
        else:
            forecast, method = linear_forecast(actual=actual, day=day), BudgetEvaluation.ForecastMethod.LINEAR
    judgement.evaluation = BudgetEvaluation.objects.create(
        run=run,
        budget=budget,
        month=month,
        actual=actual,
        forecast=forecast,
        forecast_method=method,
        forecast_note=note[:300],
    )

    for item in budget.thresholds:
        percent = Decimal(item["percent"])
        limit = budget.amount * percent / 100
        if item["basis"] in (Basis.ACTUAL, Basis.BOTH) and actual >= limit:
            judgement.crossings.append(("actual", percent))
        if item["basis"] in (Basis.FORECAST, Basis.BOTH) and forecast >= limit:
            judgement.crossings.append(("forecast", percent))

    judgement.anomaly = _anomaly(budget=budget, day=day, config=config)
    return judgement


def _anomaly(*, budget: Budget, day: date, config: CostwatchConfig) -> tuple[Decimal, Decimal] | None:
    """The day's cost and its trailing mean, when the day is a spike (factor x the mean)."""
    baseline_start = day - timedelta(days=ANOMALY_WINDOW_DAYS)
    if not history_reaches(metric=config.metric, day=baseline_start):
        return None  # too little history to know what is normal
    totals = scope_daily_totals(
        metric=config.metric,
        scope=budget_scope_q(budget),
        currency=budget.currency,
        start=baseline_start,
        end=day + timedelta(days=1),
    )
    cost = totals.get(day, Decimal(0))
    mean = (
        sum(
            (totals.get(baseline_start + timedelta(days=n), Decimal(0)) for n in range(ANOMALY_WINDOW_DAYS)),
            Decimal(0),
        )
        / ANOMALY_WINDOW_DAYS
    )
    if cost >= config.anomaly_min_daily_cost and cost > mean * config.anomaly_factor:
        return cost, mean
    return None
