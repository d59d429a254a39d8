"""POST /api/v1/stripe/webhook: signature checks, storing once, queueing after commit."""

import json
import time

import pytest

from conftest import STRIPE_TEST_WEBHOOK_SECRET, run_at_once
from stripe_sync.client import stripe_client
from stripe_sync.models import WebhookEvent
from stripe_sync.tests.webhook_support import URL, deliver, post_signed
from tests.stripe_server import StripeServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def event(local_stripe):
    customer = stripe_client().v1.customers.create(params={"name": "Someone"})
    return local_stripe.build_event("customer.updated", customer.id)


def _assert_refused(response, code: str):
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == code
    assert WebhookEvent.objects.count() == 0


def test_a_signed_event_is_stored_and_queued_after_commit(client, event, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = post_signed(client, event)
    assert response.status_code == 200
    assert response.json() == {"id": event["id"], "status": "received", "duplicate": False}
    stored = WebhookEvent.objects.get()
    assert (stored.stripe_id, stored.type, stored.status) == (event["id"], "customer.updated", "received")
    assert stored.object_id == event["data"]["object"]["id"]
    assert stored.api_version == event["api_version"]
    assert stored.stripe_created.timestamp() == event["created"]
    assert stored.payload == event
    assert len(queued) == 1


def test_a_wrong_signature_is_refused_and_nothing_stored(client, event):
    _assert_refused(post_signed(client, event, secret="whsec_someone_else"), "signature_invalid")


def test_a_stale_timestamp_is_refused_and_nothing_stored(client, event):
    response = post_signed(client, event, timestamp=int(time.time()) - 301)
    _assert_refused(response, "signature_invalid")
    assert "tolerance" in response.json()["error"]["message"]


def test_a_timestamp_inside_the_tolerance_is_accepted(client, event):
    assert post_signed(client, event, timestamp=int(time.time()) - 240).status_code == 200


def test_a_missing_signature_header_is_refused(client, event):
    response = client.post(URL, data=json.dumps(event), content_type="application/json")
    _assert_refused(response, "signature_missing")


def test_a_tampered_body_is_refused(client, event):
    body = json.dumps(event)
    signature = StripeServer.sign(body, STRIPE_TEST_WEBHOOK_SECRET)
    tampered = body.replace("customer.updated", "customer.deleted")
    response = client.post(
        URL, data=tampered, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature
    )
    _assert_refused(response, "signature_invalid")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"object": "charge", "id": "ch_1", "type": "x"}', "not a Stripe event"),
        ('{"object": "event", "type": "invoice.paid", "data": {"object": {}}}', "has no id"),
        ('{"object": "event", "id": "evt_1", "type": "invoice.paid"}', "no data.object"),
    ],
)
def test_an_unparseable_body_with_a_good_signature_is_refused(client, local_stripe, body, message):
    response = post_signed(client, body)
    _assert_refused(response, "invalid_body")
    assert message in response.json()["error"]["message"]


def test_a_non_utf8_body_is_refused(client, local_stripe):
    body = b'{"object": "event", "id": "\xff"}'
    response = client.post(URL, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE="t=1,v1=00")
    _assert_refused(response, "invalid_body")


def test_without_a_configured_secret_everything_is_refused(client, event, settings):
    settings.STRIPE_WEBHOOK_SECRET = ""
    _assert_refused(post_signed(client, event), "webhook_not_configured")


def test_no_api_key_or_csrf_token_is_needed(event, settings):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    assert post_signed(strict, event).status_code == 200


def test_a_second_delivery_answers_200_and_does_nothing(client, event, django_capture_on_commit_callbacks):
    stored = deliver(client, event, django_capture_on_commit_callbacks)
    assert stored.status == "ignored"  # customer.updated has no handler
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = post_signed(client, event)
    assert response.status_code == 200
    assert response.json()["duplicate"] is True
    assert queued == []
    assert WebhookEvent.objects.count() == 1
    stored.refresh_from_db()
    assert (stored.attempts, stored.status) == (1, "ignored")


def test_a_stored_event_never_picked_up_is_queued_again_by_the_next_delivery(
    client, event, django_capture_on_commit_callbacks
):
    post_signed(client, event)
    WebhookEvent.objects.update(received_at=WebhookEvent.objects.get().received_at.replace(year=2020))
    with django_capture_on_commit_callbacks(execute=False) as queued:
        assert post_signed(client, event).json()["duplicate"] is True
    assert len(queued) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_deliveries_of_one_event_store_one_row(live_server, local_stripe, monkeypatch):
    monkeypatch.setattr("stripe_sync.webhooks.webhook_event_enqueue", lambda *, event_id: None)
    customer = stripe_client().v1.customers.create(params={"name": "Someone"})
    event = local_stripe.build_event("customer.updated", customer.id)
    url = f"{live_server.url}{URL}"
    deliveries = run_at_once(
        lambda: local_stripe.resend_event(url, event["id"], secret=STRIPE_TEST_WEBHOOK_SECRET), 8
    )
    assert sorted(d.status for d in deliveries) == [200] * 8
    assert sorted(json.loads(d.body)["duplicate"] for d in deliveries) == [False] + [True] * 7
    assert WebhookEvent.objects.filter(stripe_id=event["id"]).count() == 1


def test_the_endpoint_is_not_throttled(client, local_stripe, settings):
    settings.INGEST_RATE_LIMIT = "1/m"
    customer = stripe_client().v1.customers.create(params={"name": "Someone"})
    for _ in range(5):
        assert (
            post_signed(client, local_stripe.build_event("customer.updated", customer.id)).status_code == 200
        )
    assert WebhookEvent.objects.count() == 5


def test_a_thin_v2_event_notification_is_stored(client, local_stripe, django_capture_on_commit_callbacks):
    local_stripe.configure(v1_meter_event_validation="async")
    stripe_client().v1.billing.meters.create(
        params={
            "display_name": "API calls",
            "event_name": "api_calls",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )
    stripe_client().v1.billing.meter_events.create(
        params={"event_name": "api_calls", "payload": {"stripe_customer_id": "cus_gone", "value": "1"}}
    )
    [report] = local_stripe.v2_events("v1.billing.meter.error_report_triggered")
    thin = {key: value for key, value in report.items() if key != "data"}
    with django_capture_on_commit_callbacks(execute=False) as queued:
        assert post_signed(client, thin).status_code == 200
    stored = WebhookEvent.objects.get()
    assert (stored.thin, stored.type, stored.object_id) == (
        True,
        report["type"],
        report["related_object"]["id"],
    )
    assert stored.stripe_created is not None
    assert len(queued) == 1


# --- hostile or malformed input is a 400 with nothing stored, never a 500 (issue 10, "Trust") ---


@pytest.mark.parametrize(
    "header",
    ["t=1,v1=é", "t=1,v1=\u00ff\u00fe", "t=\u0100,v1=00", "t=1,v1=00\x7f", "t=1,v1=" + "0" * 5000],
)
def test_a_non_ascii_or_garbage_signature_header_is_refused_with_400(client, event, header):
    response = client.post(
        URL, data=json.dumps(event), content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )
    _assert_refused(response, "signature_invalid")


def _thin(event: dict) -> dict:
    return {
        "id": "evt_thin_1",
        "object": "v2.core.event",
        "type": "v1.billing.meter.error_report_triggered",
        "created": "2026-11-21T10:00:00.000Z",
        "related_object": {"id": "mtr_1", "type": "billing.meter", "url": "/v1/billing/meters/mtr_1"},
        "livemode": False,
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"created": 10**20}, "created must be a Unix time between 2000-01-01 and 2100-12-31"),
        ({"created": -(10**20)}, "created must be a Unix time between"),
        ({"created": 253402300800}, "created must be a Unix time between"),
        ({"created": "9999-12-31T23:00:00-05:00"}, "created must be between 2000-01-01 and 2100-12-31"),
        ({"created": "yesterday"}, "created must be an ISO-8601 string"),
        ({"created": 1.5e9}, "created must be an ISO-8601 string"),
        ({"created": True}, "created must be an ISO-8601 string"),
        ({"api_version": 2024}, "api_version is not a string"),
        ({"livemode": "yes"}, "livemode is not true or false"),
        ({"data": {"object": {"id": ["cus_1"], "object": "customer"}}}, "data.object.id is not a string"),
        ({"data": {"object": {"id": "cus_1", "object": ["customer"]}}}, "data.object.object is not a string"),
        ({"data": {"object": {"id": "cus_1", "object": {"a": 1}}}}, "data.object.object is not a string"),
        ({"data": "x"}, "no data.object"),
        ({"id": "evt_\u0000"}, "NUL"),
        ({"data": {"object": {"id": "cus_1", "name": "a\u0000b"}}}, "NUL"),
        ({"data": {"object": {"id": "cus_1", "name": "\ud800"}}}, "unpaired surrogates"),
        ({"data": {"object": {"id": "cus_1", "\udfff": 1}}}, "unpaired surrogates"),
    ],
)
def test_a_signed_event_with_fields_of_the_wrong_type_or_range_is_refused_with_400(
    client, event, change, message
):
    response = post_signed(client, json.dumps({**event, **change}))
    _assert_refused(response, "invalid_body")
    assert message in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"related_object": "mtr_1"}, "related_object is not an object"),
        ({"related_object": ["mtr_1"]}, "related_object is not an object"),
        ({"related_object": {"id": 7}}, "related_object.id is not a string"),
        ({"created": 10**30}, "created must be a Unix time"),
    ],
)
def test_a_signed_thin_event_with_a_string_related_object_or_bad_created_is_refused_with_400(
    client, local_stripe, change, message
):
    response = post_signed(client, json.dumps({**_thin({}), **change}))
    _assert_refused(response, "invalid_body")
    assert message in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        '{"object": "event", "id": "evt_1", "type": "x", "data": {"object": {"n": 1e400}}}',
        '{"object": "event", "id": "evt_1", "type": "x", "data": {"object": {"n": NaN}}}',
        '{"object": "event", "id": "evt_1", "type": "x", "data": {"object": {"n": -Infinity}}}',
        '{"object": "event", "id": "evt_1", "type": "x", "data": {"object": {"n": %s}}}'
        % ("[" * 100_000 + "]" * 100_000),
        '{"object": "event", "id": "evt_1", "type": "x", "data": {"object": {"n": %s}}}'
        % ("[" * 70 + "]" * 70),
    ],
)
def test_a_signed_event_with_non_finite_numbers_or_deep_nesting_is_refused_with_400(
    client, local_stripe, body
):
    _assert_refused(post_signed(client, body), "invalid_body")


def test_a_signed_thin_event_with_created_as_iso_text_is_stored(client, local_stripe):
    assert post_signed(client, json.dumps(_thin({}))).status_code == 200
    assert WebhookEvent.objects.get().stripe_created.isoformat() == "2026-11-21T10:00:00+00:00"


@pytest.mark.parametrize(
    ("event_type", "obj"),
    [
        # The payload's own copy used to be read when it could not be fetched: a list as customer
        # raised TypeError in the worker, a missing id KeyError.
        ("checkout.session.completed", {"object": "x", "status": "complete", "customer": [1]}),
        ("customer.subscription.updated", {"object": "x", "status": "active", "customer": {"id": 5}}),
        ("invoice.payment_failed", {"object": "invoice", "status": "open", "customer": 7}),
        ("invoice.payment_failed", {"object": "subscription", "id": "sub_1", "customer": "cus_1"}),
        ("payment_method.attached", {"object": "payment_method", "id": "", "customer": True}),
    ],
)
def test_a_signed_event_whose_object_cannot_be_fetched_is_ignored_not_a_crashed_task(
    client, local_stripe, event_type, obj
):
    from stripe_sync.webhooks import webhook_event_process

    event = {
        "object": "event",
        "id": "evt_odd",
        "type": event_type,
        "created": 1_700_000_000,
        "data": {"object": obj},
    }
    assert post_signed(client, event).status_code == 200
    stored = webhook_event_process(event_id=WebhookEvent.objects.get().pk)
    assert stored.status == WebhookEvent.Status.IGNORED
    assert "nothing to fetch from Stripe" in stored.result


def test_every_snapshot_handler_names_the_kind_of_object_it_fetches():
    from stripe_sync import webhooks

    assert set(webhooks._OBJECT_KINDS) == set(webhooks._HANDLERS)
    assert set(webhooks._OBJECT_KINDS.values()) <= set(webhooks._RETRIEVE)
