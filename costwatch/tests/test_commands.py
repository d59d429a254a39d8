from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from conftest import beat_task
from costwatch.models import Budget
from tenants.tests.support import run_command

pytestmark = pytest.mark.django_db


def test_create_budget_with_the_defaults():
    (line,) = run_command("create_budget", "--name", "AWS", "--amount", "1500")

    budget = Budget.objects.get(name="AWS")
    assert line == f"budget {budget.pk}: AWS, 1500.00 USD a month, whole account, thresholds 50,80,100"
    assert budget.thresholds == [
        {"percent": "50", "basis": "both"},
        {"percent": "80", "basis": "both"},
        {"percent": "100", "basis": "both"},
    ]


def test_create_budget_for_a_tenant_with_pass_through(acme):
    (line,) = run_command(
        "create_budget",
        "--name",
        "Acme",
        "--amount",
        "200",
        "--tenant",
        "acme",
        "--thresholds",
        "80:forecast,100",
        "--basis",
        "actual",
        "--pass-through",
        "--markup",
        "12.5",
        "--emails",
        "a@example.com, b@example.com",
        "--sns-topic",
        "arn:aws:sns:eu-west-1:123456789012:costs",
    )

    budget = Budget.objects.get(name="Acme")
    assert (budget.scope, budget.tag_value, budget.tenant, budget.markup_percent) == (
        "tag",
        "acme",
        acme,
        Decimal("12.5"),
    )
    assert budget.thresholds_label == "80:forecast,100:actual"
    assert budget.emails == ["a@example.com", "b@example.com"]
    assert line.endswith("tenant=acme, thresholds 80:forecast,100:actual, pass-through to acme (+12.5%)")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--amount", "abc"], "argument --amount: must be a decimal number"),
        (["--amount", "0"], "amount: "),
        (["--amount", "10", "--thresholds", "50,x"], "thresholds: 'x' is not a percentage"),
        (["--amount", "10", "--pass-through"], "pass_through: Pass-through needs a tenant"),
        (["--amount", "10", "--markup", "5"], "--markup applies only to a pass-through budget"),
        (["--amount", "10", "--tenant", "nobody"], "no tenant with slug, external id or id 'nobody'"),
        (["--amount", "10", "--emails", "not-an-address"], "Enter a valid email address."),
    ],
)
def test_create_budget_refuses_bad_arguments_in_one_line(args, message):
    with pytest.raises(CommandError) as excinfo:
        call_command("create_budget", "--name", "X", *args)

    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)
    assert not Budget.objects.exists()


def test_a_budget_name_is_unique():
    run_command("create_budget", "--name", "AWS", "--amount", "10")

    with pytest.raises(CommandError, match="a budget named 'AWS' already exists"):
        call_command("create_budget", "--name", "AWS", "--amount", "20")


def test_check_costs_refuses_a_bad_date():
    message = "argument --date: must be a date such as 2026-11-20, got 'yesterday'"
    with pytest.raises(CommandError, match=message):
        call_command("check_costs", "--date", "yesterday")


def test_the_daily_check_is_scheduled_at_six_utc():
    task = beat_task("costwatch.check_costs")

    assert task.enabled
    assert (task.crontab.minute, task.crontab.hour, str(task.crontab.timezone)) == ("0", "6", "UTC")
