"""Billing meters and meter events through stripe-python, as the usage reporter will use them."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import stripe

from .conftest import API_KEY


@pytest.fixture
def customer(client):
    return client.v1.customers.create(params={"email": "t42@example.com", "metadata": {"tenant_id": "42"}})


@pytest.fixture
def meter(client):
    return client.v1.billing.meters.create(
        params={
            "display_name": "API calls",
            "event_name": "api_calls",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )


def send(client, customer, value="1", identifier=None, timestamp=None, event_name="api_calls"):
    params = {"event_name": event_name, "payload": {"stripe_customer_id": customer.id, "value": value}}
    if identifier is not None:
        params["identifier"] = identifier
    if timestamp is not None:
        params["timestamp"] = timestamp
    return client.v1.billing.meter_events.create(params=params)


def hour_start(ts: int) -> int:
    return ts - ts % 3600


def test_meter_create_retrieve_list_and_deactivate(client, stripe_server, meter):
    assert meter.object == "billing.meter"
    assert meter.id.startswith("mtr_")
    assert meter.status == "active"
    assert meter.default_aggregation.formula == "sum"
    assert meter.customer_mapping.event_payload_key == "stripe_customer_id"
    assert meter.value_settings.event_payload_key == "value"
    assert client.v1.billing.meters.retrieve(meter.id).event_name == "api_calls"
    assert [m.id for m in client.v1.billing.meters.list(params={"status": "active"}).data] == [meter.id]

    deactivated = client.v1.billing.meters.deactivate(meter.id)
    assert deactivated.status == "inactive"
    assert deactivated.status_transitions.deactivated_at is not None
    assert client.v1.billing.meters.list(params={"status": "active"}).data == []
    assert [e["type"] for e in stripe_server.events()] == [
        "billing.meter.created",
        "billing.meter.deactivated",
    ]


def test_meter_rejects_a_bad_formula_and_a_taken_event_name(client, meter):
    with pytest.raises(stripe.InvalidRequestError) as bad:
        client.v1.billing.meters.create(
            params={"display_name": "x", "event_name": "other", "default_aggregation": {"formula": "avg"}}
        )
    assert bad.value.param == "default_aggregation[formula]"
    assert "must be one of" in bad.value.user_message
    with pytest.raises(stripe.InvalidRequestError) as taken:
        client.v1.billing.meters.create(
            params={"display_name": "x", "event_name": "api_calls", "default_aggregation": {"formula": "sum"}}
        )
    assert taken.value.param == "event_name"


def test_meter_event_is_accepted_and_counted(client, stripe_server, customer, meter):
    now = stripe_server.now()
    event = send(client, customer, "5", identifier="t42:api_calls:h1:r1", timestamp=now)
    assert event.object == "billing.meter_event"
    assert event.identifier == "t42:api_calls:h1:r1"
    assert event.payload["value"] == "5"
    assert event.timestamp == now
    [record] = stripe_server.meter_events()
    assert (record.customer, record.meter, record.value) == (customer.id, meter.id, Decimal(5))
    assert stripe_server.meter_totals() == {(customer.id, "api_calls", hour_start(now)): Decimal(5)}


def test_repeat_identifier_within_24_hours_is_refused(client, stripe_server, customer, meter):
    send(client, customer, "5", identifier="same-id")
    with pytest.raises(stripe.InvalidRequestError) as dup:
        send(client, customer, "5", identifier="same-id")
    assert dup.value.http_status == 400
    assert dup.value.user_message == "An event already exists with identifier same-id."
    assert dup.value.json_body["error"]["type"] == "invalid_request_error"
    assert len(stripe_server.meter_events()) == 1

    stripe_server.advance_time(24 * 3600 + 1)
    send(client, customer, "5", identifier="same-id")
    assert len(stripe_server.meter_events()) == 2


def test_timestamp_window(client, stripe_server, customer, meter):
    now = stripe_server.now()
    send(client, customer, identifier="edge-past", timestamp=now - 35 * 86400 + 60)
    send(client, customer, identifier="edge-future", timestamp=now + 240)
    with pytest.raises(stripe.InvalidRequestError) as old:
        send(client, customer, identifier="too-old", timestamp=now - 36 * 86400)
    assert old.value.code == "timestamp_too_far_in_past"
    assert old.value.param == "timestamp"
    assert "35 calendar days" in old.value.user_message
    with pytest.raises(stripe.InvalidRequestError) as future:
        send(client, customer, identifier="too-new", timestamp=now + 600)
    assert future.value.code == "timestamp_in_future"
    assert "5 minutes in the future" in future.value.user_message
    assert {r.identifier for r in stripe_server.meter_events()} == {"edge-past", "edge-future"}


def test_unknown_customer_and_unknown_or_inactive_event_name(client, stripe_server, customer, meter):
    with pytest.raises(stripe.InvalidRequestError) as nobody:
        client.v1.billing.meter_events.create(
            params={"event_name": "api_calls", "payload": {"stripe_customer_id": "cus_missing", "value": "1"}}
        )
    assert nobody.value.code == "meter_event_customer_not_found"
    assert nobody.value.param == "payload[stripe_customer_id]"
    with pytest.raises(stripe.InvalidRequestError) as no_key:
        client.v1.billing.meter_events.create(params={"event_name": "api_calls", "payload": {"value": "1"}})
    assert no_key.value.code == "meter_event_no_customer_defined"
    assert no_key.value.user_message == "Customer mapping key stripe_customer_id not found in payload."
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        send(client, customer, event_name="nothing_like_it")
    assert unknown.value.code == "no_meter"
    client.v1.billing.meters.deactivate(meter.id)
    with pytest.raises(stripe.InvalidRequestError) as inactive:
        send(client, customer)
    assert inactive.value.code == "archived_meter"
    assert stripe_server.meter_events() == []


def test_values_must_be_whole_numbers_by_default(client, stripe_server, customer, meter):
    for bad in ("1.5", "abc", "", "1e3"):
        with pytest.raises(stripe.InvalidRequestError) as err:
            send(client, customer, bad)
        assert err.value.code == "meter_event_invalid_value", bad
        assert err.value.param == "payload[value]"
    send(client, customer, "-3", identifier="negative")  # a correction: Stripe accepts negative values
    send(client, customer, "10", identifier="ten")
    assert stripe_server.usage(customer.id, "api_calls") == Decimal(7)


def test_decimal_mode_follows_the_current_reference(client, stripe_server, customer, meter):
    stripe_server.configure(meter_value_mode="decimal")
    send(client, customer, "0.25", identifier="quarter")
    with pytest.raises(stripe.InvalidRequestError) as err:
        send(client, customer, "1.2345678901234567", identifier="long")
    assert err.value.code == "meter_event_value_too_many_digits"
    assert stripe_server.usage(customer.id, "api_calls") == Decimal("0.25")


def test_v1_async_mode_accepts_and_reports_later(client, stripe_server, customer, meter):
    stripe_server.configure(v1_meter_event_validation="async")
    event = client.v1.billing.meter_events.create(
        params={"event_name": "api_calls", "payload": {"stripe_customer_id": "cus_gone", "value": "1"}}
    )
    assert event.object == "billing.meter_event"
    assert stripe_server.meter_events() == []
    [error] = stripe_server.meter_errors
    assert error["code"] == "meter_event_customer_not_found"
    [report] = stripe_server.v2_events("v1.billing.meter.error_report_triggered")
    assert report["related_object"]["id"] == meter.id


def test_adjustment_cancels_an_event_within_24_hours(client, stripe_server, customer, meter):
    send(client, customer, "5", identifier="keep")
    send(client, customer, "7", identifier="oops")
    adjustment = client.v1.billing.meter_event_adjustments.create(
        params={"event_name": "api_calls", "type": "cancel", "cancel": {"identifier": "oops"}}
    )
    assert adjustment.object == "billing.meter_event_adjustment"
    assert adjustment.cancel.identifier == "oops"
    assert adjustment.type == "cancel"
    assert stripe_server.usage(customer.id, "api_calls") == Decimal(5)
    assert [r.identifier for r in stripe_server.meter_events(include_canceled=True) if r.canceled] == ["oops"]
    with pytest.raises(stripe.InvalidRequestError):
        send(client, customer, "7", identifier="oops")  # the identifier stays taken

    stripe_server.advance_time(24 * 3600 + 1)
    with pytest.raises(stripe.InvalidRequestError) as late:
        client.v1.billing.meter_event_adjustments.create(
            params={"event_name": "api_calls", "type": "cancel", "cancel": {"identifier": "keep"}}
        )
    assert "within 24 hours" in late.value.user_message
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.billing.meter_event_adjustments.create(params={"event_name": "api_calls", "type": "cancel"})
    assert missing.value.code == "parameter_missing"


def test_event_summaries_per_hour_with_each_formula(client, stripe_server, customer):
    now = stripe_server.now()
    h0 = hour_start(now) - 3 * 3600
    meters = {}
    for formula in ("sum", "count", "last"):
        meters[formula] = client.v1.billing.meters.create(
            params={
                "display_name": formula,
                "event_name": f"m_{formula}",
                "default_aggregation": {"formula": formula},
            }
        )
        for i, (offset, value) in enumerate([(10, "4"), (20, "6"), (3600 + 5, "1"), (7200 + 1, "9")]):
            send(
                client,
                customer,
                value,
                identifier=f"{formula}-{i}",
                timestamp=h0 + offset,
                event_name=f"m_{formula}",
            )

    def summaries(formula, **extra):
        params = {"customer": customer.id, "start_time": h0, "end_time": h0 + 4 * 3600, **extra}
        return client.v1.billing.meters.event_summaries.list(meters[formula].id, params=params)

    hourly = summaries("sum", value_grouping_window="hour")
    assert hourly.object == "list"
    assert hourly.url == f"/v1/billing/meters/{meters['sum'].id}/event_summaries"
    assert [(s.start_time - h0, s.end_time - h0, s.aggregated_value) for s in hourly.data] == [
        (0, 3600, 10),
        (3600, 7200, 1),
        (7200, 10800, 9),
    ]
    assert all(s.object == "billing.meter_event_summary" and s.meter == meters["sum"].id for s in hourly.data)
    assert [s.aggregated_value for s in summaries("count", value_grouping_window="hour").data] == [2, 1, 1]
    assert [s.aggregated_value for s in summaries("last", value_grouping_window="hour").data] == [6, 1, 9]
    [whole] = summaries("sum").data
    assert (whole.start_time, whole.end_time, whole.aggregated_value) == (h0, h0 + 4 * 3600, 20)

    with pytest.raises(stripe.InvalidRequestError) as misaligned:
        client.v1.billing.meters.event_summaries.list(
            meters["sum"].id,
            params={
                "customer": customer.id,
                "start_time": h0 + 60,
                "end_time": h0 + 3600,
                "value_grouping_window": "hour",
            },
        )
    assert misaligned.value.param == "start_time"
    with pytest.raises(stripe.InvalidRequestError) as no_customer:
        client.v1.billing.meters.event_summaries.list(
            meters["sum"].id, params={"start_time": h0, "end_time": h0 + 60}
        )
    assert no_customer.value.param == "customer"


def test_v2_meter_event_stream_with_a_session_token(client, stripe_server, customer, meter):
    session = client.v2.billing.meter_event_session.create()
    assert session.object == "v2.billing.meter_event_session"
    assert session.authentication_token
    assert session.expires_at > session.created  # RFC 3339 strings compare in time order
    stream = stripe.StripeClient(
        api_key=session.authentication_token,
        base_addresses={"api": stripe_server.url, "meter_events": stripe_server.url},
        max_network_retries=0,
    )
    now = stripe_server.now()
    events = [
        {
            "event_name": "api_calls",
            "identifier": f"batch-{i}",
            "timestamp": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
            "payload": {"stripe_customer_id": customer.id, "value": "2"},
        }
        for i in range(100)
    ]
    assert stream.v2.billing.meter_event_stream.create(params={"events": events}) is None
    [call] = stripe_server.requests_to("/v2/billing/meter_event_stream")
    assert call.status == 202
    assert call.headers["content-type"] == "application/json"
    assert call.headers["authorization"] == f"Bearer {session.authentication_token}"
    assert stripe_server.usage(customer.id, "api_calls") == Decimal(200)

    # A resend of the same identifiers is dropped silently; more than 100 events is refused.
    stream.v2.billing.meter_event_stream.create(params={"events": events[:10]})
    assert stripe_server.usage(customer.id, "api_calls") == Decimal(200)
    with pytest.raises(stripe.InvalidRequestError):
        stream.v2.billing.meter_event_stream.create(params={"events": events + events[:1]})

    # The stream takes session tokens only, and a session lasts 15 minutes.
    api_key_stream = stripe.StripeClient(
        api_key=API_KEY, base_addresses={"meter_events": stripe_server.url}, max_network_retries=0
    )
    with pytest.raises(stripe.AuthenticationError):
        api_key_stream.v2.billing.meter_event_stream.create(params={"events": events[:1]})
    stripe_server.advance_time(15 * 60 + 1)
    with pytest.raises(stripe.TemporarySessionExpiredError):
        stream.v2.billing.meter_event_stream.create(params={"events": events[:1]})


def test_stream_reports_bad_events_asynchronously(client, stripe_server, customer, meter, webhook_receiver):
    session = client.v2.billing.meter_event_session.create()
    stream = stripe.StripeClient(
        api_key=session.authentication_token,
        base_addresses={"meter_events": stripe_server.url},
        max_network_retries=0,
    )
    good = {
        "event_name": "api_calls",
        "identifier": "good",
        "payload": {"stripe_customer_id": customer.id, "value": "3"},
    }
    fraction = {
        "event_name": "api_calls",
        "identifier": "frac",
        "payload": {"stripe_customer_id": customer.id, "value": "0.5"},
    }
    stranger = {
        "event_name": "api_calls",
        "identifier": "nobody",
        "payload": {"stripe_customer_id": "cus_x", "value": "1"},
    }
    stream.v2.billing.meter_event_stream.create(params={"events": [good, fraction, stranger]})
    assert stripe_server.usage(customer.id, "api_calls") == Decimal(3)
    assert sorted(e["code"] for e in stripe_server.meter_errors) == [
        "meter_event_customer_not_found",
        "meter_event_invalid_value",
    ]
    [report] = stripe_server.v2_events("v1.billing.meter.error_report_triggered")
    assert report["data"]["reason"]["error_count"] == 2

    # The thin notification verifies with stripe-python and its event and meter can be fetched back.
    delivery = stripe_server.send_thin_webhook(webhook_receiver.url, report["id"], secret="whsec_thin")
    assert delivery.status == 200
    notification = client.parse_event_notification(delivery.payload, delivery.signature, "whsec_thin")
    assert notification.type == "v1.billing.meter.error_report_triggered"
    full = notification.fetch_event()
    assert full.data.reason.error_count == 2
    assert notification.fetch_related_object().id == meter.id


def test_stream_sync_validation_rejects_the_whole_batch(client, stripe_server, customer, meter):
    stripe_server.configure(stream_validation="sync")
    session = client.v2.billing.meter_event_session.create()
    stream = stripe.StripeClient(
        api_key=session.authentication_token,
        base_addresses={"meter_events": stripe_server.url},
        max_network_retries=0,
    )
    good = {"event_name": "api_calls", "payload": {"stripe_customer_id": customer.id, "value": "3"}}
    bad = {"event_name": "api_calls", "payload": {"stripe_customer_id": customer.id, "value": "x"}}
    with pytest.raises(stripe.InvalidRequestError) as err:
        stream.v2.billing.meter_event_stream.create(params={"events": [good, bad]})
    assert err.value.code == "meter_event_invalid_value"
    assert "events[1]" in err.value.user_message
    assert stripe_server.meter_events() == []


def test_v2_meter_events_and_adjustments(client, stripe_server, customer, meter):
    event = client.v2.billing.meter_events.create(
        params={
            "event_name": "api_calls",
            "identifier": "v2-1",
            "payload": {"stripe_customer_id": customer.id, "value": "4"},
        }
    )
    assert event.object == "v2.billing.meter_event"
    assert event.identifier == "v2-1"
    with pytest.raises(stripe.InvalidRequestError) as dup:
        client.v2.billing.meter_events.create(
            params={
                "event_name": "api_calls",
                "identifier": "v2-1",
                "payload": {"stripe_customer_id": customer.id, "value": "4"},
            }
        )
    assert dup.value.code == "duplicate_meter_event"
    adjustment = client.v2.billing.meter_event_adjustments.create(
        params={"event_name": "api_calls", "type": "cancel", "cancel": {"identifier": "v2-1"}}
    )
    assert adjustment.object == "v2.billing.meter_event_adjustment"
    assert adjustment.status == "pending"
    assert stripe_server.usage(customer.id, "api_calls") == Decimal(0)


def test_concurrent_calls_for_one_customer_and_meter_are_seen(client, stripe_server, customer, meter):
    stripe_server.delay_next(1, 0.3, path="/v1/billing/meter_events", when="after")
    errors = []

    def call(identifier):
        try:
            send(client, customer, "1", identifier=identifier)
        except stripe.StripeError as exc:  # pragma: no cover - only with reject_concurrent_meter_events
            errors.append(exc)

    first = threading.Thread(target=call, args=("slow",))
    first.start()
    time.sleep(0.1)
    call("fast")
    first.join()
    assert stripe_server.concurrent_meter_event_calls == [(customer.id, "api_calls")]
    assert errors == []

    stripe_server.configure(reject_concurrent_meter_events=True)
    stripe_server.delay_next(1, 0.3, path="/v1/billing/meter_events", when="after")
    first = threading.Thread(target=call, args=("slow-2",))
    first.start()
    time.sleep(0.1)
    with pytest.raises(stripe.APIError) as conflict:
        send(client, customer, "1", identifier="fast-2")
    first.join()
    assert conflict.value.http_status == 409
    assert conflict.value.json_body["error"]["code"] == "lock_timeout"
