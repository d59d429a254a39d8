from datetime import UTC

import factory
from django.utils import timezone

from outbound.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookMessage


class WebhookEndpointFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WebhookEndpoint

    url = factory.Sequence(lambda n: f"https://hooks.example.com/{n}")
    event_types = factory.LazyFunction(lambda: ["*"])


class WebhookMessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WebhookMessage

    type = "tenant.created"
    key = factory.Sequence(lambda n: f"test-message-{n}")
    created_at = factory.Faker("date_time_this_year", tzinfo=UTC)
    payload = factory.LazyAttribute(
        lambda m: {"type": m.type, "timestamp": m.created_at.isoformat(), "data": {"tenant": "acme"}}
    )


class WebhookDeliveryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WebhookDelivery

    endpoint = factory.SubFactory(WebhookEndpointFactory)
    message = factory.SubFactory(WebhookMessageFactory)
    next_attempt_at = factory.LazyFunction(timezone.now)


class WebhookAttemptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WebhookAttempt

    delivery = factory.SubFactory(WebhookDeliveryFactory)
    number = 1
    attempted_at = factory.LazyFunction(timezone.now)
    status_code = 500
    latency_ms = 42
    error = "HTTP 500"
