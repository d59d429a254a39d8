"""/metrics counts tenants' API Gateway keys by placement status (failed and pending: out of place)."""

import pytest

from apigateway.tests.factories import UsagePlanPlacementFactory
from core.tests.test_metrics import scrape

pytestmark = pytest.mark.django_db


@pytest.fixture
def metrics_token(settings):
    from core.tests.test_metrics import TOKEN

    settings.METRICS_TOKEN = TOKEN


def test_placements_are_counted_by_status(client, metrics_token):
    UsagePlanPlacementFactory(status="failed")
    UsagePlanPlacementFactory(status="failed")
    UsagePlanPlacementFactory(status="in_place")
    samples = scrape(client)
    assert samples[("billing_usage_plan_placements", (("status", "failed"),))] == 2
    assert samples[("billing_usage_plan_placements", (("status", "in_place"),))] == 1
    assert samples[("billing_usage_plan_placements", (("status", "pending"),))] == 0
