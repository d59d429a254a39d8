"""Idempotency, rate limits, faults, the request log, webhooks and the server's lifecycle."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
import stripe

from . import StripeServer
from .conftest import API_KEY


def test_context_manager_binds_a_free_port_and_stops():
    with StripeServer() as first, StripeServer() as second:
        assert first.url.startswith("http://127.0.0.1:")
        assert first.port != second.port
        client = stripe.StripeClient(
            api_key=API_KEY, base_addresses={"api": first.url}, max_network_retries=0
        )
        assert client.v1.customers.list().data == []
    with pytest.raises(RuntimeError):
        _ = first.url


def test_idempotent_replay_returns_the_stored_response(client, stripe_server):
    first = client.v1.customers.create(
        params={"email": "once@x.example"}, options={"idempotency_key": "onboard-42"}
    )
    again = client.v1.customers.create(
        params={"email": "once@x.example"}, options={"idempotency_key": "onboard-42"}
    )
    assert again.id == first.id
    assert len(stripe_server.objects("customer")) == 1
    calls = stripe_server.requests_to("/v1/customers", "POST")
    assert [c.idempotency_key for c in calls] == ["onboard-42", "onboard-42"]
    assert [c.replayed for c in calls] == [False, True]
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert again.last_response.headers["Original-Request"] == first.last_response.request_id


def test_idempotency_key_with_other_parameters_or_endpoint_is_refused(client, stripe_server):
    client.v1.customers.create(params={"email": "a@x.example"}, options={"idempotency_key": "k"})
    with pytest.raises(stripe.IdempotencyError) as mismatch:
        client.v1.customers.create(params={"email": "b@x.example"}, options={"idempotency_key": "k"})
    assert mismatch.value.http_status == 400
    assert mismatch.value.json_body["error"]["type"] == "idempotency_error"
    assert mismatch.value.user_message.startswith(
        "Keys for idempotent requests can only be used with the same parameters they were first used with."
    )
    with pytest.raises(stripe.IdempotencyError) as endpoint:
        client.v1.products.create(params={"name": "x"}, options={"idempotency_key": "k"})
    assert "same endpoint" in endpoint.value.user_message
    assert len(stripe_server.objects("customer")) == 1
    assert stripe_server.objects("product") == []


def test_validation_errors_are_not_stored_under_the_key(client, stripe_server):
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.products.create(params={"name": ""}, options={"idempotency_key": "p"})
    # Stripe saves no result when parameters fail validation, so the same key works once they are fixed.
    product = client.v1.products.create(params={"name": "fixed"}, options={"idempotency_key": "p"})
    assert product.name == "fixed"


def test_a_retry_after_a_lost_answer_is_replayed(stripe_server):
    """The change is made, the answer is lost (a 500 after the fact); stripe-python retries, same key."""
    retrying = stripe.StripeClient(
        api_key=API_KEY, base_addresses={"api": stripe_server.url}, max_network_retries=2
    )
    stripe_server.fail_next(1, path="/v1/customers", method="POST", when="after")
    customer = retrying.v1.customers.create(params={"email": "lost@x.example"})
    assert len(stripe_server.objects("customer")) == 1
    calls = stripe_server.requests_to("/v1/customers", "POST")
    assert [c.status for c in calls] == [500, 200]
    assert calls[0].idempotency_key == calls[1].idempotency_key
    assert calls[1].replayed is True
    assert calls[1].response["id"] == customer.id


def test_rate_limit_answers_429_with_retry_after(client, stripe_server):
    stripe_server.set_rate_limit(5)
    for _ in range(5):
        client.v1.customers.list()
    with pytest.raises(stripe.RateLimitError) as limited:
        client.v1.customers.list()
    assert limited.value.http_status == 429
    assert int(limited.value.headers["Retry-After"]) >= 1
    assert limited.value.headers["Stripe-Rate-Limited-Reason"] == "global-rate"
    assert limited.value.json_body["error"]["code"] == "rate_limit"
    assert limited.value.json_body["error"]["type"] == "invalid_request_error"
    time.sleep(1.05)
    client.v1.customers.list()
    assert [r.status for r in stripe_server.requests].count(429) == 1


def test_the_stream_has_its_own_rate_limit(client, stripe_server):
    client.v1.customers.create(params={})
    session = client.v2.billing.meter_event_session.create()
    stream = stripe.StripeClient(
        api_key=session.authentication_token,
        base_addresses={"meter_events": stripe_server.url},
        max_network_retries=0,
    )
    stripe_server.set_rate_limit(1, scope="api")
    stripe_server.set_rate_limit(2, scope="stream")
    time.sleep(1.05)
    events = {"events": [{"event_name": "nothing", "payload": {"stripe_customer_id": "cus_x", "value": "1"}}]}
    stream.v2.billing.meter_event_stream.create(params=events)
    stream.v2.billing.meter_event_stream.create(params=events)
    with pytest.raises(stripe.RateLimitError) as limited:
        stream.v2.billing.meter_event_stream.create(params=events)
    assert limited.value.headers["Retry-After"]
    client.v1.customers.list()  # the api scope is untouched by the stream's calls


def test_switchable_500s(client, stripe_server):
    stripe_server.fail_next(2, path="/v1/billing/meter_events")
    client.v1.customers.list()  # other paths are not affected
    for _ in range(2):
        with pytest.raises(stripe.APIError) as err:
            client.v1.billing.meter_events.create(params={"event_name": "x", "payload": {"value": "1"}})
        assert err.value.http_status == 500
        assert err.value.json_body["error"]["type"] == "api_error"
    with pytest.raises(stripe.InvalidRequestError):  # the fault is used up: the real answer again
        client.v1.billing.meter_events.create(params={"event_name": "x", "payload": {"value": "1"}})

    stripe_server.fail_for(0.3, status=503)
    with pytest.raises(stripe.APIError) as unavailable:
        client.v1.customers.list()
    assert unavailable.value.http_status == 503
    time.sleep(0.35)
    client.v1.customers.list()

    stripe_server.fail_next(
        1,
        status=402,
        error={
            "type": "card_error",
            "code": "card_declined",
            "message": "Your card was declined.",
            "decline_code": "generic_decline",
        },
    )
    with pytest.raises(stripe.CardError) as card:
        client.v1.customers.list()
    assert card.value.json_body["error"]["decline_code"] == "generic_decline"
    stripe_server.fail_next(5)
    stripe_server.clear_faults()
    client.v1.customers.list()


def test_stripe_python_retries_500s_with_the_same_idempotency_key(stripe_server):
    retrying = stripe.StripeClient(
        api_key=API_KEY, base_addresses={"api": stripe_server.url}, max_network_retries=2
    )
    stripe_server.fail_next(2, path="/v1/products")
    product = retrying.v1.products.create(params={"name": "Retried"})
    calls = stripe_server.requests_to("/v1/products")
    assert [c.status for c in calls] == [500, 500, 200]
    assert len({c.idempotency_key for c in calls}) == 1
    assert stripe_server.objects("product")[0]["id"] == product.id


def test_delays_cause_client_timeouts_and_drops_reset_connections(stripe_server):
    impatient = stripe.StripeClient(
        api_key=API_KEY,
        base_addresses={"api": stripe_server.url},
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=0.2),
    )
    stripe_server.delay_next(1, 0.6, path="/v1/customers", when="after")
    with pytest.raises(stripe.APIConnectionError):
        impatient.v1.customers.create(params={"email": "slow@x.example"})
    time.sleep(0.5)
    assert len(stripe_server.objects("customer")) == 1  # "after": it happened, the answer came too late
    stripe_server.drop_next(1, path="/v1/customers")
    with pytest.raises(stripe.APIConnectionError):
        impatient.v1.customers.list()
    assert impatient.v1.customers.list().data


def test_request_log(client, stripe_server):
    client.v1.customers.create(
        params={"email": "log@x.example", "metadata": {"tenant_id": "9"}},
        options={"idempotency_key": "log-1", "stripe_version": "2026-08-26.dahlia"},
    )
    client.v1.customers.list(params={"limit": 3})
    post, get = stripe_server.requests
    assert (post.method, post.path, post.status) == ("POST", "/v1/customers", 200)
    assert post.params == {"email": "log@x.example", "metadata": {"tenant_id": "9"}}
    assert post.idempotency_key == "log-1"
    assert post.headers["authorization"] == f"Bearer {API_KEY}"
    assert post.headers["content-type"] == "application/x-www-form-urlencoded"
    assert post.stripe_version == "2026-08-26.dahlia"
    assert post.response["email"] == "log@x.example"
    assert (get.method, get.params, get.idempotency_key) == ("GET", {"limit": "3"}, None)
    stripe_server.clear_requests()
    assert stripe_server.requests == []


def test_webhook_signature_verifies_with_stripe_python(stripe_server, webhook_receiver, client):
    customer = client.v1.customers.create(params={"email": "hook@x.example"})
    secret = "whsec_test_secret"
    [delivery] = stripe_server.send_webhook(
        webhook_receiver.url, "customer.updated", customer.id, secret=secret
    )
    assert delivery.status == 200
    [received] = webhook_receiver.received
    header = received["headers"]["Stripe-Signature"]
    assert header.startswith("t=")
    assert ",v1=" in header
    event = stripe.Webhook.construct_event(received["body"], header, secret)
    assert event.type == "customer.updated"
    assert event.data.object.id == customer.id
    assert client.v1.events.retrieve(event.id).type == "customer.updated"  # the event can be re-fetched

    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(received["body"], header, "whsec_other")
    stale = stripe_server.send_webhook(
        webhook_receiver.url,
        "invoice.paid",
        {"id": "in_1", "object": "invoice"},
        secret=secret,
        timestamp=int(time.time()) - 600,
    )[0]
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(stale.payload, stale.signature, secret, tolerance=300)


def test_duplicate_and_out_of_order_deliveries(stripe_server, webhook_receiver, client):
    customer = client.v1.customers.create(params={})
    deliveries = stripe_server.send_webhook(
        webhook_receiver.url,
        "invoice.payment_failed",
        {"id": "in_x", "object": "invoice", "customer": customer.id},
        secret="whsec_x",
        duplicate=True,
    )
    assert len(deliveries) == 2
    first, second = webhook_receiver.events()
    assert first["id"] == second["id"]
    older = stripe_server.events("customer.created")[0]["id"]
    stripe_server.resend_event(webhook_receiver.url, older, secret="whsec_x")
    assert webhook_receiver.events()[-1]["id"] == older
    webhook_receiver.status = 500
    failed = stripe_server.send_webhook(webhook_receiver.url, "ping", {"id": "x"}, secret="whsec_x")[0]
    assert failed.status == 500


def test_webhook_endpoint_gets_every_change(stripe_server, webhook_receiver, client):
    stripe_server.add_webhook_endpoint(webhook_receiver.url, secret="whsec_ep", enabled_events=["customer.*"])
    customer = client.v1.customers.create(params={"email": "a@x.example"})
    client.v1.customers.update(customer.id, params={"name": "A"})
    client.v1.products.create(params={"name": "not sent"})
    assert stripe_server.wait_for_webhooks()
    types = [e["type"] for e in webhook_receiver.events()]
    assert types == ["customer.created", "customer.updated"]
    for received in webhook_receiver.received:
        stripe.Webhook.construct_event(received["body"], received["headers"]["Stripe-Signature"], "whsec_ep")


def test_admin_paths_for_other_processes(stripe_server, client):
    def admin(method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(stripe_server.url + path, data=data, method=method)  # noqa: S310
        with urllib.request.urlopen(request) as response:  # noqa: S310
            return json.loads(response.read())

    client.v1.customers.create(params={})
    assert len(admin("GET", "/_test/requests")["data"]) == 1
    assert len(admin("GET", "/_test/objects/customer")["data"]) == 1
    admin("POST", "/_test/faults", {"kind": "fail_next", "count": 1, "status": 500})
    with pytest.raises(stripe.APIError):
        client.v1.customers.list()
    admin("POST", "/_test/rate_limit", {"rps": 25})
    assert stripe_server.rate_limits["api"].rps == 25
    admin("POST", "/_test/config", {"meter_value_mode": "decimal"})
    assert stripe_server.meter_value_mode == "decimal"
    before = stripe_server.now()
    assert admin("POST", "/_test/clock", {"advance": 3600})["now"] >= before + 3600
    admin("POST", "/_test/reset", {})
    assert stripe_server.objects("customer") == []
    assert stripe_server.meter_value_mode == "integer"


def test_reset_forgets_everything(client, stripe_server):
    client.v1.customers.create(params={})
    stripe_server.set_rate_limit(100)
    stripe_server.fail_next(3)
    stripe_server.advance_time(999)
    stripe_server.reset()
    assert stripe_server.objects("customer") == []
    assert stripe_server.requests == []
    assert stripe_server.rate_limits == {"api": None, "stream": None}
    assert abs(stripe_server.now() - time.time()) < 2
    client.v1.customers.list()
