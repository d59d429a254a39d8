"""API Gateway as a usage source: each key's daily request counts (GetUsage) as usage events.

For every configured usage plan, GetUsage gives per key one `[used, remaining]` entry per day (UTC)
of the asked range. A day's count is imported for the tenant whose `apigateway_key_id` is the key,
as events of the meter named by APIGATEWAY_USAGE_METER (a sum meter), through metering's ingestion
services (same checks, same idempotency table). ApiGatewayUsageDay keeps per (usage plan, key, day)
what was imported: when AWS reports more (the current day grows every hour; a past day may be
revised), the difference goes in as one more event, `apigw:<plan>:<key>:<day>:<n>` (deterministic, so
a run that dies after recording it and runs again is a duplicate), stamped inside that day; the
hours it lands in are aggregated again and only the difference reaches Stripe. A count that goes
down is recorded and logged, not imported (usage cannot be negative). Days older than ingestion's
window, keys of no tenant, and events that ingestion refuses are recorded on the row with why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apigateway.models import ApiGatewayUsageDay
from apigateway.services import (
    ACCESS_HINT,
    NOT_CONFIGURED,
    UsagePlansNotConfigured,
    apigateway_client,
    configured_usage_plans,
)
from core.aws import aws_call
from metering.ingest import (
    BACKFILL_WINDOW,
    EventsInvalid,
    UsageLimitExceeded,
    usage_events_record,
    usage_events_validate,
)
from metering.models import Meter
from tenants.models import Tenant

logger = logging.getLogger(__name__)

DEFAULT_DAYS = 2  # today and yesterday: the day AWS still counts and the one it may still revise
MAX_DAYS = 90
GET_USAGE_PAGE = 500  # keys per GetUsage page (its largest)
NOTE_LENGTH = 500


class UsageImportNotConfigured(Exception):
    """APIGATEWAY_USAGE_METER is unset or names no sum meter; the message says which."""


def usage_meter() -> Meter:
    code = settings.APIGATEWAY_USAGE_METER
    if not code:
        raise UsageImportNotConfigured(
            "APIGATEWAY_USAGE_METER is not set: name the (sum) meter that API Gateway's request counts go to"
        )
    meter = Meter.objects.filter(code=code).first()
    if meter is None:
        raise UsageImportNotConfigured(
            f"APIGATEWAY_USAGE_METER names no meter {code!r}: create it "
            f"(manage.py create_meter {code} --aggregation sum)"
        )
    if meter.aggregation != Meter.Aggregation.SUM:
        raise UsageImportNotConfigured(
            f"meter {code!r} (APIGATEWAY_USAGE_METER) aggregates by {meter.aggregation}; request counts "
            "need a sum meter"
        )
    return meter


@dataclass
class ImportResult:
    days: int = 0  # (usage plan, key, day) counts read, zero days of unknown rows left out
    events: int = 0
    requests: int = 0  # imported by this run
    unchanged: int = 0
    lowered: int = 0
    unknown_keys: int = 0
    too_old: int = 0
    refused: int = 0

    def summary(self) -> str:
        return (
            f"{self.days} key-day(s) read: {self.events} event(s) of {self.requests} request(s) imported, "
            f"{self.unchanged} unchanged, {self.lowered} lowered by AWS (not imported), "
            f"{self.unknown_keys} of keys of no tenant, {self.too_old} too old, "
            f"{self.refused} refused by ingestion"
        )


def _usage_pages(client, *, plan_id: str, start: date, end: date):
    """GetUsage's `items` ({key id: [[used, remaining], ...one per day]}), page by page."""
    position = None
    while True:
        params = {
            "usagePlanId": plan_id,
            "startDate": start.isoformat(),
            "endDate": end.isoformat(),
            "limit": GET_USAGE_PAGE,
        }
        if position:
            params["position"] = position
        page = aws_call(
            lambda params=params: client.get_usage(**params),
            what=f"API Gateway GetUsage ({plan_id})",
            access_hint=ACCESS_HINT,
        )
        yield page.get("items") or {}
        position = page.get("position")
        if not position:
            return


def apigateway_usage_import(*, days: int = DEFAULT_DAYS, now: datetime | None = None) -> ImportResult:
    """Import the last `days` days (today, UTC, included) of every configured usage plan.

    Raises UsagePlansNotConfigured, UsageImportNotConfigured, and AwsError / ClientError when AWS
    cannot be read (what was imported before the error stays)."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be 1 to {MAX_DAYS}")
    plans = configured_usage_plans()
    if not plans:
        raise UsagePlansNotConfigured(NOT_CONFIGURED)
    meter = usage_meter()
    now = now or timezone.now()
    end = now.astimezone(UTC).date()
    start = end - timedelta(days=days - 1)
    client = apigateway_client()
    result = ImportResult()
    for plan_id in plans:
        for items in _usage_pages(client, plan_id=plan_id, start=start, end=end):
            for key_id, daily in sorted(items.items()):
                for offset, entry in enumerate(daily or []):
                    day = start + timedelta(days=offset)
                    if day > end:
                        break
                    used = int(entry[0]) if entry else 0
                    usage_day_import(
                        plan_id=plan_id,
                        key_id=key_id,
                        day=day,
                        used=used,
                        meter=meter,
                        now=now,
                        result=result,
                    )
    return result


def _day_moment(day: date, now: datetime) -> datetime:
    """Where a day's difference is stamped: its last second, or now for the current day."""
    return min(now, datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC) - timedelta(seconds=1))


def usage_day_import(
    *, plan_id: str, key_id: str, day: date, used: int, meter: Meter, now: datetime, result: ImportResult
) -> ApiGatewayUsageDay | None:
    """Bring one (usage plan, key, day) up to `used`: ingest the difference, or record why not."""
    with transaction.atomic():
        row = (
            ApiGatewayUsageDay.objects.select_for_update()
            .filter(usage_plan_id=plan_id, key_id=key_id, day=day)
            .first()
        )
        if row is None:
            if used <= 0:
                return None  # a day without requests leaves no row
            row = ApiGatewayUsageDay(usage_plan_id=plan_id, key_id=key_id, day=day)
        result.days += 1
        if row.tenant_id is None:
            row.tenant = Tenant.objects.filter(apigateway_key_id=key_id).first()
        row.used = used
        difference = used - row.imported
        if row.tenant is None:
            row.status, row.note = (
                ApiGatewayUsageDay.Status.UNKNOWN_KEY,
                "no tenant has this API Gateway key id",
            )
            result.unknown_keys += 1
        elif difference < 0:
            row.status = ApiGatewayUsageDay.Status.LOWERED
            row.note = (
                f"AWS now reports {used} requests, {row.imported} were imported before: usage cannot be "
                "negative, the difference stays billed; check the key's usage at AWS"
            )
            result.lowered += 1
            logger.warning("API Gateway usage of key %s on %s went down: %s", key_id, day, row.note)
        elif difference == 0:
            row.status, row.note = ApiGatewayUsageDay.Status.IMPORTED, ""
            result.unchanged += 1
        elif (moment := _day_moment(day, now)) < now - BACKFILL_WINDOW:
            row.status = ApiGatewayUsageDay.Status.TOO_OLD
            row.note = f"{difference} request(s) not imported: older than ingestion's window"
            result.too_old += 1
        else:
            refused = _ingest(row, meter=meter, quantity=difference, moment=moment, now=now)
            if refused:
                row.status, row.note = ApiGatewayUsageDay.Status.REFUSED, refused[:NOTE_LENGTH]
                result.refused += 1
            else:
                row.imported, row.events = used, row.events + 1
                row.status, row.note = ApiGatewayUsageDay.Status.IMPORTED, ""
                result.events += 1
                result.requests += difference
        row.save()
    return row


def _ingest(row: ApiGatewayUsageDay, *, meter: Meter, quantity: int, moment: datetime, now: datetime) -> str:
    """Record one usage event of `quantity`; "" when stored (or stored before), else why it was refused."""
    payload = {
        "id": f"apigw:{row.usage_plan_id}:{row.key_id}:{row.day.isoformat()}:{row.events + 1}",
        "meter": meter.code,
        "quantity": str(quantity),
        "timestamp": moment.isoformat(),
        "properties": {"source": "apigateway", "usage_plan": row.usage_plan_id, "day": row.day.isoformat()},
    }
    try:
        valid = usage_events_validate(payload=payload, now=now, tenant=row.tenant)
    except EventsInvalid as invalid:
        return "; ".join(
            f"{name}: {' '.join(messages)}"
            for problems in invalid.errors.values()
            for name, messages in problems.items()
        )
    try:
        usage_events_record(tenant=row.tenant, events=valid, now=now)
    except UsageLimitExceeded as exceeded:  # the plan's hard limit refuses it; tried again next run
        return str(exceeded)
    return ""
