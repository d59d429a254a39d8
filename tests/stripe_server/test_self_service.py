"""Customer Portal sessions, billing credit grants and balances, invoice previews, promotion codes."""

from __future__ import annotations

import urllib.error
import urllib.request
from decimal import Decimal

import pytest
import stripe

METERED_SCOPE = {"scope": {"price_type": "metered"}}
METERED_FILTER = {"type": "applicability_scope", "applicability_scope": {"price_type": "metered"}}


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
            "unit_amount": 2,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    tiered = client.v1.prices.create(
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
    return {"meter": meter, "product": product, "metered": metered, "tiered": tiered, "base": base}


@pytest.fixture
def customer(client):
    return client.v1.customers.create(params={"email": "billing@tenant.example", "name": "Tenant 7"})


def _usage(client, customer_id: str, value: int | str, timestamp: int, identifier: str) -> None:
    client.v1.billing.meter_events.create(
        params={
            "event_name": "api_calls",
            "identifier": identifier,
            "timestamp": timestamp,
            "payload": {"stripe_customer_id": customer_id, "value": str(value)},
        }
    )


def _grant(client, customer_id: str, value: int, **extra):
    return client.v1.billing.credit_grants.create(
        params={
            "customer": customer_id,
            "amount": {"type": "monetary", "monetary": {"currency": "usd", "value": value}},
            "applicability_config": METERED_SCOPE,
            **extra,
        }
    )


def _balance(client, customer_id: str, flt=None) -> list[tuple[str, int, int]]:
    summary = client.v1.billing.credit_balance_summary.retrieve(
        params={"customer": customer_id, "filter": flt or METERED_FILTER}
    )
    assert summary.object == "billing.credit_balance_summary"
    assert summary.customer == customer_id
    return [
        (
            b.available_balance.monetary.currency,
            b.available_balance.monetary.value,
            b.ledger_balance.monetary.value,
        )
        for b in summary.balances
    ]


# Customer Portal -----------------------------------------------------------------------------------


def test_portal_session_for_a_customer(client, stripe_server, customer):
    session = client.v1.billing_portal.sessions.create(
        params={"customer": customer.id, "return_url": "https://app.example/billing"}
    )
    assert session.object == "billing_portal.session"
    assert session.id.startswith("bps_")
    assert session.customer == customer.id
    assert session.return_url == "https://app.example/billing"
    assert session.livemode is False
    assert (session.flow, session.locale, session.on_behalf_of) == (None, None, None)
    assert session.url.startswith(f"{stripe_server.url}/p/session/test_")
    # No configuration given: the account's default one, made on first use and reused.
    config = client.v1.billing_portal.configurations.retrieve(session.configuration)
    assert config.object == "billing_portal.configuration"
    assert config.is_default is True
    again = client.v1.billing_portal.sessions.create(
        params={"customer": customer.id, "return_url": "https://app.example/billing"}
    )
    assert again.configuration == config.id
    assert again.url != session.url
    assert [e["data"]["object"]["id"] for e in stripe_server.events("billing_portal.session.created")] == [
        session.id,
        again.id,
    ]
    with urllib.request.urlopen(session.url) as page:  # noqa: S310 - the local server
        assert page.headers["Content-Type"].startswith("text/html")
        text = page.read().decode()
    assert "billing@tenant.example" in text
    assert 'href="https://app.example/billing"' in text
    with pytest.raises(urllib.error.HTTPError) as unknown:
        urllib.request.urlopen(f"{stripe_server.url}/p/session/test_nope")  # noqa: S310
    assert unknown.value.code == 404


def test_portal_session_with_a_configuration_and_errors(client, customer):
    config = client.v1.billing_portal.configurations.create(
        params={
            "features": {"invoice_history": {"enabled": True}},
            "default_return_url": "https://app.example/home",
        }
    )
    assert config.id.startswith("bpc_")
    assert config.is_default is False
    assert config.features.invoice_history.enabled is True
    assert config.features.subscription_cancel.enabled is False
    session = client.v1.billing_portal.sessions.create(
        params={"customer": customer.id, "configuration": config.id, "locale": "fr"}
    )
    assert session.configuration == config.id
    assert session.return_url == "https://app.example/home"  # the configuration's default
    assert session.locale == "fr"
    expanded = client.v1.billing_portal.sessions.create(
        params={"customer": customer.id, "configuration": config.id, "expand": ["configuration"]}
    )
    assert expanded.configuration.id == config.id

    with pytest.raises(stripe.InvalidRequestError) as nobody:
        client.v1.billing_portal.sessions.create(
            params={"customer": "cus_nope", "return_url": "https://a.example"}
        )
    assert (nobody.value.http_status, nobody.value.code, nobody.value.param) == (
        400,
        "resource_missing",
        "customer",
    )
    with pytest.raises(stripe.InvalidRequestError) as no_customer:
        client.v1.billing_portal.sessions.create(params={"return_url": "https://a.example"})
    assert (no_customer.value.code, no_customer.value.param) == ("parameter_missing", "customer")
    with pytest.raises(stripe.InvalidRequestError) as no_config:
        client.v1.billing_portal.sessions.create(
            params={"customer": customer.id, "configuration": "bpc_nope", "return_url": "https://a.example"}
        )
    assert (no_config.value.code, no_config.value.param) == ("resource_missing", "configuration")
    with pytest.raises(stripe.InvalidRequestError) as no_return:
        client.v1.billing_portal.sessions.create(params={"customer": customer.id})
    assert no_return.value.param == "return_url"
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.billing_portal.sessions.create(
            params={"customer": customer.id, "return_url": "https://a.example", "colour": "red"}
        )
    assert unknown.value.code == "parameter_unknown"

    client.v1.billing_portal.configurations.update(config.id, params={"active": False})
    with pytest.raises(stripe.InvalidRequestError) as inactive:
        client.v1.billing_portal.sessions.create(params={"customer": customer.id, "configuration": config.id})
    assert inactive.value.param == "configuration"
    listed = client.v1.billing_portal.configurations.list(params={"active": False})
    assert [c.id for c in listed.data] == [config.id]


def test_portal_flow_names_a_subscription_of_the_customer(client, catalog, customer):
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": catalog["metered"].id}]}
    )
    session = client.v1.billing_portal.sessions.create(
        params={
            "customer": customer.id,
            "return_url": "https://app.example/billing",
            "flow_data": {"type": "subscription_cancel", "subscription_cancel": {"subscription": sub.id}},
        }
    )
    assert session.flow.type == "subscription_cancel"
    assert session.flow.subscription_cancel.subscription == sub.id
    other = client.v1.customers.create(params={"email": "other@tenant.example"})
    with pytest.raises(stripe.InvalidRequestError) as foreign:
        client.v1.billing_portal.sessions.create(
            params={
                "customer": other.id,
                "return_url": "https://app.example/billing",
                "flow_data": {"type": "subscription_cancel", "subscription_cancel": {"subscription": sub.id}},
            }
        )
    assert foreign.value.param == "flow_data[subscription_cancel][subscription]"


# Credit grants -------------------------------------------------------------------------------------


def test_credit_grant_shape_retrieve_and_list(client, stripe_server, customer):
    grant = _grant(
        client, customer.id, 5000, name="Prepaid June", category="promotional", metadata={"a": "b"}
    )
    assert grant.object == "billing.credit_grant"
    assert grant.id.startswith("credgr_test_")
    assert grant.customer == customer.id
    assert grant.amount.type == "monetary"
    assert (grant.amount.monetary.currency, grant.amount.monetary.value) == ("usd", 5000)
    assert grant.applicability_config.scope.price_type == "metered"
    assert (grant.category, grant.name, grant.priority) == ("promotional", "Prepaid June", 50)
    assert grant.effective_at == grant.created  # effective at once by default
    assert (grant.expires_at, grant.voided_at, grant.livemode) == (None, None, False)
    assert grant.metadata.to_dict() == {"a": "b"}
    assert client.v1.billing.credit_grants.retrieve(grant.id).id == grant.id
    assert client.v1.billing.credit_grants.retrieve(
        grant.id, params={"expand": ["customer"]}
    ).customer.id == (customer.id)
    assert "billing.credit_grant.created" in [e["type"] for e in stripe_server.events()]
    assert _grant(client, customer.id, 10).category == "paid"  # the default

    other = client.v1.customers.create(params={"email": "other@tenant.example"})
    _grant(client, other.id, 700)
    stripe_server.advance_time(5)
    third = _grant(client, customer.id, 300)
    mine = client.v1.billing.credit_grants.list(params={"customer": customer.id, "limit": 2})
    assert mine.data[0].id == third.id  # newest first
    assert mine.has_more is True
    rest = client.v1.billing.credit_grants.list(
        params={"customer": customer.id, "starting_after": mine.data[-1].id}
    )
    assert len(mine.data) + len(rest.data) == 3
    assert rest.has_more is False
    assert len(client.v1.billing.credit_grants.list().data) == 4
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.billing.credit_grants.retrieve("credgr_test_nope")
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"customer": "cus_nope"}, "customer", "resource_missing"),
        ({"customer": None}, "customer", "parameter_missing"),
        (
            {"amount": {"type": "monetary", "monetary": {"currency": "usd", "value": 0}}},
            "amount[monetary][value]",
            None,
        ),
        (
            {"amount": {"type": "monetary", "monetary": {"currency": "usd", "value": -5}}},
            "amount[monetary][value]",
            None,
        ),
        (
            {"amount": {"type": "monetary", "monetary": {"currency": "usd", "value": "1.5"}}},
            "amount[monetary][value]",
            None,
        ),
        (
            {"amount": {"type": "monetary", "monetary": {"currency": "zzz", "value": 5}}},
            "amount[monetary][currency]",
            None,
        ),
        ({"amount": {"type": "monetary"}}, "amount[monetary]", "parameter_missing"),
        ({"applicability_config": None}, "applicability_config", "parameter_missing"),
        ({"category": "free"}, "category", None),
        ({"priority": 101}, "priority", None),
        ({"expires_at": 1}, "expires_at", None),
    ],
)
def test_credit_grant_errors(client, customer, params, param, code):
    body = {
        "customer": customer.id,
        "amount": {"type": "monetary", "monetary": {"currency": "usd", "value": 100}},
        "applicability_config": METERED_SCOPE,
        **params,
    }
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.billing.credit_grants.create(params=body)
    assert refused.value.http_status == 400
    assert refused.value.param == param
    if code:
        assert refused.value.code == code
    assert client.v1.billing.credit_grants.list().data == []


def test_a_retried_grant_with_the_same_idempotency_key_grants_once(client, stripe_server, customer):
    stripe_server.fail_next(1, status=500, path="/v1/billing/credit_grants", method="POST", when="after")
    body = {
        "customer": customer.id,
        "amount": {"type": "monetary", "monetary": {"currency": "usd", "value": 2500}},
        "applicability_config": METERED_SCOPE,
        "name": "Operator grant 41",
    }
    with pytest.raises(stripe.APIError):
        client.v1.billing.credit_grants.create(params=body, options={"idempotency_key": "credit-grant-41"})
    retried = client.v1.billing.credit_grants.create(
        params=body, options={"idempotency_key": "credit-grant-41"}
    )
    assert stripe_server.requests_to("/v1/billing/credit_grants", method="POST")[-1].replayed is True
    assert [g.id for g in client.v1.billing.credit_grants.list(params={"customer": customer.id}).data] == [
        retried.id
    ]
    assert _balance(client, customer.id) == [("usd", 2500, 2500)]


def test_credit_grant_for_listed_prices_must_name_metered_prices(client, catalog, customer):
    body = {
        "customer": customer.id,
        "amount": {"type": "monetary", "monetary": {"currency": "usd", "value": 100}},
    }
    grant = client.v1.billing.credit_grants.create(
        params={**body, "applicability_config": {"scope": {"prices": [{"id": catalog["metered"].id}]}}}
    )
    assert [p.id for p in grant.applicability_config.scope.prices] == [catalog["metered"].id]
    with pytest.raises(stripe.InvalidRequestError) as licensed:
        client.v1.billing.credit_grants.create(
            params={**body, "applicability_config": {"scope": {"prices": [{"id": catalog["base"].id}]}}}
        )
    assert licensed.value.param == "applicability_config[scope][prices][0][id]"
    by_price = {
        "type": "applicability_scope",
        "applicability_scope": {"prices": [{"id": catalog["metered"].id}]},
    }
    assert _balance(client, customer.id, by_price) == [("usd", 100, 100)]
    assert _balance(client, customer.id) == []  # not a price_type=metered grant


def test_balance_after_grants_void_expiry_and_future_grants(client, stripe_server, customer):
    assert _balance(client, customer.id) == []
    now = stripe_server.now()
    first = _grant(client, customer.id, 5000)
    short = _grant(client, customer.id, 1200, expires_at=now + 3600)
    _grant(client, customer.id, 800, effective_at=now + 7200)  # not effective yet
    assert _balance(client, customer.id) == [("usd", 6200, 6200)]
    only_first = {"type": "credit_grant", "credit_grant": first.id}
    assert _balance(client, customer.id, only_first) == [("usd", 5000, 5000)]

    voided = client.v1.billing.credit_grants.void_grant(first.id)
    assert first.created <= voided.voided_at <= stripe_server.now()
    assert _balance(client, customer.id) == [("usd", 1200, 1200)]
    assert _balance(client, customer.id, only_first) == [("usd", 0, 0)]
    with pytest.raises(stripe.InvalidRequestError) as twice:
        client.v1.billing.credit_grants.void_grant(first.id)
    assert "already been voided" in twice.value.user_message

    stripe_server.advance_time(3600)  # the short grant expires, the future one is not effective yet
    assert _balance(client, customer.id) == [("usd", 0, 0)]
    stripe_server.advance_time(3600)
    assert _balance(client, customer.id) == [("usd", 800, 800)]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.credit_grants.expire(short.id)

    types = [
        (t.type, (t.credit or t.debit).type, (t.credit or t.debit).amount.monetary.value)
        for t in client.v1.billing.credit_balance_transactions.list(params={"customer": customer.id}).data
    ]
    assert sorted(types) == sorted(
        [
            ("credit", "credits_granted", 5000),
            ("credit", "credits_granted", 1200),
            ("credit", "credits_granted", 800),
            ("debit", "credits_voided", 5000),
            ("debit", "credits_expired", 1200),
        ]
    )


def test_expire_now_and_update(client, stripe_server, customer):
    grant = _grant(client, customer.id, 900, expires_at=stripe_server.now() + 86400)
    updated = client.v1.billing.credit_grants.update(
        grant.id, params={"expires_at": "", "metadata": {"k": "v"}}
    )
    assert (updated.expires_at, updated.metadata.to_dict()) == (None, {"k": "v"})
    expired = client.v1.billing.credit_grants.expire(grant.id)
    assert grant.created <= expired.expires_at <= stripe_server.now()
    assert expired.voided_at is None
    assert _balance(client, customer.id) == [("usd", 0, 0)]
    with pytest.raises(stripe.InvalidRequestError) as again:
        client.v1.billing.credit_grants.expire(grant.id)
    assert "already expired" in again.value.user_message
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.credit_grants.void_grant(grant.id)


def test_balance_summary_errors(client, customer):
    with pytest.raises(stripe.InvalidRequestError) as no_filter:
        client.v1.billing.credit_balance_summary.retrieve(params={"customer": customer.id})
    assert (no_filter.value.code, no_filter.value.param) == ("parameter_missing", "filter")
    with pytest.raises(stripe.InvalidRequestError) as nobody:
        client.v1.billing.credit_balance_summary.retrieve(
            params={"customer": "cus_nope", "filter": METERED_FILTER}
        )
    assert (nobody.value.code, nobody.value.param) == ("resource_missing", "customer")
    with pytest.raises(stripe.InvalidRequestError) as no_grant:
        client.v1.billing.credit_balance_summary.retrieve(
            params={
                "customer": customer.id,
                "filter": {"type": "credit_grant", "credit_grant": "credgr_test_x"},
            }
        )
    assert no_grant.value.param == "filter[credit_grant]"


def test_credit_pays_metered_lines_when_the_invoice_is_finalized(client, stripe_server, catalog, customer):
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": catalog["metered"].id}]}
    )
    grant = _grant(client, customer.id, 500)
    _usage(client, customer.id, 400, stripe_server.now(), "u1")  # 400 x 2 cents = 800
    invoice = stripe_server.advance_subscription(sub.id)
    [line] = invoice["lines"]["data"]
    assert line["amount"] == 800
    [credit] = line["pretax_credit_amounts"]
    assert credit["type"] == "credit_balance_transaction"
    assert credit["amount"] == 500
    assert invoice["total_pretax_credit_amounts"] == [credit]
    assert (invoice["subtotal"], invoice["total"], invoice["amount_due"]) == (800, 300, 300)
    assert _balance(client, customer.id) == [("usd", 0, 0)]
    txn = client.v1.billing.credit_balance_transactions.retrieve(credit["credit_balance_transaction"])
    assert (txn.type, txn.debit.type, txn.credit_grant) == ("debit", "credits_applied", grant.id)
    assert txn.debit.credits_applied.invoice == invoice["id"]
    assert txn.debit.credits_applied.invoice_line_item == line["id"]

    # Voiding the invoice gives the credit back.
    client.v1.invoices.void_invoice(invoice["id"])
    assert _balance(client, customer.id) == [("usd", 500, 500)]
    back = client.v1.billing.credit_balance_transactions.list(
        params={"customer": customer.id, "credit_grant": grant.id}
    )
    assert back.data[0].credit.type == "credits_application_invoice_voided"


def test_credit_covering_the_whole_invoice_leaves_it_paid(client, stripe_server, catalog, customer):
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": catalog["metered"].id}]}
    )
    promo = _grant(client, customer.id, 300, category="promotional")
    paid = _grant(client, customer.id, 1000)
    _usage(client, customer.id, 250, stripe_server.now(), "u1")  # 500 cents
    invoice = stripe_server.advance_subscription(sub.id)
    assert (invoice["total"], invoice["amount_due"], invoice["status"]) == (0, 0, "paid")
    # Promotional credit goes first, then paid credit.
    used = {
        client.v1.billing.credit_balance_transactions.retrieve(
            c["credit_balance_transaction"]
        ).credit_grant: c["amount"]
        for c in invoice["total_pretax_credit_amounts"]
    }
    assert used == {promo.id: 300, paid.id: 200}
    assert _balance(client, customer.id) == [("usd", 800, 800)]


# Invoice preview -----------------------------------------------------------------------------------


def _line_summary(lines) -> list[tuple]:
    """(price, quantity, amount) of each subscription line."""
    return sorted(
        (line["pricing"]["price_details"]["price"], line["quantity"], line["amount"]) for line in lines
    )


def test_preview_of_a_subscription_prices_the_usage_of_its_current_period(
    client, stripe_server, catalog, customer
):
    stripe_server.create_payment_method(customer.id, default=True)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": catalog["metered"].id}, {"price": catalog["base"].id, "quantity": 1}],
        }
    )
    [metered_item] = [i for i in sub["items"].data if i.price.id == catalog["metered"].id]
    start, end = metered_item.current_period_start, metered_item.current_period_end
    other = client.v1.customers.create(params={"email": "other@tenant.example"})
    _usage(client, customer.id, 120, start - 60, "before")  # before the period: not on this invoice
    _usage(client, customer.id, 100, start, "u1")
    _usage(client, customer.id, 200, start + 5, "u2")
    _usage(client, other.id, 999, start + 5, "o1")
    pending = client.v1.invoice_items.create(
        params={"customer": customer.id, "amount": 4250, "currency": "usd", "description": "AWS overage"}
    )

    preview = client.v1.invoices.create_preview(params={"customer": customer.id, "subscription": sub.id})
    assert preview.object == "invoice"
    assert preview.id.startswith("upcoming_in_")
    assert (preview.customer, preview.status, preview.billing_reason) == (customer.id, "draft", "upcoming")
    assert preview.parent.subscription_details.subscription == sub.id
    assert (preview.period_start, preview.period_end) == (start, end)
    assert preview.lines.object == "list"
    assert sorted((li.description, li.quantity, li.amount) for li in preview.lines.data) == sorted(
        [("300 \u00d7 API", 300, 600), ("1 \u00d7 API", 1, 1000), ("AWS overage", 1, 4250)]
    )
    metered_line = next(
        li for li in preview.lines.data if li.pricing.price_details.price == catalog["metered"].id
    )
    assert (metered_line.period.start, metered_line.period.end) == (start, end)
    assert metered_line.parent.subscription_item_details.subscription_item == metered_item.id
    assert (metered_line.quantity_decimal, metered_line.subtotal) == (Decimal(300), 600)
    assert (preview.subtotal, preview.total, preview.amount_due) == (5850, 5850, 5850)
    assert preview.total_pretax_credit_amounts == []
    # A preview is not an invoice: not listed, not retrievable.
    assert preview.id not in [i.id for i in client.v1.invoices.list(params={"customer": customer.id}).data]
    with pytest.raises(stripe.InvalidRequestError) as gone:
        client.v1.invoices.retrieve(preview.id)
    assert gone.value.http_status == 404

    # The renewal invoice is what the preview said, the pending item included.
    invoice = stripe_server.advance_subscription(sub.id)
    assert sorted((li["description"], li["amount"]) for li in invoice["lines"]["data"]) == sorted(
        (li.description, li.amount) for li in preview.lines.data
    )
    assert invoice["total"] == preview.total
    assert client.v1.invoice_items.retrieve(pending.id).invoice == invoice["id"]


def test_preview_with_tiers_and_subscription_changes(client, stripe_server, catalog, customer):
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": catalog["tiered"].id}]}
    )
    _usage(client, customer.id, 130, stripe_server.now(), "u1")
    preview = client.v1.invoices.create_preview(params={"subscription": sub.id})  # the customer is the sub's
    # 130 calls on the graduated price: 100 free, then 30 x 2.5 cents = 75 cents.
    assert _line_summary(preview.lines.data) == [(catalog["tiered"].id, 130, 75)]
    assert preview.amount_due == 75
    item = sub["items"].data[0]
    swapped = client.v1.invoices.create_preview(
        params={
            "customer": customer.id,
            "subscription": sub.id,
            "subscription_details": {"items": [{"id": item.id, "price": catalog["metered"].id}]},
        }
    )
    assert _line_summary(swapped.lines.data) == [(catalog["metered"].id, 130, 260)]
    # Ending at the period's end: no licensed line for a next period.
    client.v1.subscription_items.create(
        params={"subscription": sub.id, "price": catalog["base"].id, "quantity": 1}
    )
    ending = client.v1.invoices.create_preview(
        params={"subscription": sub.id, "subscription_details": {"cancel_at_period_end": True}}
    )
    assert [li.pricing.price_details.price for li in ending.lines.data] == [catalog["tiered"].id]
    # The subscription itself did not change.
    assert client.v1.subscriptions.retrieve(sub.id)["items"].data[0].price.id == catalog["tiered"].id


def test_preview_of_decimal_usage_keeps_full_precision_in_quantity_decimal(
    client, stripe_server, catalog, customer
):
    stripe_server.configure(meter_value_mode="decimal")
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": catalog["metered"].id}]}
    )
    _usage(client, customer.id, "2.75", stripe_server.now(), "u1")
    [line] = client.v1.invoices.create_preview(params={"subscription": sub.id}).lines.data
    assert (line.quantity, line.quantity_decimal, line.amount) == (
        2,
        Decimal("2.75"),
        6,
    )  # 5.5 cents, half up


def test_preview_applies_available_credit_without_using_it(client, stripe_server, catalog, customer):
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": catalog["metered"].id}]}
    )
    _grant(client, customer.id, 500)
    _usage(client, customer.id, 400, stripe_server.now(), "u1")  # 800 cents
    preview = client.v1.invoices.create_preview(params={"customer": customer.id, "subscription": sub.id})
    [credit] = preview.total_pretax_credit_amounts
    assert (credit.type, credit.amount, credit.credit_balance_transaction) == (
        "credit_balance_transaction",
        500,
        None,
    )
    assert preview.lines.data[0].pretax_credit_amounts[0].amount == 500
    assert (preview.subtotal, preview.total, preview.amount_due) == (800, 300, 300)
    assert _balance(client, customer.id) == [("usd", 500, 500)]  # a preview uses nothing
    invoice = stripe_server.advance_subscription(sub.id)
    assert invoice["amount_due"] == preview.amount_due


def test_preview_of_a_new_subscription_and_invoice_items(client, catalog, customer):
    pending = client.v1.invoice_items.create(
        params={"customer": customer.id, "amount": 4250, "currency": "usd", "description": "AWS overage"}
    )
    preview = client.v1.invoices.create_preview(
        params={
            "customer": customer.id,
            "subscription_details": {
                "items": [{"price": catalog["base"].id, "quantity": 2}, {"price": catalog["metered"].id}]
            },
            "invoice_items": [{"amount": 250, "currency": "usd", "description": "Setup"}],
        }
    )
    assert preview.billing_reason == "subscription_create"
    amounts = sorted((li.description, li.amount) for li in preview.lines.data)
    assert amounts == sorted(
        [("2 \u00d7 API", 2000), ("0 \u00d7 API", 0), ("AWS overage", 4250), ("Setup", 250)]
    )
    assert preview.amount_due == 6500
    assert client.v1.invoice_items.retrieve(pending.id).invoice is None  # still pending
    only_items = client.v1.invoices.create_preview(
        params={"customer": customer.id, "invoice_items": [{"invoiceitem": pending.id, "amount": 4000}]}
    )
    assert [li.amount for li in only_items.lines.data] == [4000]


def test_preview_errors(client, stripe_server, catalog, customer):
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": catalog["metered"].id}]}
    )
    with pytest.raises(stripe.InvalidRequestError) as customer_only:
        client.v1.invoices.create_preview(params={"customer": customer.id})
    assert (customer_only.value.http_status, customer_only.value.param) == (400, "subscription")
    with pytest.raises(stripe.InvalidRequestError) as nothing:
        client.v1.invoices.create_preview()
    assert (nothing.value.code, nothing.value.param) == ("parameter_missing", "customer")
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.invoices.create_preview(params={"customer": customer.id, "subscription": "sub_nope"})
    assert (unknown.value.code, unknown.value.param) == ("resource_missing", "subscription")
    with pytest.raises(stripe.InvalidRequestError) as nobody:
        client.v1.invoices.create_preview(
            params={"customer": "cus_nope", "invoice_items": [{"amount": 1, "currency": "usd"}]}
        )
    assert (nobody.value.code, nobody.value.param) == ("resource_missing", "customer")
    other = client.v1.customers.create(params={"email": "other@tenant.example"})
    with pytest.raises(stripe.InvalidRequestError) as foreign:
        client.v1.invoices.create_preview(params={"customer": other.id, "subscription": sub.id})
    assert foreign.value.param == "subscription"
    with pytest.raises(stripe.InvalidRequestError) as bad_item:
        client.v1.invoices.create_preview(
            params={
                "subscription": sub.id,
                "subscription_details": {"items": [{"id": "si_nope", "deleted": True}]},
            }
        )
    assert bad_item.value.param == "subscription_details[items][0][id]"
    client.v1.subscriptions.cancel(sub.id)
    with pytest.raises(stripe.InvalidRequestError) as canceled:
        client.v1.invoices.create_preview(params={"customer": customer.id, "subscription": sub.id})
    assert (canceled.value.http_status, canceled.value.code) == (404, "invoice_upcoming_none")
    assert [r.status for r in stripe_server.requests_to("/v1/invoices/create_preview")] == [
        400,
        400,
        400,
        400,
        400,
        400,
        404,
    ]


# Checkout promotion codes --------------------------------------------------------------------------


def test_checkout_allow_promotion_codes(client, catalog, customer):
    base = {
        "mode": "subscription",
        "customer": customer.id,
        "success_url": "https://app.example/ok",
        "line_items": [{"price": catalog["metered"].id}],
    }
    session = client.v1.checkout.sessions.create(params={**base, "allow_promotion_codes": True})
    assert session.allow_promotion_codes is True
    assert client.v1.checkout.sessions.retrieve(session.id).allow_promotion_codes is True
    assert client.v1.checkout.sessions.create(params=base).allow_promotion_codes is None
    with pytest.raises(stripe.InvalidRequestError) as both:
        client.v1.checkout.sessions.create(
            params={**base, "allow_promotion_codes": True, "discounts": [{"coupon": "launch"}]}
        )
    assert both.value.param == "allow_promotion_codes"
    with pytest.raises(stripe.InvalidRequestError) as not_bool:
        client.v1.checkout.sessions.create(params={**base, "allow_promotion_codes": "sometimes"})
    assert not_bool.value.param == "allow_promotion_codes"
