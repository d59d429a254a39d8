from datetime import date
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from freezegun import freeze_time

from costwatch.models import CostCheckRun, DailyCost
from costwatch.services import cost_check_run
from costwatch.tests.conftest import page

pytestmark = pytest.mark.django_db

NOV_20 = date(2026, 11, 20)


@freeze_time("2026-11-21 06:00:00")
def test_throttling_is_retried_with_backoff_and_every_request_counted(cost_explorer):
    cost_explorer.queue(page({NOV_20: [("Amazon EC2", "acme", "2")]}))
    # boto tries 3 times, then our backoff; the 5th request gets through.
    cost_explorer.proxy.fail_next("GetCostAndUsage", 4, code="ThrottlingException", message="Rate exceeded")

    run = cost_check_run(trigger="test")

    assert run.status == CostCheckRun.Status.SUCCEEDED, run.error
    assert DailyCost.objects.get().amount == Decimal("2")
    assert run.ce_requests == 5
    assert len(cost_explorer.usage_requests()) == 5


@freeze_time("2026-11-21 06:00:00")
def test_throttling_that_never_ends_fails_the_run_with_one_line(cost_explorer):
    cost_explorer.proxy.fail_next("GetCostAndUsage", 100, code="LimitExceededException", message="Too many")

    with pytest.raises(CommandError) as excinfo:
        call_command("check_costs")

    assert str(excinfo.value).startswith(
        "cost check failed: Cost Explorer GetCostAndUsage failed after 4 tries"
    )
    run = CostCheckRun.objects.get()
    assert (run.status, run.ce_requests) == (CostCheckRun.Status.FAILED, 12)


@freeze_time("2026-11-21 06:00:00")
def test_missing_credentials_give_one_clear_line_and_a_failed_run(cost_explorer, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    with pytest.raises(CommandError) as excinfo:
        call_command("check_costs", "--date", "2026-11-20")

    message = str(excinfo.value)
    assert message.startswith("cost check failed: AWS credentials not found: set AWS_ACCESS_KEY_ID")
    assert "\n" not in message
    assert "Traceback" not in message
    run = CostCheckRun.objects.get()
    assert run.status == CostCheckRun.Status.FAILED
    assert run.error.startswith("AWS credentials not found")
    assert run.ce_requests == 0


@freeze_time("2026-11-21 06:00:00")
def test_cost_explorer_not_enabled_gives_one_clear_line_and_a_failed_run(cost_explorer):
    cost_explorer.proxy.fail_next(
        "GetCostAndUsage",
        1,
        code="AccessDeniedException",
        message="User not enabled for cost explorer access",
    )

    with pytest.raises(CommandError) as excinfo:
        call_command("check_costs")

    assert str(excinfo.value) == (
        "cost check failed: Cost Explorer GetCostAndUsage refused "
        "(AccessDeniedException: User not enabled for cost explorer access); "
        "enable Cost Explorer for the account (Billing console) and allow "
        f"ce:GetCostAndUsage and ce:GetCostForecast (run {CostCheckRun.objects.get().pk})"
    )
    run = CostCheckRun.objects.get()
    assert (run.status, run.ce_requests) == (CostCheckRun.Status.FAILED, 1)


def test_a_bad_setting_is_named(cost_explorer, settings):
    settings.COSTWATCH_METRIC = "UsageQuantity"

    with pytest.raises(CommandError, match="COSTWATCH_METRIC must be one of UnblendedCost"):
        call_command("check_costs")

    assert CostCheckRun.objects.get().status == CostCheckRun.Status.FAILED
