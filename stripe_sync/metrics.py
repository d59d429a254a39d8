"""stripe_sync's business gauges on /metrics, read from the database at each scrape (registered in
core.metrics.business_gauges by StripeSyncConfig.ready)."""

from django.db.models import Count, Min
from prometheus_client.core import GaugeMetricFamily

from core.metrics import gauge_age
from stripe_sync.models import CircuitBreaker, UsageReport, WebhookEvent


def usage_reports(now):
    """Usage reports waiting (pending, failed) and the age of the oldest pending one."""
    reports = GaugeMetricFamily(
        "billing_usage_reports", "Usage reports (Stripe outbox rows) by status.", labels=["status"]
    )
    # Only the actionable states: the table only grows, and these two have partial indexes
    # (sent rows are counted by billing_stripe_reports_total in the processes that send them).
    actionable = (UsageReport.Status.PENDING, UsageReport.Status.FAILED)
    counts = dict.fromkeys(actionable, 0)
    for row in (
        UsageReport.objects.filter(status__in=actionable).order_by().values("status").annotate(n=Count("id"))
    ):
        counts[row["status"]] = row["n"]
    for status, count in sorted(counts.items()):
        reports.add_metric([status], count)
    yield reports
    oldest = UsageReport.objects.filter(status=UsageReport.Status.PENDING).aggregate(
        oldest=Min("created_at")
    )["oldest"]
    yield GaugeMetricFamily(
        "billing_usage_report_oldest_pending_age_seconds",
        "Age of the oldest pending usage report; 0 when none is pending.",
        value=gauge_age(now, oldest),
    )


def webhook_events(now):
    """Webhook events not processed yet, by status, and the webhook lag."""
    waiting = WebhookEvent.objects.order_by().exclude(status__in=WebhookEvent.FINAL_STATUSES)
    unprocessed = GaugeMetricFamily(
        "billing_webhook_events_unprocessed",
        "Stripe webhook events received and not (yet) processed, by status.",
        labels=["status"],
    )
    counts = {status: 0 for status in WebhookEvent.Status.values if status not in WebhookEvent.FINAL_STATUSES}
    for row in waiting.values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    for status, count in sorted(counts.items()):
        unprocessed.add_metric([status], count)
    yield unprocessed
    oldest = waiting.aggregate(oldest=Min("received_at"))["oldest"]
    yield GaugeMetricFamily(
        "billing_webhook_oldest_unprocessed_age_seconds",
        "Age of the oldest webhook event not yet processed (webhook lag); 0 when none waits.",
        value=gauge_age(now, oldest),
    )


def circuit_breakers(now):
    """1 per circuit breaker around Stripe while it is open."""
    family = GaugeMetricFamily(
        "billing_stripe_circuit_open", "1 while a circuit breaker around Stripe is open.", labels=["name"]
    )
    for name, open_until in CircuitBreaker.objects.values_list("name", "open_until"):
        family.add_metric([name], 1 if open_until is not None and open_until > now else 0)
    yield family
