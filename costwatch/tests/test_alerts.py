from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.core import mail
from freezegun import freeze_time

from costwatch.alerts import alerts_acknowledge, budgets_snooze
from costwatch.budgets import thresholds_parse
from costwatch.models import Alert
from costwatch.services import cost_check_run
from costwatch.tests.conftest import month_days, page
from costwatch.tests.factories import BudgetFactory

pytestmark = pytest.mark.django_db

NOV_1 = date(2026, 11, 1)


def run_on(day: str):
    with freeze_time(f"{day} 06:00:00"):
        return cost_check_run(trigger="test")


def test_a_threshold_crossed_on_actual_spend_reaches_the_sns_topic(cost_explorer, sns_queue, settings):
    settings.OPERATOR_EMAILS = ["ops@example.com"]
    BudgetFactory(name="Account", amount=Decimal("100"))
    # 20 days of 4.25: 85.00, past 50% and 80% of 100.
    cost_explorer.queue(page(month_days(NOV_1, date(2026, 11, 20), [("Amazon EC2", "acme", "4.25")])))

    run = run_on("2026-11-21")

    assert run.alerts_sent == 2
    messages = sns_queue(at="2026-11-21 06:01")
    assert sorted(m["Subject"] for m in messages) == [
        "Budget Account: spend 85.0% of 100.00 USD (50% threshold)",
        "Budget Account: spend 85.0% of 100.00 USD (80% threshold)",
    ]
    body = next(m["Message"] for m in messages if "(80% threshold)" in m["Subject"])
    assert "Budget: Account (whole account)" in body
    assert "Actual spend to 2026-11-20: 85.00 USD (85.0%)" in body
    assert "Threshold: 80% on actual spend (80.00 USD)" in body
    assert "Month-end forecast: 127.50 USD (127.5%, Linear from month to date)" in body
    assert [email.to for email in mail.outbox] == [["ops@example.com"]] * 2
    alert = Alert.objects.get(threshold=80)
    assert alert.status == Alert.Status.SENT
    assert alert.sns_message_id in {m["MessageId"] for m in messages}


def test_a_threshold_crossed_on_the_forecast_alerts_before_the_spend_does(cost_explorer, sns_queue):
    BudgetFactory(name="Forecast", amount=Decimal("100"), thresholds=thresholds_parse("100:forecast"))
    # 10 days of 4: 40 spent, linear month-end 120.
    cost_explorer.queue(page(month_days(NOV_1, date(2026, 11, 10), [("Amazon EC2", "", "4")])))

    run = run_on("2026-11-11")

    (alert,) = Alert.objects.all()
    assert (alert.kind, alert.threshold, alert.actual, alert.forecast) == ("forecast", 100, 40, 120)
    (message,) = sns_queue(at="2026-11-11 06:01")
    assert message["Subject"] == "Budget Forecast: forecast 120.0% of 100.00 USD (100% threshold)"
    assert run.alerts_sent == 1


def test_each_alert_is_sent_once_across_runs_and_days(cost_explorer, sns_queue):
    BudgetFactory(name="Account", amount=Decimal("100"))
    cost_explorer.queue(
        page(month_days(NOV_1, date(2026, 11, 20), [("Amazon EC2", "acme", "3")])),  # 60: 50%
        page(month_days(NOV_1, date(2026, 11, 21), [("Amazon EC2", "acme", "3")])),  # 63: still 50%
        page(month_days(NOV_1, date(2026, 11, 22), [("Amazon EC2", "acme", "4")])),  # 88: 80% too
    )

    assert run_on("2026-11-21").alerts_sent == 1
    assert run_on("2026-11-21").alerts_sent == 0  # the same day again
    assert run_on("2026-11-22").alerts_sent == 0
    assert run_on("2026-11-23").alerts_sent == 1

    subjects = [m["Subject"] for m in sns_queue(at="2026-11-23 06:01")]
    assert len(subjects) == 2
    assert sorted(Alert.objects.values_list("threshold", flat=True)) == [50, 80]


def test_an_alert_whose_delivery_failed_is_retried_and_then_sent_once(cost_explorer, settings, sns_queue):
    topic = settings.COSTWATCH_SNS_TOPIC_ARN
    BudgetFactory(
        name="Account", amount=Decimal("10"), thresholds=thresholds_parse("100", default_basis="actual")
    )
    cost_explorer.queue(page({date(2026, 11, 20): [("Amazon EC2", "", "12")]}))
    settings.COSTWATCH_SNS_TOPIC_ARN = topic.replace("costwatch-alerts", "no-such-topic")

    first = run_on("2026-11-21")
    alert = Alert.objects.get()
    assert (first.status, alert.status) == ("partial", Alert.Status.FAILED)
    assert "NotFound" in alert.error

    settings.COSTWATCH_SNS_TOPIC_ARN = topic
    second = run_on("2026-11-21")
    alert.refresh_from_db()
    assert (second.status, second.alerts_sent, alert.status) == ("succeeded", 1, Alert.Status.SENT)
    assert len(sns_queue(at="2026-11-21 06:01")) == 1


def test_acknowledging_an_unsent_alert_means_it_is_never_sent(cost_explorer, sns_queue, settings, admin_user):
    topic = settings.COSTWATCH_SNS_TOPIC_ARN
    BudgetFactory(
        name="Account", amount=Decimal("10"), thresholds=thresholds_parse("100", default_basis="actual")
    )
    cost_explorer.queue(page({date(2026, 11, 20): [("Amazon EC2", "", "12")]}))
    settings.COSTWATCH_SNS_TOPIC_ARN = topic.replace("costwatch-alerts", "no-such-topic")
    run_on("2026-11-21")
    alert = Alert.objects.get()

    assert alerts_acknowledge(alert_ids=[alert.pk], user=admin_user) == 1
    settings.COSTWATCH_SNS_TOPIC_ARN = topic
    run_on("2026-11-21")

    alert.refresh_from_db()
    assert alert.status == Alert.Status.SUPPRESSED
    assert alert.acknowledged_by == admin_user
    assert sns_queue(at="2026-11-21 06:01") == []


def test_a_snoozed_budget_records_alerts_without_sending_them(cost_explorer, sns_queue):
    budget = BudgetFactory(name="Account", amount=Decimal("100"))
    cost_explorer.queue(
        page(month_days(NOV_1, date(2026, 11, 20), [("Amazon EC2", "", "3")])),  # 60: 50%
        page(month_days(NOV_1, date(2026, 11, 28), [("Amazon EC2", "", "3")])),  # 84: 80%
    )
    with freeze_time("2026-11-21 05:00:00"):
        until = budgets_snooze(budget_ids=[budget.pk], days=7)
    assert until == datetime(2026, 11, 28, 5, 0, tzinfo=UTC)

    assert run_on("2026-11-21").alerts_sent == 0
    assert Alert.objects.get().status == Alert.Status.SUPPRESSED
    assert run_on("2026-11-29").alerts_sent == 1  # the snooze has ended: the new 80% alert goes out

    (message,) = sns_queue(at="2026-11-29 06:01")
    assert "(80% threshold)" in message["Subject"]


def test_a_day_over_three_times_its_trailing_mean_is_an_anomaly(cost_explorer, sns_queue):
    BudgetFactory(name="EC2", amount=Decimal("100000"), scope="service", service="Amazon EC2")
    quiet = month_days(
        date(2026, 11, 1), date(2026, 11, 19), [("Amazon EC2", "acme", "10"), ("Amazon S3", "", "50")]
    )
    spike = {date(2026, 11, 20): [("Amazon EC2", "acme", "31"), ("Amazon S3", "", "50")]}
    history = month_days(date(2026, 10, 28), date(2026, 10, 31), [("Amazon EC2", "acme", "10")])
    cost_explorer.queue(page(history), page({**quiet, **spike}))
    run_on("2026-11-01")  # the stored history that makes a baseline

    run_on("2026-11-21")

    (alert,) = Alert.objects.filter(kind=Alert.Kind.ANOMALY)
    assert (alert.day, alert.actual) == (date(2026, 11, 20), Decimal("31"))
    (message,) = sns_queue(at="2026-11-21 06:01")
    assert message["Subject"] == "Cost spike in budget EC2 on 2026-11-20: 31.00 USD"
    assert "Mean of the 7 days before: 10.00 USD" in message["Message"]


def test_no_anomaly_without_a_week_of_history(cost_explorer, sns_queue):
    BudgetFactory(name="EC2", amount=Decimal("100000"))
    cost_explorer.queue(
        page({date(2026, 11, 19): [("Amazon EC2", "", "1")], date(2026, 11, 20): [("Amazon EC2", "", "50")]})
    )

    run_on("2026-11-21")

    assert not Alert.objects.exists()
