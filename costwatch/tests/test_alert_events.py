"""A raised budget alert is an outgoing `budget.alert` webhook event, once per alert row, beside the
SNS/e-mail alert."""

from datetime import date
from decimal import Decimal

import pytest
from django.db import transaction
from freezegun import freeze_time

from costwatch.alerts import _raise
from costwatch.models import Alert
from costwatch.services import cost_check_run
from costwatch.tests.conftest import month_days, page
from costwatch.tests.factories import BudgetFactory, CostCheckRunFactory
from outbound.models import WebhookMessage
from tenants.tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

NOV_1 = date(2026, 11, 1)


def run_on(day: str):
    with freeze_time(f"{day} 06:00:00"):
        return cost_check_run(trigger="test")


def test_each_threshold_crossed_is_one_budget_alert_with_its_numbers(cost_explorer, sns_queue):
    tenant = TenantFactory(slug="acme", external_id="cus-acme")
    BudgetFactory(name="Acme", amount=Decimal("100"), scope="tag", tag_value="acme", tenant=tenant)
    # 20 days of 4.25: 85.00, past 50% and 80% of 100.
    cost_explorer.queue(
        page(month_days(NOV_1, date(2026, 11, 20), [("Amazon EC2", "acme", "4.25")])),
        page(month_days(NOV_1, date(2026, 11, 21), [("Amazon EC2", "acme", "4.25")])),
    )

    assert run_on("2026-11-21").alerts_sent == 2
    assert run_on("2026-11-22").alerts_sent == 0  # the same thresholds: no new alert, no new event

    messages = list(WebhookMessage.objects.filter(type="budget.alert").order_by("id"))
    assert len(messages) == 2
    alerts = {alert.pk: alert for alert in Alert.objects.all()}
    assert {m.key for m in messages} == {f"budget.alert:{pk}" for pk in alerts}
    data = next(
        m.payload["data"] for m in messages if m.payload["data"]["alert"]["threshold_percent"] == "80"
    )
    assert data["tenant"]["external_id"] == "cus-acme"
    assert data["budget"]["name"] == "Acme"
    assert (data["budget"]["amount"], data["budget"]["currency"]) == ("100", "USD")
    alert = data["alert"]
    assert (alert["kind"], alert["threshold_amount"], alert["actual"], alert["snoozed"]) == (
        "actual",
        "80",
        "85",
        False,
    )
    assert data["period"] == {
        "month": "2026-11",
        "start": "2026-11-01T00:00:00Z",
        "end": "2026-12-01T00:00:00Z",
    }
    assert messages[0].tenant_id == tenant.pk
    assert len(sns_queue(at="2026-11-22 06:01")) == 2  # SNS as before


def test_an_account_budget_alert_has_no_tenant(cost_explorer, sns_queue):
    BudgetFactory(name="Account", amount=Decimal("100"), thresholds=[{"percent": "50", "basis": "actual"}])
    cost_explorer.queue(page(month_days(NOV_1, date(2026, 11, 20), [("Amazon EC2", "", "3")])))
    run_on("2026-11-21")
    [message] = WebhookMessage.objects.filter(type="budget.alert")
    assert message.payload["data"]["tenant"] is None
    assert message.tenant_id is None


def test_an_alert_rolled_back_publishes_nothing():
    budget = BudgetFactory(name="Account", amount=Decimal("100"))
    run = CostCheckRunFactory(checked_date=NOV_1)

    @transaction.atomic
    def raise_then_fail():
        _raise(
            budget=budget,
            run=run,
            now=run.started_at,
            kind="actual",
            month=NOV_1,
            threshold=Decimal("50"),
            actual=Decimal("60"),
            forecast=Decimal("90"),
            subject="s",
            message="m",
        )
        raise RuntimeError("the run fails after raising it")

    with pytest.raises(RuntimeError):
        raise_then_fail()
    assert not Alert.objects.exists()
    assert not WebhookMessage.objects.exists()
