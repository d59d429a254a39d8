from datetime import date
from decimal import Decimal

import pytest
from freezegun import freeze_time

from costwatch.budgets import thresholds_parse
from costwatch.models import BudgetEvaluation
from costwatch.services import cost_check_run
from costwatch.tests.conftest import month_days, page
from costwatch.tests.factories import BudgetFactory

pytestmark = pytest.mark.django_db

NOV_1, NOV_10 = date(2026, 11, 1), date(2026, 11, 10)


def run_on(day: str):
    with freeze_time(f"{day} 06:00:00"):
        return cost_check_run(trigger="test")


def test_without_an_aws_forecast_the_linear_one_is_used_and_marked(cost_explorer):
    BudgetFactory(
        name="Acme", scope="tag", tag_value="acme", thresholds=thresholds_parse("80", default_basis="both")
    )
    cost_explorer.queue(
        page(month_days(NOV_1, NOV_10, [("Amazon EC2", "acme", "3"), ("Amazon EC2", "", "100")]))
    )

    run = run_on("2026-11-11")

    evaluation = BudgetEvaluation.objects.get()
    assert (evaluation.actual, evaluation.forecast) == (Decimal("30"), Decimal("90"))
    assert evaluation.forecast_method == BudgetEvaluation.ForecastMethod.LINEAR
    assert "DataUnavailableException" in evaluation.forecast_note
    (request,) = cost_explorer.forecast_requests()
    assert request == {
        "TimePeriod": {"Start": "2026-11-11", "End": "2026-12-01"},
        "Metric": "UNBLENDED_COST",
        "Granularity": "MONTHLY",
        "Filter": {"Tags": {"Key": "tenant", "Values": ["acme"]}},
    }
    assert run.ce_requests == 2


def test_the_aws_forecast_of_the_rest_of_the_month_is_added_to_the_spend(cost_explorer):
    BudgetFactory(
        name="S3", scope="service", service="Amazon S3", thresholds=thresholds_parse("100:forecast")
    )
    BudgetFactory(
        name="S3 too", scope="service", service="Amazon S3", thresholds=thresholds_parse("90:forecast")
    )
    cost_explorer.queue(page(month_days(NOV_1, NOV_10, [("Amazon S3", "", "2")])))
    cost_explorer.proxy.forecast_amount = "55.5"

    run = run_on("2026-11-11")

    forecasts = set(BudgetEvaluation.objects.values_list("forecast", "forecast_method"))
    assert forecasts == {(Decimal("75.5"), "aws")}
    # Two budgets of one scope share one forecast request.
    (request,) = cost_explorer.forecast_requests()
    assert request["Filter"] == {"Dimensions": {"Key": "SERVICE", "Values": ["Amazon S3"]}}
    assert run.ce_requests == 2


def test_budgets_judged_on_actual_spend_only_ask_no_forecast(cost_explorer):
    BudgetFactory(name="Account", thresholds=thresholds_parse("80", default_basis="actual"))
    cost_explorer.queue(page(month_days(NOV_1, NOV_10, [("Amazon S3", "", "2")])))

    run = run_on("2026-11-11")

    assert cost_explorer.forecast_requests() == []
    assert run.ce_requests == 1
    assert BudgetEvaluation.objects.get().forecast == Decimal("60")


def test_the_last_day_of_the_month_needs_no_forecast(cost_explorer):
    BudgetFactory(name="Account", thresholds=thresholds_parse("80:forecast"))
    cost_explorer.queue(page(month_days(NOV_1, date(2026, 11, 30), [("Amazon S3", "", "2")])))

    run_on("2026-12-01")

    evaluation = BudgetEvaluation.objects.get()
    assert (evaluation.forecast, evaluation.forecast_method) == (Decimal("60"), "final")
    assert cost_explorer.forecast_requests() == []


def test_checking_a_past_day_uses_the_linear_forecast_without_asking(cost_explorer):
    BudgetFactory(name="Account", thresholds=thresholds_parse("80:forecast"))
    cost_explorer.queue(page(month_days(NOV_1, NOV_10, [("Amazon S3", "", "2")])))

    with freeze_time("2026-11-25 06:00:00"):
        cost_check_run(day=NOV_10, trigger="test")

    assert cost_explorer.forecast_requests() == []
    assert BudgetEvaluation.objects.get().forecast_method == "linear"
