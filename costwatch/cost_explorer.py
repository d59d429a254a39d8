"""Cost Explorer requests: daily costs grouped by service and tenant tag, and the month-end forecast.

https://docs.aws.amazon.com/aws-cost-management/latest/APIReference/API_GetCostAndUsage.html
https://docs.aws.amazon.com/aws-cost-management/latest/APIReference/API_GetCostForecast.html
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from botocore.exceptions import ClientError

from core.aws import AwsError, RequestCounter, aws_call, aws_client, error_code
from costwatch.conf import CostwatchConfig

# Cost Explorer has one endpoint, in us-east-1, whatever the account's regions.
COST_EXPLORER_REGION = "us-east-1"

ACCESS_HINT = (
    "enable Cost Explorer for the account (Billing console) and allow ce:GetCostAndUsage "
    "and ce:GetCostForecast"
)


@dataclass(frozen=True)
class CostRow:
    day: date
    service: str
    tag_value: str  # "" when the cost carries no tenant tag
    amount: Decimal
    currency: str


@dataclass
class CostWindow:
    """What Cost Explorer said about [start, end): one row per (day, service, tag value)."""

    start: date
    end: date
    rows: dict[tuple[date, str, str], CostRow] = field(default_factory=dict)
    estimated_days: set[date] = field(default_factory=set)
    pages: int = 0


class CostExplorer:
    """One run's Cost Explorer client; `counter.count` is the number of billed requests sent."""

    def __init__(self, *, config: CostwatchConfig) -> None:
        self.config = config
        self.counter = RequestCounter()
        self.client = aws_client(
            "ce", region=COST_EXPLORER_REGION, read_timeout=config.aws_timeout, counter=self.counter
        )

    def daily_costs(self, *, start: date, end: date) -> CostWindow:
        """Daily costs of [start, end) by service and tenant tag, every page followed."""
        window = CostWindow(start=start, end=end)
        request = {
            "TimePeriod": {"Start": start.isoformat(), "End": end.isoformat()},
            "Granularity": "DAILY",
            "Metrics": [self.config.metric],
            "GroupBy": [
                {"Type": "DIMENSION", "Key": "SERVICE"},
                {"Type": "TAG", "Key": self.config.tag_key},
            ],
        }
        token = None
        while True:
            page_request = {**request, "NextPageToken": token} if token else request
            page = aws_call(
                lambda r=page_request: self.client.get_cost_and_usage(**r),
                what="Cost Explorer GetCostAndUsage",
                access_hint=ACCESS_HINT,
            )
            window.pages += 1
            for result in page.get("ResultsByTime", []):
                day = date.fromisoformat(result["TimePeriod"]["Start"])
                if result.get("Estimated"):
                    window.estimated_days.add(day)
                for group in result.get("Groups", []):
                    service, tag = group["Keys"]
                    # Tag groups come back as "<key>$<value>"; "<key>$" is the cost with no such tag.
                    tag_value = tag.partition("$")[2]
                    metric = group["Metrics"][self.config.metric]
                    window.rows[(day, service, tag_value)] = CostRow(
                        day=day,
                        service=service,
                        tag_value=tag_value,
                        amount=Decimal(metric["Amount"]),
                        currency=(metric.get("Unit") or self.config.currency).upper(),
                    )
            token = page.get("NextPageToken")
            if not token:
                return window

    def forecast(self, *, start: date, end: date, expression: dict | None) -> tuple[Decimal | None, str]:
        """AWS's forecast of [start, end) for the scope, or None and why there is none."""
        request = {
            "TimePeriod": {"Start": start.isoformat(), "End": end.isoformat()},
            "Metric": self.config.forecast_metric,
            "Granularity": "MONTHLY",
        }
        if expression:
            request["Filter"] = expression
        try:
            answer = aws_call(
                lambda: self.client.get_cost_forecast(**request),
                what="Cost Explorer GetCostForecast",
                access_hint=ACCESS_HINT,
            )
        except AwsError as exc:
            return None, str(exc)
        except ClientError as exc:
            # DataUnavailableException: too little history to forecast (a new account or tag).
            return None, f"Cost Explorer gave no forecast ({error_code(exc) or 'error'})"
        total = answer.get("Total") or {}
        if "Amount" not in total:
            return None, "Cost Explorer gave no forecast (empty answer)"
        return Decimal(total["Amount"]), ""
