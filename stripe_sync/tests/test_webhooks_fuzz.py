"""Hypothesis fuzzing of POST /api/v1/stripe/webhook: whatever the body and headers, the endpoint
answers 200 or a 4xx in the API's error shape, never a 5xx; nothing is stored unless the delivery
is signed with the endpoint's secret; and a stored event's processing fails only because Stripe
refused a call (never on the payload's shape)."""

import contextlib
import json

import pytest
import stripe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import STRIPE_TEST_WEBHOOK_SECRET
from stripe_sync.models import WebhookEvent
from stripe_sync.tests.webhook_support import URL
from stripe_sync.webhooks import HANDLED_EVENT_TYPES, webhook_event_process
from tests.stripe_server import StripeServer

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Now and then NUL, unpaired surrogates and other strings that have bitten.
bad_text = st.sampled_from(["\x00", "\ud800", "a\udfffb", "9999-12-31T23:00:00-05:00", ""]) | st.text(
    st.characters(codec=None, categories=None), max_size=5
)
numbers = (
    st.integers()
    | st.sampled_from([10**20, -(10**20), 2**63, 253402300800, -62135596801, 0, 1_700_000_000])
    | st.floats(allow_nan=True, allow_infinity=True)
)


def _json(text, numbers):
    return st.recursive(
        st.none() | st.booleans() | numbers | text,
        lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
        max_leaves=12,
    )


# Text PostgreSQL can store: no NUL, and (codec utf-8) no unpaired surrogates, which Hypothesis's
# characters() does generate without a codec.
clean_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
clean_json = _json(clean_text, st.integers() | st.floats(allow_nan=False, allow_infinity=False))
json_values = _json(st.text(max_size=20) | bad_text, numbers)


def mostly_clean(strategy):
    """`strategy` three times in four, else any JSON value: so most events get past the first
    checks and the fuzzing reaches what comes after them."""
    return st.one_of(strategy, strategy, strategy, json_values)


kinds = st.sampled_from(["customer", "subscription", "invoice", "payment_method", "checkout.session", "x"])
event_objects = st.fixed_dictionaries(
    {},
    optional={
        "id": mostly_clean(st.just("cus_fuzz") | st.text(max_size=20)),
        "object": mostly_clean(kinds),
        "customer": mostly_clean(clean_json),
        "status": mostly_clean(clean_json),
        "other": mostly_clean(clean_json),
    },
)
events = st.fixed_dictionaries(
    {
        "object": mostly_clean(st.sampled_from(["event", "v2.core.event"])),
        "id": mostly_clean(st.builds(lambda n: f"evt_fuzz_{n}", st.integers(0, 10**9))),
        "type": mostly_clean(st.sampled_from(HANDLED_EVENT_TYPES)),
    },
    optional={
        "created": mostly_clean(st.integers(946684800, 4133980799) | numbers | st.text(max_size=30)),
        "livemode": mostly_clean(st.booleans()),
        "api_version": mostly_clean(st.text(max_size=20)),
        "data": mostly_clean(st.fixed_dictionaries({"object": event_objects})),
        "related_object": mostly_clean(st.fixed_dictionaries({"id": st.text(max_size=20)}) | clean_json),
        "extra": mostly_clean(clean_json),
    },
)


def _post(client, body: bytes | str, signature):
    headers = {} if signature is None else {"HTTP_STRIPE_SIGNATURE": signature}
    return client.post(URL, data=body, content_type="application/json", **headers)


def _assert_not_a_server_error(response):
    assert response.status_code in (200, 400, 413), response.content
    if response.status_code != 200:
        assert set(response.json()["error"]) == {"code", "message"}


random_headers = (
    st.none() | bad_text | st.text(max_size=200) | st.binary(max_size=60).map(lambda b: b.decode("latin-1"))
)


@FUZZ
@given(body=st.binary(max_size=200) | json_values.map(json.dumps), signature=random_headers)
def test_unsigned_random_bodies_and_headers_are_refused_and_nothing_is_stored(
    client, local_stripe, body, signature
):
    _assert_not_a_server_error(response := _post(client, body, signature))
    assert response.status_code != 200
    assert not WebhookEvent.objects.exists()


@FUZZ
@given(event=events, deep=st.integers(0, 9))
def test_signed_random_events_are_stored_or_refused_never_a_server_error(client, local_stripe, event, deep):
    body = json.dumps(event, default=str)  # ASCII: surrogates and NUL travel as \\u escapes
    if deep == 9:  # 5,000 levels: more than Python's decoder can recurse
        body = body[:-1] + ', "deep": ' + "[" * 5000 + "]" * 5000 + "}"
    before = set(WebhookEvent.objects.values_list("stripe_id", flat=True))
    response = _post(client, body, StripeServer.sign(body, STRIPE_TEST_WEBHOOK_SECRET))
    _assert_not_a_server_error(response)
    after = set(WebhookEvent.objects.values_list("stripe_id", flat=True))
    if response.status_code != 200:
        assert after == before
        return
    stored = WebhookEvent.objects.get(stripe_id=response.json()["id"])
    assert after - before <= {stored.stripe_id}
    # Stripe may refuse a call (the random object does not exist there): the task retries later.
    with contextlib.suppress(stripe.StripeError):
        webhook_event_process(event_id=stored.pk)
    stored.refresh_from_db()
    assert stored.status in (*WebhookEvent.FINAL_STATUSES, WebhookEvent.Status.FAILED)
    if stored.status == WebhookEvent.Status.FAILED:
        assert "stripe." in stored.error, stored.error


snapshot_events = st.fixed_dictionaries(
    {
        "object": st.just("event"),
        "id": st.builds(lambda n: f"evt_snap_{n}", st.integers(0, 10**9)),
        "type": st.sampled_from(HANDLED_EVENT_TYPES),
        "created": st.integers(946684800, 4133980799),
        "data": st.fixed_dictionaries(
            {
                "object": st.fixed_dictionaries(
                    {"object": kinds},
                    optional={
                        "id": clean_text,
                        # Read from the payload's copy when the object cannot be fetched again.
                        "customer": st.one_of(st.just("cus_fuzz"), clean_json),
                        "status": st.one_of(
                            st.sampled_from(["active", "complete", "succeeded", "paid"]), clean_json
                        ),
                    },
                )
            }
        ),
    },
    optional={"livemode": st.booleans(), "api_version": clean_text, "extra": clean_json},
)


@FUZZ
@given(event=snapshot_events)
def test_signed_well_formed_events_of_every_handled_type_are_processed_or_fail_only_at_stripe(
    client, local_stripe, event
):
    body = json.dumps(event)
    response = _post(client, body, StripeServer.sign(body, STRIPE_TEST_WEBHOOK_SECRET))
    assert response.status_code == 200, response.content
    stored = WebhookEvent.objects.get(stripe_id=event["id"])
    with contextlib.suppress(stripe.StripeError):
        webhook_event_process(event_id=stored.pk)
    stored.refresh_from_db()
    assert stored.status in (*WebhookEvent.FINAL_STATUSES, WebhookEvent.Status.FAILED)
    if stored.status == WebhookEvent.Status.FAILED:
        assert "stripe." in stored.error, stored.error
