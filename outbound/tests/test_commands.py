"""create_webhook_endpoint and deliver_webhooks: their output and their one-line errors."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from standardwebhooks import Webhook

from outbound.models import WebhookDelivery, WebhookEndpoint
from outbound.tests.factories import WebhookDeliveryFactory, WebhookEndpointFactory

pytestmark = pytest.mark.django_db


def run(*args) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip().splitlines()


def test_create_webhook_endpoint_prints_the_signing_secret_last(settings):
    settings.WEBHOOKS_ALLOW_HTTP = False
    lines = run(
        "create_webhook_endpoint",
        "https://app.example.com/hooks/billing",
        "--events",
        "tenant.created, payment.failed",
        "--description",
        "our app",
    )
    endpoint = WebhookEndpoint.objects.get()
    assert lines[-1] == endpoint.secret
    assert lines[-1].startswith("whsec_")
    Webhook(lines[-1])  # a secret every Standard Webhooks library accepts
    assert endpoint.event_types == ["tenant.created", "payment.failed"]
    assert (endpoint.url, endpoint.description, endpoint.enabled) == (
        "https://app.example.com/hooks/billing",
        "our app",
        True,
    )


def test_all_subscribes_to_every_type():
    run("create_webhook_endpoint", "https://app.example.com/h", "--events", "all")
    assert WebhookEndpoint.objects.get().event_types == ["*"]


def test_an_unknown_event_type_is_one_clear_error():
    with pytest.raises(CommandError, match=r"Unknown event type 'tenant\.exploded'") as error:
        run("create_webhook_endpoint", "https://app.example.com/h", "--events", "tenant.exploded")
    assert "\n" not in str(error.value)
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://app.example.com/h", "must use https"),
        ("ftp://app.example.com/h", "http:// or https://"),
        ("not a url", "http:// or https://"),
    ],
)
def test_a_bad_url_is_refused(settings, url, message):
    settings.WEBHOOKS_ALLOW_HTTP = False
    with pytest.raises(CommandError, match=message):
        run("create_webhook_endpoint", url, "--events", "all")
    assert not WebhookEndpoint.objects.exists()


def test_plain_http_is_accepted_when_allowed(settings):
    settings.WEBHOOKS_ALLOW_HTTP = True
    run("create_webhook_endpoint", "http://127.0.0.1:8001/hooks", "--events", "all")
    assert WebhookEndpoint.objects.get().url == "http://127.0.0.1:8001/hooks"


def test_deliver_webhooks_sends_what_is_due_and_prints_counts(receiver):
    endpoint = WebhookEndpointFactory(url=receiver.url)
    WebhookDeliveryFactory(endpoint=endpoint)
    WebhookDeliveryFactory(endpoint=WebhookEndpointFactory(url="http://127.0.0.1:9/closed"))

    assert run("deliver_webhooks") == ["sent 2: 1 succeeded, 1 failed"]
    assert run("deliver_webhooks") == ["sent 0: 0 succeeded, 0 failed"]  # the retry is not due yet
    assert run("deliver_webhooks", "--all") == ["sent 1: 0 succeeded, 1 failed"]
    assert len(receiver.requests) == 1
    assert WebhookDelivery.objects.get(endpoint=endpoint).status == "succeeded"


def test_deliver_webhooks_refuses_a_bad_limit():
    with pytest.raises(CommandError, match="--limit"):
        run("deliver_webhooks", "--limit", "0")
