"""Sending: signatures any Standard Webhooks library verifies, the retry schedule, auto-disable, replay,
and one attempt per claim however many senders run."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from freezegun import freeze_time
from kombu.exceptions import OperationalError
from standardwebhooks import Webhook, WebhookVerificationError

from conftest import beat_task, run_at_once
from outbound import tasks
from outbound.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from outbound.services import (
    MAX_ATTEMPTS,
    RETRY_DELAYS,
    ROTATION_OVERLAP,
    lease,
    webhook_deliveries_send_due,
    webhook_delivery_replay,
    webhook_delivery_send,
    webhook_endpoint_create,
    webhook_endpoint_rotate_secret,
    webhook_event_publish,
)
from outbound.tests.factories import WebhookDeliveryFactory, WebhookEndpointFactory

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_a_delivery_is_signed_so_standardwebhooks_verifies_it(receiver):
    endpoint = WebhookEndpointFactory(url=receiver.url, event_types=["tenant.created"])
    message = webhook_event_publish(
        type="tenant.created", data={"slug": "acme", "name": "Acme"}, key="tenant:1:created"
    )

    assert webhook_deliveries_send_due().succeeded == 1

    [request] = receiver.requests
    payload = Webhook(endpoint.secret).verify(request.body, request.headers)
    assert payload["type"] == "tenant.created"
    assert payload["data"] == {"slug": "acme", "name": "Acme"}
    assert request.headers["webhook-id"] == message.public_id
    assert request.headers["content-type"] == "application/json"
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("succeeded", 1, 200)
    assert delivery.last_latency_ms is not None
    attempt = WebhookAttempt.objects.get()
    assert (attempt.succeeded, attempt.status_code, attempt.response_excerpt) == (True, 200, '{"ok": true}')


def test_another_secret_does_not_verify(receiver):
    WebhookEndpointFactory(url=receiver.url)
    webhook_event_publish(type="tenant.created", data={}, key="k")
    webhook_deliveries_send_due()
    [request] = receiver.requests
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(WebhookEndpoint().secret).verify(request.body, request.headers)


def test_after_a_rotation_both_secrets_verify_for_a_day(receiver):
    endpoint = WebhookEndpointFactory(url=receiver.url)
    old_secret = endpoint.secret
    with freeze_time(T0) as clock:
        new_secret = webhook_endpoint_rotate_secret(endpoint=endpoint)
        WebhookDeliveryFactory(endpoint=endpoint)
        webhook_deliveries_send_due()
        [during] = receiver.requests
        for secret in (old_secret, new_secret):
            Webhook(secret).verify(during.body, during.headers)

        clock.tick(ROTATION_OVERLAP)
        WebhookDeliveryFactory(endpoint=endpoint)
        webhook_deliveries_send_due()
        after = receiver.requests[1]
        Webhook(new_secret).verify(after.body, after.headers)
        with pytest.raises(WebhookVerificationError, match="No matching signature"):
            Webhook(old_secret).verify(after.body, after.headers)


def test_a_failing_endpoint_is_retried_on_the_schedule_then_given_up(receiver):
    receiver.statuses = [500]
    WebhookEndpointFactory(url=receiver.url)
    with freeze_time(T0) as clock:
        webhook_event_publish(type="payment.failed", data={"invoice": "in_1"}, key="in_1:failed")
        attempt_times = []
        for delay in (timedelta(0), *RETRY_DELAYS):
            clock.tick(delay - timedelta(seconds=1))
            assert webhook_deliveries_send_due().sent == 0, "sent before it was due"
            clock.tick(timedelta(seconds=1))
            assert webhook_deliveries_send_due().sent == 1
            attempt_times.append(datetime.now(UTC))
        clock.tick(timedelta(days=2))
        assert webhook_deliveries_send_due().sent == 0

    expected, at = [], T0
    for delay in (timedelta(0), *RETRY_DELAYS):
        at += delay
        expected.append(at)
    assert attempt_times == expected
    assert expected[-1] - T0 >= timedelta(hours=24)
    assert len(receiver.requests) == MAX_ATTEMPTS == 8
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1, "one message id on every retry"
    assert len({r.headers["webhook-timestamp"] for r in receiver.requests}) == 8, "each attempt signed anew"
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("gave_up", 8, 500)
    assert delivery.next_attempt_at is None
    assert list(WebhookAttempt.objects.values_list("number", "status_code")) == [
        (n, 500) for n in range(1, 9)
    ]


def test_a_redirect_is_a_failure_and_is_not_followed(receiver):
    receiver.statuses = [302]
    WebhookDeliveryFactory(endpoint=WebhookEndpointFactory(url=receiver.url))
    webhook_deliveries_send_due()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.last_status_code) == ("failed", 302)
    assert "redirect, not followed" in delivery.last_error
    assert len(receiver.requests) == 1


def test_a_long_answer_is_kept_only_in_part(receiver):
    receiver.answer_body = b"x" * 100_000
    WebhookDeliveryFactory(endpoint=WebhookEndpointFactory(url=receiver.url))
    webhook_deliveries_send_due()
    attempt = WebhookAttempt.objects.get()
    assert attempt.succeeded
    assert len(attempt.response_excerpt) == WebhookAttempt.RESPONSE_EXCERPT_CHARS


def test_an_endpoint_slower_than_the_timeout_is_a_failure(receiver, settings):
    settings.WEBHOOKS_TIMEOUT = 0.2
    receiver.delay = 1.0
    WebhookDeliveryFactory(endpoint=WebhookEndpointFactory(url=receiver.url))
    webhook_deliveries_send_due()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.last_status_code) == ("failed", None)
    assert "Timeout" in delivery.last_error


def test_an_unreachable_endpoint_is_a_failure_with_its_error(settings):
    settings.WEBHOOKS_ALLOW_HTTP = True
    WebhookDeliveryFactory(endpoint=WebhookEndpointFactory(url="http://127.0.0.1:9/nothing-listens"))
    webhook_deliveries_send_due()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed"
    assert delivery.last_status_code is None
    assert "ConnectionError" in delivery.last_error
    assert delivery.endpoint.__class__.objects.get().failing_since is not None


def test_a_success_resets_the_endpoints_failure_clock(receiver):
    endpoint = WebhookEndpointFactory(url=receiver.url, failing_since=T0)
    WebhookDeliveryFactory(endpoint=endpoint)
    webhook_deliveries_send_due()
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None
    assert endpoint.last_success_at is not None


def test_an_endpoint_failing_for_days_is_disabled_with_its_reason(receiver, settings):
    settings.WEBHOOKS_DISABLE_AFTER_DAYS = 5
    receiver.statuses = [503]
    endpoint = WebhookEndpointFactory(url=receiver.url)
    with freeze_time(T0) as clock:
        WebhookDeliveryFactory(endpoint=endpoint)
        webhook_deliveries_send_due()
        endpoint.refresh_from_db()
        assert (endpoint.enabled, endpoint.failing_since) == (True, T0)

        clock.tick(timedelta(days=4, hours=23))
        WebhookDeliveryFactory(endpoint=endpoint)
        webhook_deliveries_send_due()
        endpoint.refresh_from_db()
        assert endpoint.enabled

        clock.tick(timedelta(hours=1))
        WebhookDeliveryFactory(endpoint=endpoint)
        webhook_deliveries_send_due()
        endpoint.refresh_from_db()
        assert not endpoint.enabled
        assert endpoint.disabled_at == T0 + timedelta(days=5)
        assert "HTTP 503" in endpoint.disabled_reason
        assert "5 days" in endpoint.disabled_reason

        # A disabled endpoint gets nothing: neither retries nor new messages.
        sent = len(receiver.requests)
        clock.tick(timedelta(days=1))
        webhook_event_publish(type="tenant.created", data={}, key="after-disable")
        assert webhook_deliveries_send_due().sent == 0
        assert len(receiver.requests) == sent


def test_a_sweep_with_a_time_budget_starts_nothing_after_it(receiver):
    endpoint = WebhookEndpointFactory(url=receiver.url)
    for _ in range(3):
        WebhookDeliveryFactory(endpoint=endpoint)
    assert webhook_deliveries_send_due(seconds=0).sent == 0
    assert webhook_deliveries_send_due(seconds=60).sent == 3


def test_replay_sends_the_message_again_with_the_same_id(receiver):
    delivery = WebhookDeliveryFactory(endpoint=WebhookEndpointFactory(url=receiver.url))
    webhook_deliveries_send_due()

    replay = webhook_delivery_replay(delivery=delivery)
    webhook_deliveries_send_due()

    replay.refresh_from_db()
    assert (replay.trigger, replay.status) == ("replay", "succeeded")
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery.message.public_id
    assert first.body == second.body


def test_a_delivery_held_by_a_sender_that_died_is_sent_once_its_lease_runs_out(receiver, settings):
    settings.WEBHOOKS_TIMEOUT = 15
    endpoint = WebhookEndpointFactory(url=receiver.url)
    with freeze_time(T0) as clock:
        # A sender claimed it (attempt 1) and was killed before recording anything.
        WebhookDeliveryFactory(endpoint=endpoint, attempts=1, leased_until=T0 + lease(), next_attempt_at=T0)
        assert webhook_deliveries_send_due().sent == 0
        clock.tick(lease() + timedelta(seconds=1))
        assert webhook_deliveries_send_due().sent == 1
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.leased_until) == ("succeeded", 2, None)
    assert len(receiver.requests) == 1


def test_a_delivery_that_is_not_due_or_done_is_not_sent(receiver):
    endpoint = WebhookEndpointFactory(url=receiver.url)
    later = WebhookDeliveryFactory(endpoint=endpoint, next_attempt_at=T0 + timedelta(days=365))
    done = WebhookDeliveryFactory(endpoint=endpoint, status="succeeded")
    with freeze_time(T0):
        assert webhook_delivery_send(delivery_id=later.pk) is None
        assert webhook_delivery_send(delivery_id=done.pk) is None
        assert webhook_deliveries_send_due(include_not_due=True).sent == 1
    assert len(receiver.requests) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_sweeps_send_each_delivery_once(receiver, monkeypatch):
    # Only the sweeps send here: the per-delivery task each publish queues after commit would reach a
    # worker that another test left serving the broker and send some deliveries first.
    queued = []
    monkeypatch.setattr(tasks.deliver_webhook, "apply_async", lambda args, **kw: queued.append(args[0]))
    endpoint = WebhookEndpointFactory(url=receiver.url)
    for n in range(30):
        webhook_event_publish(type="tenant.created", data={"n": n}, key=f"concurrent-{n}")

    assert len(queued) == 30
    results = run_at_once(webhook_deliveries_send_due, 4)

    assert sum(result.sent for result in results) == 30
    assert sorted(r.json()["data"]["n"] for r in receiver.requests) == list(range(30))
    assert set(WebhookDelivery.objects.filter(endpoint=endpoint).values_list("status", "attempts")) == {
        ("succeeded", 1)
    }


def test_a_broker_that_is_down_loses_nothing(receiver, monkeypatch, django_capture_on_commit_callbacks):
    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to redis")

    monkeypatch.setattr(tasks.deliver_webhook, "apply_async", broker_down)
    WebhookEndpointFactory(url=receiver.url)
    with django_capture_on_commit_callbacks(execute=True):
        message = webhook_event_publish(type="tenant.suspended", data={"slug": "acme"}, key="k-broker")
    assert message is not None
    assert WebhookDelivery.objects.get().status == "pending"

    assert tasks.deliver_due_webhooks.apply().get() == 1  # the Beat sweep
    assert [r.json()["type"] for r in receiver.requests] == ["tenant.suspended"]


def test_the_task_queued_after_commit_sends_the_delivery(
    receiver, monkeypatch, django_capture_on_commit_callbacks
):
    queued = []
    monkeypatch.setattr(tasks.deliver_webhook, "apply_async", lambda args, **kw: queued.append(args[0]))
    WebhookEndpointFactory(url=receiver.url)
    with django_capture_on_commit_callbacks(execute=True):
        webhook_event_publish(type="tenant.created", data={}, key="k-task")
    assert queued == [WebhookDelivery.objects.get().pk]

    assert tasks.deliver_webhook.apply(args=(queued[0],)).get() == "succeeded"
    assert tasks.deliver_webhook.apply(args=(queued[0],)).get() is None  # done: a second run sends nothing
    assert len(receiver.requests) == 1


def test_the_sweep_runs_every_minute():
    task = beat_task("outbound.deliver_due_webhooks")
    assert (task.enabled, task.interval.every, task.interval.period) == (True, 60, "seconds")


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/",
    ],
)
def test_a_link_local_multicast_or_unspecified_url_is_refused(url):
    with pytest.raises(ValidationError, match="link-local"):
        webhook_endpoint_create(url=url, event_types=["tenant.created"])


def test_a_name_that_resolves_to_the_metadata_address_is_not_sent_to(monkeypatch, receiver):
    # Accepted when made (the name resolved elsewhere then), refused at the attempt.
    WebhookDeliveryFactory(endpoint=WebhookEndpointFactory(url="http://hooks.example.test/in"))
    monkeypatch.setattr(
        "outbound.services.socket.getaddrinfo",
        lambda *args, **kwargs: [(2, 1, 6, "", ("169.254.169.254", 80))],
    )
    webhook_deliveries_send_due()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed"
    assert "refused: hooks.example.test is, or resolves to, 169.254.169.254" in delivery.last_error
    assert receiver.requests == []
