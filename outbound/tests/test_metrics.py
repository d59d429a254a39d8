from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from outbound.tests.factories import WebhookDeliveryFactory, WebhookEndpointFactory

pytestmark = pytest.mark.django_db
TOKEN = "metrics-token-for-tests-0123456789"


def scrape(client, settings) -> dict:
    settings.METRICS_TOKEN = TOKEN
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_the_gauges_show_open_deliveries_the_overdue_one_and_disabled_endpoints(client, settings):
    now = timezone.now()
    endpoint = WebhookEndpointFactory()
    WebhookDeliveryFactory(endpoint=endpoint, next_attempt_at=now - timedelta(minutes=10))
    WebhookDeliveryFactory(endpoint=endpoint, status="failed", next_attempt_at=now + timedelta(hours=2))
    WebhookDeliveryFactory(endpoint=endpoint, status="succeeded")
    # Waiting for a disabled endpoint: open, but nobody should be sending it.
    WebhookDeliveryFactory(
        endpoint=WebhookEndpointFactory(enabled=False), next_attempt_at=now - timedelta(days=3)
    )

    samples = scrape(client, settings)

    assert samples[("billing_outgoing_webhook_deliveries_open", (("status", "pending"),))] == 2
    assert samples[("billing_outgoing_webhook_deliveries_open", (("status", "failed"),))] == 1
    assert 9 * 60 < samples[("billing_outgoing_webhook_oldest_due_age_seconds", ())] < 11 * 60
    assert samples[("billing_outgoing_webhook_endpoints_disabled", ())] == 1
    assert samples[("billing_business_metrics_up", ())] == 1
