import json
import urllib.request
from datetime import date
from decimal import Decimal

import pytest
from djstripe.models import Customer

from core import aws as core_aws
from core.tests.support import sns_topic
from stripe_sync.tests.factories import CustomerFactory
from tenants.tests.factories import TenantFactory
from tests.aws_proxy import AwsProxy

TAG_KEY = "tenant"


@pytest.fixture
def cost_explorer(aws, aws_proxy, monkeypatch, settings):
    """AWS (moto behind the test proxy) for Costwatch, with fast backoff and fresh settings."""
    aws_proxy.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_proxy.url)
    monkeypatch.setattr(core_aws, "BACKOFF_SECONDS", (0.01, 0.01, 0.01))
    settings.COSTWATCH_SNS_TOPIC_ARN = ""
    settings.OPERATOR_EMAILS = []
    settings.COSTWATCH_METRIC = "UnblendedCost"
    settings.COSTWATCH_TENANT_TAG_KEY = TAG_KEY
    settings.COSTWATCH_CURRENCY = "USD"
    settings.COSTWATCH_RESTATEMENT_DAYS = 3
    settings.COSTWATCH_ANOMALY_FACTOR = "3"
    settings.COSTWATCH_ANOMALY_MIN_DAILY_COST = "1"
    return CostExplorerControl(aws_proxy, aws)


class CostExplorerControl:
    def __init__(self, proxy: AwsProxy, moto_url: str) -> None:
        self.proxy = proxy
        self.moto_url = moto_url

    def queue(self, *pages: dict) -> None:
        """Queue GetCostAndUsage answers in moto: each new request (body) takes the next one."""
        request = urllib.request.Request(  # noqa: S310 - the local moto server
            f"{self.moto_url}/moto-api/static/ce/cost-and-usage-results",
            data=json.dumps({"results": list(pages)}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - local moto
            assert response.status == 201

    def usage_requests(self) -> list[dict]:
        return self.proxy.operations("GetCostAndUsage")

    def forecast_requests(self) -> list[dict]:
        return self.proxy.operations("GetCostForecast")


def page(costs: dict, *, estimated=(), token: str | None = None) -> dict:
    """A GetCostAndUsage answer: {date: [(service, tag value or "", amount), ...]}."""
    results = []
    for day, groups in sorted(costs.items()):
        results.append(
            {
                "TimePeriod": {
                    "Start": day.isoformat(),
                    "End": date.fromordinal(day.toordinal() + 1).isoformat(),
                },
                "Total": {},
                "Groups": [
                    {
                        "Keys": [service, f"{TAG_KEY}${tag}"],
                        "Metrics": {"UnblendedCost": {"Amount": str(amount), "Unit": "USD"}},
                    }
                    for service, tag, amount in groups
                ],
                "Estimated": day in estimated,
            }
        )
    answer = {"ResultsByTime": results, "DimensionValueAttributes": []}
    if token:
        answer["NextPageToken"] = token
    return answer


def month_days(first: date, last: date, groups) -> dict:
    return {date.fromordinal(n): list(groups) for n in range(first.toordinal(), last.toordinal() + 1)}


@pytest.fixture
def sns_queue(cost_explorer, settings):
    """A moto SNS topic (COSTWATCH_SNS_TOPIC_ARN) with an SQS queue subscribed; returns its reader
    (`at`: read at that frozen time)."""
    topic = sns_topic("costwatch-alerts", region="us-east-1")
    settings.COSTWATCH_SNS_TOPIC_ARN = topic.arn
    return topic.messages


def stripe_customer_for(tenant, customer_id: str) -> Customer:
    customer = CustomerFactory(id=customer_id)
    tenant.stripe_customer = customer
    tenant.save(update_fields=["stripe_customer"])
    return customer


@pytest.fixture
def acme(db):
    return TenantFactory(slug="acme", name="Acme")


D = Decimal
