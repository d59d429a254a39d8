"""API Gateway (moto behind tests/aws_proxy.py) with two usage plans, FREE_10K and METERED, for the
usage plan tests of any app (stripe_sync's webhook tests use it too)."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import date

from celery import current_app

from core import aws as core_aws
from core.aws import aws_client
from tests.aws_proxy import AwsProxy


class UsagePlans:
    """The two usage plans at moto, named in the settings, and what the tests do with them."""

    def __init__(self, proxy: AwsProxy) -> None:
        self.proxy = proxy
        self.client = aws_client("apigateway")
        self.free = self.client.create_usage_plan(name="FREE_10K", quota={"limit": 10000, "period": "MONTH"})[
            "id"
        ]
        self.metered = self.client.create_usage_plan(
            name="METERED", throttle={"rateLimit": 50.0, "burstLimit": 100}
        )["id"]

    def key(self, name: str = "customer") -> str:
        """A new API key at API Gateway; returns its id."""
        return self.client.create_api_key(name=name, enabled=True)["id"]

    def plans_of(self, key_id: str) -> set[str]:
        """The usage plans holding the key, as API Gateway lists them (GetUsagePlanKeys)."""
        return {
            plan_id
            for plan_id in (self.free, self.metered)
            if key_id
            in {item["id"] for item in self.client.get_usage_plan_keys(usagePlanId=plan_id)["items"]}
        }

    def put(self, key_id: str, plan_id: str) -> None:
        """Put the key in a usage plan by hand (drift)."""
        self.client.create_usage_plan_key(usagePlanId=plan_id, keyId=key_id, keyType="API_KEY")

    def requests(self, operation: str) -> list[dict]:
        return self.proxy.operations(operation)

    def usage(self, plan_id: str, key_id: str, day: date, used: int) -> None:
        """What GetUsage reports for the key on that day."""
        self.proxy.usage_set(plan_id, key_id, day, used, max(10000 - used, 0))


def usage_plans_start(*, aws_proxy: AwsProxy, monkeypatch, settings) -> UsagePlans:
    """moto behind the proxy (reset), the plans in the settings, fast AWS retries."""
    aws_proxy.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_proxy.url)
    # One HTTP request per aws_call attempt and short pauses between them: a fault of 2 requests
    # fails a whole aws_call (its retries spent).
    monkeypatch.setattr(core_aws, "BOTO_MAX_ATTEMPTS", 1)
    monkeypatch.setattr(core_aws, "BACKOFF_SECONDS", (0.01,))
    plans = UsagePlans(aws_proxy)
    settings.APIGATEWAY_USAGE_PLAN_FREE = plans.free
    settings.APIGATEWAY_USAGE_PLAN_METERED = plans.metered
    return plans


@contextmanager
def eager_celery():
    """The placement task runs in this process when queued after commit (its retries too, at once)."""
    conf = current_app.conf
    previous = conf.task_always_eager, conf.task_eager_propagates
    conf.task_always_eager, conf.task_eager_propagates = True, False  # False: eager retries run at once
    try:
        yield
    finally:
        conf.task_always_eager, conf.task_eager_propagates = previous
