from datetime import date
from decimal import Decimal

import pytest
from freezegun import freeze_time

from costwatch.models import Alert, Budget, CostCheckRun
from costwatch.services import cost_check_run
from costwatch.tasks import check_costs
from costwatch.tests.conftest import page
from costwatch.tests.factories import BudgetFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("model", ["budget", "dailycost", "costcheckrun", "alert", "passthroughcharge"])
def test_every_list_page_answers(admin_client, model):
    assert admin_client.get(f"/admin/costwatch/{model}/").status_code == 200


def test_a_budget_is_created_in_admin_with_thresholds_as_text(admin_client):
    response = admin_client.post(
        "/admin/costwatch/budget/add/",
        {
            "name": "Account",
            "active": "on",
            "amount": "250",
            "currency": "usd",
            "thresholds": "90:forecast, 50",
            "scope": "account",
            "markup_percent": "0",
            "emails": "",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    budget = Budget.objects.get()
    assert budget.currency == "USD"
    assert budget.thresholds == [{"percent": "50", "basis": "both"}, {"percent": "90", "basis": "forecast"}]


def test_alerts_are_acknowledged_and_snoozed_from_admin(admin_client, admin_user, cost_explorer):
    budget = BudgetFactory(name="Account", amount=Decimal("10"))
    cost_explorer.queue(page({date(2026, 11, 20): [("Amazon EC2", "", "12")]}))
    with freeze_time("2026-11-21 06:00:00"):
        cost_check_run(trigger="test")
    ids = [str(pk) for pk in Alert.objects.values_list("pk", flat=True)]

    admin_client.post("/admin/costwatch/alert/", {"action": "acknowledge", "_selected_action": ids})
    admin_client.post("/admin/costwatch/alert/", {"action": "snooze", "_selected_action": ids[:1]})

    assert set(Alert.objects.values_list("acknowledged_by", flat=True)) == {admin_user.pk}
    budget.refresh_from_db()
    assert budget.snoozed_until is not None
    run = CostCheckRun.objects.get()
    page_html = admin_client.get(f"/admin/costwatch/costcheckrun/{run.pk}/change/").content.decode()
    assert "Cost Explorer requests: 1" in page_html


@freeze_time("2026-11-21 06:00:00")
def test_the_task_runs_the_check_of_yesterday(cost_explorer):
    cost_explorer.queue(page({date(2026, 11, 20): [("Amazon EC2", "", "2")]}))

    result = check_costs.apply().get()

    assert result["status"] == "succeeded"
    assert result["date"] == "2026-11-20"
    assert result["ce_requests"] == 1
    assert CostCheckRun.objects.get().trigger == "beat"
