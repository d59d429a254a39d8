"""End to end: a publish commits, a real Celery worker (Redis) sends the delivery, and the receiving
app verifies it with the standardwebhooks library."""

import time

import pytest
from standardwebhooks import Webhook

from outbound.models import WebhookDelivery
from outbound.services import webhook_event_publish
from outbound.tests.factories import WebhookEndpointFactory


def _wait_for(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up after {timeout}s")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_worker_sends_the_committed_message(celery_worker_process, receiver):
    endpoint = WebhookEndpointFactory(url=receiver.url, event_types=["payment.failed"])

    message = webhook_event_publish(
        type="payment.failed", data={"invoice": "in_worker", "amount_due": 1250}, key="worker:in_worker"
    )

    delivery = _wait_for(lambda: WebhookDelivery.objects.filter(message=message, status="succeeded").first())
    [request] = receiver.requests
    payload = Webhook(endpoint.secret).verify(request.body, request.headers)
    assert payload["data"] == {"invoice": "in_worker", "amount_due": 1250}
    assert request.headers["webhook-id"] == message.public_id
    assert (delivery.attempts, delivery.last_status_code) == (1, 200)
