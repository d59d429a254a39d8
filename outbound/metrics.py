"""Outgoing webhooks' business gauges on /metrics, read from the database at each scrape (registered in
core.metrics.business_gauges by OutboundConfig.ready)."""

from django.db.models import Count, Min
from prometheus_client.core import GaugeMetricFamily

from core.metrics import gauge_age
from outbound.models import WebhookDelivery, WebhookEndpoint


def webhook_deliveries(now):
    """Open deliveries by status, the age of the oldest one due, and the disabled endpoints."""
    open_deliveries = WebhookDelivery.objects.order_by().filter(status__in=WebhookDelivery.OPEN_STATUSES)
    family = GaugeMetricFamily(
        "billing_outgoing_webhook_deliveries_open",
        "Outgoing webhook deliveries not finished: pending (not tried) and failed (will retry).",
        labels=["status"],
    )
    counts = dict.fromkeys(WebhookDelivery.OPEN_STATUSES, 0)
    for row in open_deliveries.values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    for status, count in sorted(counts.items()):
        family.add_metric([status], count)
    yield family
    # Due and on an enabled endpoint: what a worker should be sending now (uses the sweep's index).
    oldest_due = open_deliveries.filter(next_attempt_at__lte=now, endpoint__enabled=True).aggregate(
        oldest=Min("next_attempt_at")
    )["oldest"]
    yield GaugeMetricFamily(
        "billing_outgoing_webhook_oldest_due_age_seconds",
        "How long the most overdue outgoing webhook delivery has been due; 0 when none is.",
        value=gauge_age(now, oldest_due),
    )
    yield GaugeMetricFamily(
        "billing_outgoing_webhook_endpoints_disabled",
        "Outgoing webhook endpoints disabled (by hand or after failing for days).",
        value=WebhookEndpoint.objects.filter(enabled=False).count(),
    )
