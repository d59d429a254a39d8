"""Subscriptions, invoices, invoice items and checkout sessions."""

from __future__ import annotations

from decimal import Decimal

import pytest
import stripe


@pytest.fixture
def catalog(client):
    meter = client.v1.billing.meters.create(
        params={
            "display_name": "API calls",
            "event_name": "api_calls",
            "default_aggregation": {"formula": "sum"},
        }
    )
    product = client.v1.products.create(params={"name": "API"})
    metered = client.v1.prices.create(
        params={
            "currency": "usd",
            "product": product.id,
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [{"up_to": 100, "unit_amount": 0}, {"up_to": "inf", "unit_amount_decimal": "2.5"}],
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    base = client.v1.prices.create(
        params={
            "currency": "usd",
            "product": product.id,
            "unit_amount": 1000,
            "recurring": {"interval": "month"},
        }
    )
    return {"meter": meter, "product": product, "metered": metered, "base": base}


@pytest.fixture
def customer(client):
    return client.v1.customers.create(
        params={"email": "billing@tenant.example", "metadata": {"tenant_id": "7"}}
    )


def test_metered_subscription_starts_active_without_a_card(client, stripe_server, catalog, customer):
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": catalog["metered"].id}],
            "metadata": {"tenant_id": "7"},
        }
    )
    assert sub.object == "subscription"
    assert sub.status == "active"
    assert sub.customer == customer.id
    [item] = sub["items"].data
    assert item.object == "subscription_item"
    assert item.price.id == catalog["metered"].id
    assert item.price.recurring.meter == catalog["meter"].id
    assert "quantity" not in item  # metered items carry no quantity
    assert item.current_period_end > item.current_period_start
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.status == "paid"
    assert invoice.amount_due == 0
    assert invoice.billing_reason == "subscription_create"
    assert invoice.parent.subscription_details.subscription == sub.id

    items = client.v1.subscription_items.list(params={"subscription": sub.id})
    assert [i.id for i in items.data] == [item.id]
    assert client.v1.subscription_items.retrieve(item.id).subscription == sub.id
    assert [s.id for s in client.v1.subscriptions.list(params={"customer": customer.id}).data] == [sub.id]
    assert [
        s.id for s in client.v1.subscriptions.search(params={"query": "metadata['tenant_id']:'7'"}).data
    ] == [sub.id]
    assert "customer.subscription.created" in [e["type"] for e in stripe_server.events()]


def test_subscription_rules(client, catalog, customer):
    with pytest.raises(stripe.InvalidRequestError) as quantity:
        client.v1.subscriptions.create(
            params={"customer": customer.id, "items": [{"price": catalog["metered"].id, "quantity": 3}]}
        )
    assert quantity.value.param == "items[0][quantity]"
    with pytest.raises(stripe.InvalidRequestError) as twice:
        client.v1.subscriptions.create(
            params={
                "customer": customer.id,
                "items": [{"price": catalog["base"].id}, {"price": catalog["base"].id}],
            }
        )
    assert "same price" in twice.value.user_message
    with pytest.raises(stripe.InvalidRequestError) as nobody:
        client.v1.subscriptions.create(
            params={"customer": "cus_nope", "items": [{"price": catalog["base"].id}]}
        )
    assert nobody.value.param == "customer"
    with pytest.raises(stripe.InvalidRequestError) as strict:
        client.v1.subscriptions.create(
            params={
                "customer": customer.id,
                "items": [{"price": catalog["base"].id}],
                "payment_behavior": "error_if_incomplete",
            }
        )
    assert "no attached payment source" in strict.value.user_message


def test_licensed_subscription_is_incomplete_until_paid(client, stripe_server, catalog, customer):
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": catalog["base"].id, "quantity": 2}]}
    )
    assert sub.status == "incomplete"
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert (invoice.status, invoice.amount_due, invoice.total) == ("open", 2000, 2000)
    assert invoice.lines.data[0].pricing.price_details.price == catalog["base"].id
    assert invoice.lines.data[0].quantity == 2

    pm = stripe_server.create_payment_method(customer.id, card="visa", default=True)
    paid = client.v1.invoices.pay(invoice.id)
    assert paid.status == "paid"
    assert paid.amount_paid == 2000
    assert paid.amount_remaining == 0
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    payments = client.v1.invoices.retrieve(invoice.id, params={"expand": ["payments"]}).payments
    assert payments.data[0].status == "paid"
    assert payments.data[0]["payment_method"] == pm["id"]


def test_failed_renewal_payment_makes_the_subscription_past_due(client, stripe_server, catalog, customer):
    stripe_server.create_payment_method(customer.id, card="charge_fails", default=True)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": catalog["metered"].id}]}
    )
    assert sub.status == "active"  # the first invoice is $0
    now = stripe_server.now()
    for i, value in enumerate(["60", "70"]):
        client.v1.billing.meter_events.create(
            params={
                "event_name": "api_calls",
                "identifier": f"u{i}",
                "timestamp": now,
                "payload": {"stripe_customer_id": customer.id, "value": value},
            }
        )
    invoice = stripe_server.advance_subscription(sub.id)
    # 130 calls on a graduated price: 100 free, then 30 x 2.5 cents = 75 cents.
    assert invoice["billing_reason"] == "subscription_cycle"
    [line] = invoice["lines"]["data"]
    assert line["quantity"] == 130
    assert line["amount"] == 75
    assert invoice["status"] == "open"
    assert invoice["attempt_count"] == 1
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    assert stripe_server.events("invoice.payment_failed")[-1]["data"]["object"]["id"] == invoice["id"]
    with pytest.raises(stripe.CardError) as declined:
        client.v1.invoices.pay(invoice["id"])
    assert declined.value.code == "card_declined"

    good = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.invoices.pay(invoice["id"], params={"payment_method": good.id})
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    renewed = client.v1.subscriptions.retrieve(sub.id)["items"].data[0]
    assert renewed.current_period_start == line["period"]["end"]


def test_cancel_and_cancel_at_period_end(client, stripe_server, catalog, customer):
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": catalog["metered"].id}]}
    )
    updated = client.v1.subscriptions.update(
        sub.id, params={"cancel_at_period_end": True, "metadata": {"a": "b"}}
    )
    assert updated.cancel_at_period_end is True
    assert updated.cancel_at == updated["items"].data[0].current_period_end
    stripe_server.advance_subscription(sub.id)
    ended = client.v1.subscriptions.retrieve(sub.id)
    assert ended.status == "canceled"
    assert ended.cancellation_details.reason == "cancellation_requested"

    other = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": catalog["metered"].id}]}
    )
    canceled = client.v1.subscriptions.cancel(other.id)
    assert canceled.status == "canceled"
    assert canceled.canceled_at is not None
    assert client.v1.subscriptions.list(params={"customer": customer.id}).data == []
    assert len(client.v1.subscriptions.list(params={"customer": customer.id, "status": "all"}).data) == 2
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.update(other.id, params={"description": "too late"})
    deleted = stripe_server.events("customer.subscription.deleted")
    assert {e["data"]["object"]["id"] for e in deleted} == {sub.id, other.id}


def test_subscription_items_can_be_added_and_removed(client, catalog, customer):
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": catalog["metered"].id}]}
    )
    added = client.v1.subscription_items.create(
        params={"subscription": sub.id, "price": catalog["base"].id, "quantity": 1}
    )
    assert added.quantity == 1
    assert len(client.v1.subscriptions.retrieve(sub.id)["items"].data) == 2
    client.v1.subscription_items.delete(added.id)
    assert len(client.v1.subscription_items.list(params={"subscription": sub.id}).data) == 1


def test_invoice_items_and_a_manual_invoice(client, stripe_server, customer):
    stripe_server.create_payment_method(customer.id, default=True)
    item = client.v1.invoice_items.create(
        params={"customer": customer.id, "amount": 4250, "currency": "usd", "description": "AWS overage June"}
    )
    assert item.object == "invoiceitem"
    assert item.invoice is None
    assert [
        i.id for i in client.v1.invoice_items.list(params={"customer": customer.id, "pending": True}).data
    ] == [item.id]
    draft = client.v1.invoices.create(
        params={"customer": customer.id, "pending_invoice_items_behavior": "include", "auto_advance": True}
    )
    assert draft.status == "draft"
    assert draft.total == 4250
    assert draft.lines.data[0].parent.invoice_item_details.invoice_item == item.id
    assert client.v1.invoice_items.retrieve(item.id).invoice == draft.id
    extra = client.v1.invoice_items.create(
        params={"customer": customer.id, "invoice": draft.id, "amount": 750, "currency": "usd"}
    )
    assert client.v1.invoices.retrieve(draft.id).total == 5000
    client.v1.invoice_items.delete(extra.id)
    assert client.v1.invoices.retrieve(draft.id).total == 4250

    finalized = client.v1.invoices.finalize_invoice(draft.id)
    assert finalized.status == "open"
    assert finalized.number
    assert finalized.hosted_invoice_url.startswith("https://invoice.stripe.com/")
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoice_items.update(item.id, params={"amount": 1})
    assert stripe_server.run_invoice_automation() == [draft.id]
    assert client.v1.invoices.retrieve(draft.id).status == "paid"
    assert [e["type"] for e in stripe_server.events() if e["type"].startswith("invoice.")] == [
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]
    lines = client.v1.invoices.line_items.list(draft.id)
    assert lines.url == f"/v1/invoices/{draft.id}/lines"
    assert [
        i.id for i in client.v1.invoices.list(params={"customer": customer.id, "status": "paid"}).data
    ] == [draft.id]


def test_invoice_void_delete_and_no_payment_method(client, customer):
    draft = client.v1.invoices.create(params={"customer": customer.id})
    client.v1.invoice_items.create(
        params={"customer": customer.id, "invoice": draft.id, "amount": 100, "currency": "usd"}
    )
    with pytest.raises(stripe.InvalidRequestError) as no_card:
        client.v1.invoices.pay(draft.id)
    assert "no attached payment source" in no_card.value.user_message
    voided = client.v1.invoices.void_invoice(draft.id)
    assert voided.status == "void"
    other = client.v1.invoices.create(params={"customer": customer.id})
    assert client.v1.invoices.delete(other.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError) as send_invoice:
        client.v1.invoices.create(params={"customer": customer.id, "collection_method": "send_invoice"})
    assert send_invoice.value.param == "days_until_due"


def test_invoice_item_from_a_one_time_price(client, customer):
    product = client.v1.products.create(params={"name": "Setup fee"})
    price = client.v1.prices.create(params={"currency": "usd", "product": product.id, "unit_amount": 300})
    item = client.v1.invoice_items.create(
        params={"customer": customer.id, "pricing": {"price": price.id}, "quantity": 3}
    )
    assert item.amount == 900
    assert item.pricing.price_details.price == price.id
    assert item.description == "Setup fee"


def test_checkout_session_setup_mode(client, stripe_server, customer):
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "setup",
            "currency": "usd",
            "customer": customer.id,
            "success_url": "https://app.example/billing/done?session={CHECKOUT_SESSION_ID}",
            "cancel_url": "https://app.example/billing",
            "metadata": {"tenant_id": "7"},
        }
    )
    assert session.object == "checkout.session"
    assert session.url == f"https://checkout.stripe.com/c/pay/{session.id}"
    assert session.status == "open"
    assert session.payment_status == "no_payment_required"
    assert session.setup_intent.startswith("seti_")
    with pytest.raises(stripe.InvalidRequestError) as no_currency:
        client.v1.checkout.sessions.create(params={"mode": "setup", "success_url": "https://app.example/x"})
    assert no_currency.value.param == "currency"

    completed = stripe_server.complete_checkout_session(session.id, card="visa")
    assert completed["status"] == "complete"
    seti = client.v1.setup_intents.retrieve(session.setup_intent)
    assert seti.status == "succeeded"
    assert client.v1.payment_methods.retrieve(seti.payment_method).customer == customer.id
    types = [e["type"] for e in stripe_server.events()]
    assert {"payment_method.attached", "setup_intent.succeeded", "checkout.session.completed"} <= set(types)
    assert client.v1.checkout.sessions.retrieve(session.id).status == "complete"


def test_checkout_session_subscription_mode(client, stripe_server, catalog, customer):
    with pytest.raises(stripe.InvalidRequestError) as metered_quantity:
        client.v1.checkout.sessions.create(
            params={
                "mode": "subscription",
                "customer": customer.id,
                "success_url": "https://app.example/ok",
                "line_items": [{"price": catalog["metered"].id, "quantity": 1}],
            }
        )
    assert "Quantity should not be specified" in metered_quantity.value.user_message
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "customer": customer.id,
            "success_url": "https://app.example/ok",
            "cancel_url": "https://app.example/no",
            "line_items": [{"price": catalog["metered"].id}],
            "subscription_data": {"metadata": {"tenant_id": "7"}},
        }
    )
    items = client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["line_items"]}).line_items
    assert items.data[0].price.id == catalog["metered"].id
    done = stripe_server.complete_checkout_session(session.id)
    sub = client.v1.subscriptions.retrieve(done["subscription"])
    assert sub.status == "active"
    assert sub.metadata["tenant_id"] == "7"
    assert client.v1.payment_methods.retrieve(sub.default_payment_method).customer == customer.id
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.expire(session.id)
    other = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "customer": customer.id,
            "success_url": "https://app.example/ok",
            "line_items": [{"price": catalog["metered"].id}],
        }
    )
    assert client.v1.checkout.sessions.expire(other.id).status == "expired"


def test_usage_on_the_renewal_invoice_matches_meter_totals(client, stripe_server, catalog, customer):
    per_unit = client.v1.prices.create(
        params={
            "currency": "usd",
            "product": catalog["product"].id,
            "unit_amount_decimal": "0.5",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": catalog["meter"].id},
        }
    )
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": per_unit.id}]})
    start = sub["items"].data[0].current_period_start
    client.v1.billing.meter_events.create(
        params={
            "event_name": "api_calls",
            "identifier": "a",
            "timestamp": start,
            "payload": {"stripe_customer_id": customer.id, "value": "7"},
        }
    )
    client.v1.billing.meter_events.create(
        params={
            "event_name": "api_calls",
            "identifier": "b",
            "timestamp": start + 10,
            "payload": {"stripe_customer_id": customer.id, "value": "8"},
        }
    )
    invoice = stripe_server.advance_subscription(sub.id)
    assert stripe_server.usage(customer.id, "api_calls") == Decimal(15)
    assert invoice["lines"]["data"][0]["quantity"] == 15
    assert invoice["amount_due"] == 8  # 7.5 cents, rounded half up
    assert invoice["status"] == "open"  # no payment method: collection is attempted later


def test_calls_dj_stripe_makes(module_stripe, client, catalog, customer):
    """The module-level calls and `expand` lists dj-stripe 2.11 sends when it mirrors objects."""
    version = "2026-05-27.dahlia"
    account = module_stripe.Account.retrieve(stripe_version=version)
    assert account.object == "account"
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": catalog["metered"].id}]}
    )
    retrieved = module_stripe.Customer.retrieve(
        customer.id, expand=["default_source", "sources"], stripe_version=version
    )
    assert retrieved.sources.object == "list"
    listed = module_stripe.Price.list(
        expand=["data.currency_options", "data.product", "data.tiers"], stripe_version=version
    )
    metered = next(p for p in listed.data if p.id == catalog["metered"].id)
    assert metered.product.id == catalog["product"].id
    assert len(metered.tiers) == 2
    assert "usd" in metered.currency_options
    invoice = module_stripe.Invoice.retrieve(
        sub.latest_invoice, expand=["discounts", "lines.data.discounts"], stripe_version=version
    )
    assert invoice.lines.object == "list"
    assert [
        s.id for s in module_stripe.Subscription.list(customer=customer.id, status="all").auto_paging_iter()
    ] == [sub.id]
    items = module_stripe.SubscriptionItem.list(subscription=sub.id)
    assert items.data[0].price.id == catalog["metered"].id
    assert module_stripe.Product.list_features(catalog["product"].id).data == []
    assert module_stripe.Customer.list_sources(customer.id, object="card").data == []
    assert module_stripe.billing.Meter.retrieve(catalog["meter"].id).event_name == "api_calls"
