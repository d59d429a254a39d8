from datetime import date
from decimal import Decimal

import pytest
from freezegun import freeze_time

from costwatch.budgets import budget_create
from costwatch.models import CostCheckRun, PassThroughCharge
from costwatch.passthrough import settled_month
from costwatch.services import cost_check_run
from costwatch.tests.conftest import month_days, page, stripe_customer_for
from stripe_sync.client import stripe_client

pytestmark = pytest.mark.django_db

NOV_1, NOV_30 = date(2026, 11, 1), date(2026, 11, 30)


def run_on(day: str):
    with freeze_time(f"{day} 06:00:00"):
        return cost_check_run(trigger="test")


@pytest.fixture
def acme_budget(acme):
    return budget_create(
        name="Acme pass-through",
        amount=Decimal("100"),
        currency="USD",
        thresholds="100",
        basis="actual",
        tenant=acme,
        pass_through=True,
        markup_percent=Decimal("10"),
    )


@pytest.fixture
def november_over_budget(cost_explorer):
    # November: 30 days of 5.00 for acme (150.00), and the restated last day read again in December.
    cost_explorer.queue(
        page(month_days(NOV_1, NOV_30, [("Amazon EC2", "acme", "5"), ("Amazon EC2", "", "1")])),
        page({NOV_30: [("Amazon EC2", "acme", "5")], date(2026, 12, 1): [("Amazon EC2", "acme", "1")]}),
    )


def test_a_month_settles_once_aws_can_no_longer_restate_it():
    assert settled_month(day=date(2026, 12, 2), restatement_days=3) == date(2026, 10, 1)
    assert settled_month(day=date(2026, 12, 3), restatement_days=3) == NOV_1
    assert settled_month(day=date(2026, 12, 31), restatement_days=3) == NOV_1
    assert settled_month(day=date(2026, 12, 31), restatement_days=0) == date(2026, 12, 1)


def test_the_overage_is_billed_once_as_an_invoice_item(local_stripe, acme, acme_budget, november_over_budget):
    customer = stripe_client().v1.customers.create(params={"name": "Acme"})
    stripe_customer_for(acme, customer.id)

    run_on("2026-12-01")  # checks November 30: the month is not settled yet
    assert not PassThroughCharge.objects.exists()
    run = run_on("2026-12-04")  # checks December 3: November is settled
    run_on("2026-12-05")
    run_on("2026-12-05")

    charge = PassThroughCharge.objects.get()
    assert (charge.status, charge.spend, charge.overage, charge.amount_minor) == (
        PassThroughCharge.Status.BILLED,
        Decimal("150"),
        Decimal("50"),
        5500,
    )
    (item,) = local_stripe.objects("invoiceitem")
    assert (item["id"], item["customer"], item["amount"], item["currency"]) == (
        charge.stripe_invoice_item_id,
        customer.id,
        5500,
        "usd",
    )
    assert item["metadata"]["costwatch_key"] == f"costwatch-pass-through-{acme_budget.pk}-2026-11"
    (request,) = local_stripe.requests_to("/v1/invoiceitems", method="POST")
    assert request.idempotency_key == f"costwatch-pass-through-{acme_budget.pk}-2026-11"
    assert f"pass-through Acme pass-through 2026-11: Billed {item['id']}" in run.summary


def test_a_lost_answer_is_retried_with_the_same_idempotency_key(
    local_stripe, acme, acme_budget, november_over_budget
):
    customer = stripe_client().v1.customers.create(params={"name": "Acme"})
    stripe_customer_for(acme, customer.id)
    run_on("2026-12-01")
    local_stripe.fail_next(1, status=500, path="/v1/invoiceitems", method="POST", when="after")

    run_on("2026-12-04")

    (item,) = local_stripe.objects("invoiceitem")
    first, retry = local_stripe.requests_to("/v1/invoiceitems", method="POST")
    assert (first.status, retry.status, retry.replayed) == (500, 200, True)
    assert first.idempotency_key == retry.idempotency_key
    assert PassThroughCharge.objects.get().stripe_invoice_item_id == item["id"]


def test_a_crash_after_stripe_billed_does_not_bill_twice(
    local_stripe, acme, acme_budget, november_over_budget
):
    customer = stripe_client().v1.customers.create(params={"name": "Acme"})
    stripe_customer_for(acme, customer.id)
    run_on("2026-12-01")
    # Stripe creates the item and the answer is lost, with no retry in the same run.
    local_stripe.fail_next(
        1,
        status=500,
        path="/v1/invoiceitems",
        method="POST",
        when="after",
        headers={"Stripe-Should-Retry": "false"},
    )

    failed = run_on("2026-12-04")
    assert failed.status == CostCheckRun.Status.PARTIAL
    assert PassThroughCharge.objects.get().status == PassThroughCharge.Status.PENDING

    run_on("2026-12-05")  # the next run finds the item at Stripe by its key and does not create another

    charge = PassThroughCharge.objects.get()
    (item,) = local_stripe.objects("invoiceitem")
    assert (charge.status, charge.stripe_invoice_item_id, charge.attempts) == ("billed", item["id"], 2)
    assert len(local_stripe.requests_to("/v1/invoiceitems", method="POST")) == 1


def test_a_tenant_without_a_stripe_customer_is_recorded_as_not_billable(
    local_stripe, acme_budget, november_over_budget
):
    run_on("2026-12-01")
    run = run_on("2026-12-04")

    charge = PassThroughCharge.objects.get()
    assert charge.status == PassThroughCharge.Status.NOT_BILLABLE
    assert charge.reason == "tenant acme has no Stripe customer: nothing was billed"
    assert run.status == CostCheckRun.Status.SUCCEEDED
    assert local_stripe.objects("invoiceitem") == []


def test_spend_within_the_budget_bills_nothing(local_stripe, acme, acme_budget, cost_explorer):
    cost_explorer.queue(page(month_days(NOV_1, NOV_30, [("Amazon EC2", "acme", "3")])))  # 90 of 100
    run_on("2026-12-04")

    assert not PassThroughCharge.objects.exists()
