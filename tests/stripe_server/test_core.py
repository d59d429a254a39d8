"""Customers, products, prices, payment methods, errors, lists and the form encoding."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from decimal import Decimal

import pytest
import stripe

from .conftest import API_KEY
from .formcodec import encode_form, parse_form


def raw(server, method, path, body=None, headers=None):
    """A request without stripe-python: (status, headers, parsed body)."""
    request = urllib.request.Request(server.url + path, data=body, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request) as response:  # noqa: S310
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


AUTH = {"Authorization": f"Bearer {API_KEY}"}


def test_form_codec_reads_stripes_bracket_syntax():
    assert parse_form(
        "email=a%40b.c&metadata[tenant_id]=42&items[0][price]=p1&items[1][price]=p2&items[1][quantity]=3"
        "&expand[]=a&expand[]=b&tiers[0][up_to]=inf&metadata[0]=digit-key&empty="
    ) == {
        "email": "a@b.c",
        "metadata": {"tenant_id": "42", "0": "digit-key"},
        "items": [{"price": "p1"}, {"price": "p2", "quantity": "3"}],
        "expand": ["a", "b"],
        "tiers": [{"up_to": "inf"}],
        "empty": "",
    }
    params = {"a": {"b": [1, {"c": True}]}, "d": "x y"}
    assert parse_form(encode_form(params)) == {"a": {"b": ["1", {"c": "true"}]}, "d": "x y"}


def test_authentication_is_required(stripe_server):
    status, _, body = raw(stripe_server, "GET", "/v1/customers")
    assert status == 401
    assert body["error"]["type"] == "invalid_request_error"
    assert "You did not provide an API key" in body["error"]["message"]
    status, _, body = raw(
        stripe_server, "GET", "/v1/customers", headers={"Authorization": "Bearer sk_live_nope"}
    )
    assert status == 401
    assert body["error"]["message"].startswith("Invalid API Key provided")
    unauthenticated = stripe.StripeClient(api_key="pk_test_wrong", base_addresses={"api": stripe_server.url})
    with pytest.raises(stripe.AuthenticationError):
        unauthenticated.v1.customers.list()
    assert (
        raw(stripe_server, "GET", "/v1/customers", headers={"Authorization": "Basic c2tfdGVzdF94Og=="})[0]
        == 200
    )


def test_customer_lifecycle_with_metadata(client, stripe_server):
    customer = client.v1.customers.create(
        params={
            "email": "ops@tenant.example",
            "name": "Tenant 42",
            "metadata": {"tenant_id": "42", "plan": "free"},
        }
    )
    assert customer.id.startswith("cus_")
    assert customer.object == "customer"
    assert customer.livemode is False
    assert isinstance(customer.created, int)
    assert customer.metadata.to_dict() == {"tenant_id": "42", "plan": "free"}
    assert customer.invoice_settings.default_payment_method is None

    updated = client.v1.customers.update(
        customer.id, params={"metadata": {"plan": "metered", "tenant_id": ""}}
    )
    assert updated.metadata.to_dict() == {"plan": "metered"}  # "" removes a key
    assert client.v1.customers.retrieve(customer.id).metadata.to_dict() == {"plan": "metered"}
    cleared = client.v1.customers.update(customer.id, params={"metadata": ""})
    assert cleared.metadata.to_dict() == {}

    deleted = client.v1.customers.delete(customer.id)
    assert deleted.deleted is True
    assert client.v1.customers.retrieve(customer.id).deleted is True  # Stripe still answers for deleted ones
    with pytest.raises(stripe.InvalidRequestError) as gone:
        client.v1.customers.update(customer.id, params={"name": "x"})
    assert gone.value.http_status == 404
    assert [e["type"] for e in stripe_server.events()] == [
        "customer.created",
        "customer.updated",
        "customer.updated",
        "customer.deleted",
    ]
    assert stripe_server.events("customer.updated")[0]["data"]["previous_attributes"]["metadata"] == {
        "tenant_id": "42",
        "plan": "free",
    }


def test_customer_search_by_metadata_and_email(client, stripe_server):
    a = client.v1.customers.create(params={"email": "a@x.example", "metadata": {"tenant_id": "42"}})
    client.v1.customers.create(params={"email": "b@x.example", "metadata": {"tenant_id": "43"}})
    found = client.v1.customers.search(params={"query": "metadata['tenant_id']:'42'"})
    assert found.object == "search_result"
    assert found.url == "/v1/customers/search"
    assert found.has_more is False
    assert [c.id for c in found.data] == [a.id]
    assert [c.id for c in client.v1.customers.search(params={"query": 'email:"a@x.example"'}).data] == [a.id]
    both = client.v1.customers.search(
        params={"query": "metadata['tenant_id']:'42' OR metadata['tenant_id']:'43'"}
    )
    assert len(both.data) == 2
    assert (
        client.v1.customers.search(params={"query": "-metadata['tenant_id']:'42'"}).data[0].email
        == "b@x.example"
    )
    assert len(client.v1.customers.search(params={"query": "email~'x.example'"}).data) == 2

    with pytest.raises(stripe.InvalidRequestError) as bad_field:
        client.v1.customers.search(params={"query": "tenant:'42'"})
    assert bad_field.value.param == "query"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.search(params={"query": "email:'a' AND name:'b' OR name:'c'"})

    # Search lags behind writes on Stripe; the server can reproduce that.
    stripe_server.search_delay = 30
    late = client.v1.customers.create(params={"metadata": {"tenant_id": "44"}})
    assert client.v1.customers.search(params={"query": "metadata['tenant_id']:'44'"}).data == []
    assert client.v1.customers.list(params={"limit": 1}).data[0].id == late.id  # lists are immediate
    stripe_server.advance_time(31)
    assert [
        c.id for c in client.v1.customers.search(params={"query": "metadata['tenant_id']:'44'"}).data
    ] == [late.id]


def test_module_level_api_search_pagination(module_stripe):
    for i in range(5):
        module_stripe.Customer.create(email=f"c{i}@x.example", metadata={"group": "g"})
    page = module_stripe.Customer.search(query="metadata['group']:'g'", limit=2)
    assert len(page.data) == 2
    assert page.has_more is True
    assert page.next_page
    assert len(list(page.auto_paging_iter())) == 5


def test_list_pagination_and_created_filter(client, module_stripe):
    ids = [client.v1.customers.create(params={"email": f"{i}@x.example"}).id for i in range(7)]
    first = client.v1.customers.list(params={"limit": 3})
    assert first.object == "list"
    assert first.url == "/v1/customers"
    assert first.has_more is True
    assert [c.id for c in first.data] == ids[::-1][:3]  # newest first
    second = client.v1.customers.list(params={"limit": 3, "starting_after": first.data[-1].id})
    assert [c.id for c in second.data] == ids[::-1][3:6]
    back = client.v1.customers.list(params={"limit": 2, "ending_before": second.data[0].id})
    assert [c.id for c in back.data] == ids[::-1][1:3]
    assert sorted(c.id for c in module_stripe.Customer.list(limit=2).auto_paging_iter()) == sorted(ids)
    created = client.v1.customers.retrieve(ids[0]).created
    assert len(client.v1.customers.list(params={"created": {"gte": created}, "limit": 100}).data) == 7
    assert client.v1.customers.list(params={"created": {"lt": created}}).data == []
    with pytest.raises(stripe.InvalidRequestError) as too_many:
        client.v1.customers.list(params={"limit": 101})
    assert too_many.value.param == "limit"


def test_errors_have_stripes_shape(stripe_server, client):
    status, headers, body = raw(stripe_server, "GET", "/v1/customers/cus_nope", headers=AUTH)
    assert status == 404
    assert headers["Request-Id"].startswith("req_")
    assert body["error"] == {
        "code": "resource_missing",
        "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
        "message": "No such customer: 'cus_nope'",
        "param": "id",
        "request_log_url": f"https://dashboard.stripe.com/test/logs/{headers['Request-Id']}",
        "type": "invalid_request_error",
    }
    status, _, body = raw(stripe_server, "GET", "/v1/nothing", headers=AUTH)
    assert status == 404
    assert body["error"]["message"].startswith("Unrecognized request URL (GET: /v1/nothing)")
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.customers.create(params={"emial": "typo@example.com"})
    assert unknown.value.code == "parameter_unknown"
    assert unknown.value.param == "emial"
    assert unknown.value.user_message == "Received unknown parameter: emial"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.products.create(params={})
    assert missing.value.code == "parameter_missing"
    assert missing.value.param == "name"
    status, _, body = raw(
        stripe_server,
        "POST",
        "/v1/customers",
        body=json.dumps({"email": "x@y"}).encode(),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert status == 400


def test_products_and_prices(client, stripe_server):
    meter = client.v1.billing.meters.create(
        params={"display_name": "Tokens", "event_name": "tokens", "default_aggregation": {"formula": "sum"}}
    )
    product = client.v1.products.create(params={"name": "Metered API", "metadata": {"meter": "tokens"}})
    assert product.object == "product"
    assert product.active is True
    metered = client.v1.prices.create(
        params={
            "currency": "usd",
            "product": product.id,
            "unit_amount_decimal": "0.25",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            "lookup_key": "tokens-monthly",
            "metadata": {"meter": "tokens"},
        }
    )
    assert metered.type == "recurring"
    assert metered.billing_scheme == "per_unit"
    assert metered.unit_amount is None
    assert metered.unit_amount_decimal == Decimal("0.25")  # stripe-python reads decimal strings
    assert metered.recurring.usage_type == "metered"
    assert metered.recurring.meter == meter.id
    assert metered.recurring.interval_count == 1

    tiered = client.v1.prices.create(
        params={
            "currency": "usd",
            "product": product.id,
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [{"up_to": 1000, "unit_amount": 0}, {"up_to": "inf", "unit_amount_decimal": "0.1"}],
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    assert "tiers" not in tiered  # an includable field: only with expand
    expanded = client.v1.prices.retrieve(tiered.id, params={"expand": ["tiers", "product"]})
    assert [t.up_to for t in expanded.tiers] == [1000, None]
    assert expanded.tiers[1].unit_amount_decimal == Decimal("0.1")
    assert expanded.product.id == product.id

    with pytest.raises(stripe.InvalidRequestError) as no_meter:
        client.v1.prices.create(
            params={
                "currency": "usd",
                "product": product.id,
                "unit_amount": 1,
                "recurring": {"interval": "month", "usage_type": "metered"},
            }
        )
    assert no_meter.value.param == "recurring[meter]"
    with pytest.raises(stripe.InvalidRequestError) as bad_tiers:
        client.v1.prices.create(
            params={
                "currency": "usd",
                "product": product.id,
                "billing_scheme": "tiered",
                "tiers_mode": "volume",
                "tiers": [{"up_to": 10, "unit_amount": 1}],
            }
        )
    assert bad_tiers.value.param == "tiers[0][up_to]"
    with pytest.raises(stripe.InvalidRequestError) as taken:
        client.v1.prices.create(
            params={
                "currency": "usd",
                "product": product.id,
                "unit_amount": 5,
                "lookup_key": "tokens-monthly",
            }
        )
    assert metered.id in taken.value.user_message

    by_key = client.v1.prices.list(params={"lookup_keys": ["tokens-monthly"], "expand": ["data.product"]})
    assert [p.id for p in by_key.data] == [metered.id]
    assert by_key.data[0].product.name == "Metered API"
    assert len(client.v1.prices.list(params={"product": product.id}).data) == 2
    found = client.v1.prices.search(params={"query": "metadata['meter']:'tokens'"})
    assert [p.id for p in found.data] == [metered.id]
    assert [p.id for p in client.v1.products.search(params={"query": "name:'Metered API'"}).data] == [
        product.id
    ]

    client.v1.prices.update(metered.id, params={"active": False})
    assert client.v1.prices.list(params={"active": True}).data[0].id == tiered.id
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.products.delete(product.id)  # it has prices
    assert [e["type"] for e in stripe_server.events()][-1] == "price.updated"


def test_product_with_its_own_id_and_default_price(client):
    product = client.v1.products.create(
        params={
            "id": "prod_api_calls",
            "name": "API calls",
            "default_price_data": {"currency": "eur", "unit_amount": 900},
        }
    )
    assert product.id == "prod_api_calls"
    price = client.v1.prices.retrieve(product.default_price)
    assert (price.currency, price.unit_amount, price.type) == ("eur", 900, "one_time")
    with pytest.raises(stripe.InvalidRequestError) as again:
        client.v1.products.create(params={"id": "prod_api_calls", "name": "again"})
    assert again.value.code == "resource_already_exists"


def test_payment_methods(client, stripe_server):
    customer = client.v1.customers.create(params={"email": "card@x.example"})
    pm = client.v1.payment_methods.create(params={"type": "card", "card": {"token": "tok_visa"}})
    assert pm.object == "payment_method"
    assert (pm.card.brand, pm.card.last4, pm.customer) == ("visa", "4242", None)
    attached = client.v1.payment_methods.attach(pm.id, params={"customer": customer.id})
    assert attached.customer == customer.id
    client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": pm.id}})
    assert client.v1.customers.retrieve(customer.id).invoice_settings.default_payment_method == pm.id
    listed = client.v1.payment_methods.list(params={"customer": customer.id, "type": "card"})
    assert [p.id for p in listed.data] == [pm.id]
    assert client.v1.customers.payment_methods.list(customer.id).data[0].id == pm.id

    shorthand = client.v1.payment_methods.attach("pm_card_mastercard", params={"customer": customer.id})
    assert shorthand.id.startswith("pm_")
    assert shorthand.id != "pm_card_mastercard"
    assert shorthand.card.brand == "mastercard"
    with pytest.raises(stripe.CardError) as declined:
        client.v1.payment_methods.attach("pm_card_chargeDeclined", params={"customer": customer.id})
    assert declined.value.code == "card_declined"
    assert declined.value.http_status == 402

    other = client.v1.payment_methods.create(params={"type": "card", "card": {"token": "tok_mastercard"}})
    with pytest.raises(stripe.InvalidRequestError) as not_attached:
        client.v1.customers.update(
            customer.id, params={"invoice_settings": {"default_payment_method": other.id}}
        )
    assert not_attached.value.param == "invoice_settings[default_payment_method]"
    detached = client.v1.payment_methods.detach(pm.id)
    assert detached.customer is None
    assert client.v1.customers.retrieve(customer.id).invoice_settings.default_payment_method is None
    assert "payment_method.attached" in [e["type"] for e in stripe_server.events()]


def test_setup_intents(client, stripe_server):
    customer = client.v1.customers.create(params={})
    seti = client.v1.setup_intents.create(params={"customer": customer.id, "payment_method": "pm_card_visa"})
    assert seti.status == "requires_confirmation"
    confirmed = client.v1.setup_intents.confirm(seti.id)
    assert confirmed.status == "succeeded"
    assert client.v1.payment_methods.retrieve(confirmed.payment_method).customer == customer.id
    assert client.v1.setup_intents.retrieve(seti.id).status == "succeeded"
    assert {"setup_intent.created", "setup_intent.succeeded", "payment_method.attached"} <= {
        e["type"] for e in stripe_server.events()
    }


def test_events_record_every_change_and_can_be_fetched(client, module_stripe, stripe_server):
    customer = client.v1.customers.create(params={"email": "e@x.example"}, options={"idempotency_key": "k-1"})
    [event] = stripe_server.events("customer.created")
    fetched = client.v1.events.retrieve(event["id"])
    assert fetched.object == "event"
    assert fetched.type == "customer.created"
    assert fetched.data.object.id == customer.id
    assert fetched["request"]["idempotency_key"] == "k-1"
    assert fetched.api_version
    assert module_stripe.Event.retrieve(event["id"]).id == event["id"]
    assert [e.id for e in client.v1.events.list(params={"type": "customer.created"}).data] == [event["id"]]


@pytest.mark.parametrize(
    ("status", "event_type"),
    [
        ("succeeded", "payment_intent.succeeded"),
        ("requires_payment_method", "payment_intent.payment_failed"),
        ("requires_action", "payment_intent.requires_action"),
    ],
)
def test_a_payment_intent_is_announced_and_retrieved_as_stripe_has_it(
    stripe_server, client, status, event_type
):
    customer = client.v1.customers.create(params={"email": "a@example.com"})
    created = stripe_server.create_payment_intent(customer.id, amount=1500, status=status)
    [event] = stripe_server.events(event_type)
    assert event["data"]["object"]["id"] == created["id"]

    pi = client.v1.payment_intents.retrieve(created["id"])
    assert (pi.object, pi.status, pi.amount, pi.currency, pi.customer) == (
        "payment_intent",
        status,
        1500,
        "usd",
        customer.id,
    )
    assert (pi.last_payment_error is not None) == (status == "requires_payment_method")
    with pytest.raises(stripe.InvalidRequestError, match="No such payment_intent"):
        client.v1.payment_intents.retrieve("pi_missing")
