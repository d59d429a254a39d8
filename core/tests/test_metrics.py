import json
from datetime import timedelta
from decimal import Decimal

import pytest
from celery import Celery
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from stripe_sync.models import UsageReport, WebhookEvent
from stripe_sync.tests.factories import CircuitBreakerFactory, UsageReportFactory, WebhookEventFactory

pytestmark = pytest.mark.django_db
TOKEN = "metrics-token-for-tests-0123456789"


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client) -> dict:
    """{(name, labels as a sorted tuple): value} from an authorized GET /metrics."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def counter(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def post_events(client, body, **extra):
    return client.post("/api/v1/events", json.dumps(body), content_type="application/json", **extra)


def test_metrics_is_a_404_when_no_token_is_configured(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 404


def test_metrics_is_open_to_loopback_in_debug_without_a_token(client, settings):
    settings.METRICS_TOKEN = ""
    settings.DEBUG = True
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 404


def test_metrics_needs_the_bearer_token(client, metrics_token):
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Api-Key {metrics_token}").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}").status_code == 200


def test_ingestion_counts_accepted_duplicate_and_rejected_events(
    client, tenant_client, api_client, api_calls, metrics_token
):
    before = scrape(client)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    batch = {"events": [{"id": "e1", "meter": "api_calls"}, {"id": "e2", "meter": "api_calls"}]}
    assert post_events(tenant_client, batch).status_code == 202
    assert post_events(tenant_client, {"id": "e1", "meter": "api_calls"}).status_code == 202
    assert post_events(tenant_client, {"id": "e3", "meter": "nope"}).status_code == 400
    assert post_events(api_client, {"id": "e4", "meter": "api_calls"}).status_code == 401
    not_json = tenant_client.post("/api/v1/events", "{", content_type="application/json")
    assert not_json.status_code == 400
    text = tenant_client.post("/api/v1/events", "id=e5", content_type="text/plain")
    assert text.status_code == 415
    too_large = tenant_client.post(
        "/api/v1/events", "x", content_type="application/json", CONTENT_LENGTH=str(2 * 1024 * 1024)
    )
    assert too_large.status_code == 413

    after = scrape(client)
    assert delta("billing_ingest_events_total", outcome="accepted") == 2
    assert delta("billing_ingest_events_total", outcome="duplicate") == 1
    assert delta("billing_ingest_rejected_requests_total", reason="validation") == 1
    assert delta("billing_ingest_rejected_requests_total", reason="unauthenticated") == 1
    assert delta("billing_ingest_rejected_requests_total", reason="malformed_json") == 1
    assert delta("billing_ingest_rejected_requests_total", reason="unsupported_media") == 1
    assert delta("billing_ingest_rejected_requests_total", reason="too_large") == 1
    assert delta("billing_ingest_request_duration_seconds_count") == 7


def test_rate_limited_ingestion_is_counted(tenant_client, api_calls, settings):
    settings.INGEST_RATE_LIMIT = "1/h"
    before = counter("billing_ingest_rejected_requests_total", reason="rate_limited")
    assert post_events(tenant_client, {"id": "r1", "meter": "api_calls"}).status_code == 202
    assert post_events(tenant_client, {"id": "r2", "meter": "api_calls"}).status_code == 429
    assert counter("billing_ingest_rejected_requests_total", reason="rate_limited") == before + 1


def _report(tenant, meter, n, status, age):
    now = timezone.now()
    report = UsageReportFactory(
        tenant=tenant,
        meter=meter,
        hour=now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=n),
        revision=1,
        identifier=f"metrics-test-{n}",
        quantity=Decimal(1),
        value=1,
        customer_id="cus_test",
        event_name="api_calls",
        timestamp=now,
        status=status,
    )
    UsageReport.objects.filter(pk=report.pk).update(created_at=now - age)


def test_business_gauges_reflect_the_outbox_inbox_and_circuit_breaker(
    client, tenant, api_calls, metrics_token
):
    _report(tenant, api_calls, 1, UsageReport.Status.PENDING, timedelta(minutes=30))
    _report(tenant, api_calls, 2, UsageReport.Status.PENDING, timedelta(minutes=5))
    _report(tenant, api_calls, 3, UsageReport.Status.SENT, timedelta(hours=2))
    _report(tenant, api_calls, 4, UsageReport.Status.FAILED, timedelta(hours=3))
    received = WebhookEventFactory(stripe_id="evt_1", type="invoice.paid", payload={})
    WebhookEvent.objects.filter(pk=received.pk).update(received_at=timezone.now() - timedelta(minutes=10))
    WebhookEventFactory(stripe_id="evt_2", type="invoice.paid", payload={}, status="processed")
    CircuitBreakerFactory(name="stripe", open_until=timezone.now() + timedelta(minutes=5))

    samples = scrape(client)

    assert samples[("billing_usage_reports", (("status", "pending"),))] == 2
    assert samples[("billing_usage_reports", (("status", "failed"),))] == 1
    assert ("billing_usage_reports", (("status", "sent"),)) not in samples  # counted by the sender
    assert 29 * 60 < samples[("billing_usage_report_oldest_pending_age_seconds", ())] < 31 * 60
    assert samples[("billing_webhook_events_unprocessed", (("status", "received"),))] == 1
    assert ("billing_webhook_events_unprocessed", (("status", "processed"),)) not in samples
    assert 9 * 60 < samples[("billing_webhook_oldest_unprocessed_age_seconds", ())] < 11 * 60
    assert samples[("billing_stripe_circuit_open", (("name", "stripe"),))] == 1
    assert samples[("billing_business_metrics_up", ())] == 1


def test_business_gauges_are_zero_when_nothing_waits(client, metrics_token):
    samples = scrape(client)
    assert samples[("billing_usage_reports", (("status", "pending"),))] == 0
    assert samples[("billing_usage_report_oldest_pending_age_seconds", ())] == 0
    assert samples[("billing_webhook_oldest_unprocessed_age_seconds", ())] == 0


@pytest.fixture
def eager_app():
    app = Celery("metrics-test", set_as_current=False)
    app.conf.task_always_eager = True

    @app.task(name="metrics_test.ok")
    def ok():
        return 1

    @app.task(name="metrics_test.boom")
    def boom():
        raise ValueError("boom")

    @app.task(name="metrics_test.again", bind=True, max_retries=1, default_retry_delay=0)
    def again(self):
        raise self.retry(exc=RuntimeError("later"))

    return ok, boom, again


def test_celery_task_outcomes_are_counted_by_task_name(eager_app):
    ok, boom, again = eager_app
    before = {
        outcome: counter("billing_celery_tasks_total", task=name, outcome=outcome)
        for name, outcome in [
            ("metrics_test.ok", "succeeded"),
            ("metrics_test.boom", "failed"),
            ("metrics_test.again", "retried"),
        ]
    }
    ok.apply()
    boom.apply()
    again.apply()

    assert (
        counter("billing_celery_tasks_total", task="metrics_test.ok", outcome="succeeded")
        == before["succeeded"] + 1
    )
    assert (
        counter("billing_celery_tasks_total", task="metrics_test.boom", outcome="failed")
        == before["failed"] + 1
    )
    assert (
        counter("billing_celery_tasks_total", task="metrics_test.again", outcome="retried")
        >= before["retried"] + 1
    )
    assert counter("billing_celery_task_duration_seconds_count", task="metrics_test.ok") >= 1


def test_the_ingest_view_keeps_its_openapi_description(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert schema["paths"]["/api/v1/events"]["post"]["summary"] == "Record usage events"
