"""Costwatch's settings, read and checked when a check runs: a bad value is one line naming it."""

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from django.conf import settings

# Cost Explorer's money metrics, and GetCostForecast's name for each.
FORECAST_METRICS = {
    "UnblendedCost": "UNBLENDED_COST",
    "BlendedCost": "BLENDED_COST",
    "AmortizedCost": "AMORTIZED_COST",
    "NetUnblendedCost": "NET_UNBLENDED_COST",
    "NetAmortizedCost": "NET_AMORTIZED_COST",
}
# The anomaly baseline: the mean of this many days before the day judged.
ANOMALY_WINDOW_DAYS = 7


class CostwatchConfigError(ValueError):
    """A COSTWATCH_* setting has a value the check cannot use."""


@dataclass(frozen=True)
class CostwatchConfig:
    metric: str
    forecast_metric: str
    tag_key: str
    currency: str
    anomaly_factor: Decimal
    anomaly_min_daily_cost: Decimal
    restatement_days: int
    aws_timeout: float


def _decimal(name: str) -> Decimal:
    raw = getattr(settings, name)
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise CostwatchConfigError(f"{name} must be a number, got {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise CostwatchConfigError(f"{name} must be a number of at least 0, got {raw!r}")
    return value


def costwatch_config() -> CostwatchConfig:
    metric = settings.COSTWATCH_METRIC
    if metric not in FORECAST_METRICS:
        raise CostwatchConfigError(
            f"COSTWATCH_METRIC must be one of {', '.join(FORECAST_METRICS)}, got {metric!r}"
        )
    if not settings.COSTWATCH_TENANT_TAG_KEY:
        raise CostwatchConfigError("COSTWATCH_TENANT_TAG_KEY must name the cost allocation tag of tenants")
    currency = settings.COSTWATCH_CURRENCY.upper()
    if len(currency) != 3 or not currency.isalpha():
        raise CostwatchConfigError(f"COSTWATCH_CURRENCY must be a 3-letter code, got {currency!r}")
    if settings.COSTWATCH_RESTATEMENT_DAYS < 0:
        raise CostwatchConfigError("COSTWATCH_RESTATEMENT_DAYS must be at least 0")
    factor = _decimal("COSTWATCH_ANOMALY_FACTOR")
    if factor <= 1:
        raise CostwatchConfigError(f"COSTWATCH_ANOMALY_FACTOR must be above 1, got {factor}")
    return CostwatchConfig(
        metric=metric,
        forecast_metric=FORECAST_METRICS[metric],
        tag_key=settings.COSTWATCH_TENANT_TAG_KEY,
        currency=currency,
        anomaly_factor=factor,
        anomaly_min_daily_cost=_decimal("COSTWATCH_ANOMALY_MIN_DAILY_COST"),
        restatement_days=settings.COSTWATCH_RESTATEMENT_DAYS,
        aws_timeout=float(settings.COSTWATCH_AWS_TIMEOUT),
    )
