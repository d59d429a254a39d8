"""apigateway's business gauge on /metrics, read from the database at each scrape (registered in
core.metrics.business_gauges by ApiGatewayConfig.ready)."""

from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily

from apigateway.models import UsagePlanPlacement


def usage_plan_placements(now):
    """Tenants' API Gateway keys by placement status: failed and pending ones are out of place."""
    gauge = GaugeMetricFamily(
        "billing_usage_plan_placements",
        "Tenants' API Gateway keys by usage plan placement status (in_place, pending, failed).",
        labels=["status"],
    )
    counts = dict.fromkeys(UsagePlanPlacement.Status.values, 0)
    for row in UsagePlanPlacement.objects.order_by().values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    for status, count in sorted(counts.items()):
        gauge.add_metric([status], count)
    yield gauge
