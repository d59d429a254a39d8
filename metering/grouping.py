"""Usage grouped by event properties (OpenMeter's groupBy): `GET /api/v1/usage?group_by=region`.

Hourly aggregates keep no properties, so a grouped read goes back to the raw events: each hour's
value per group is computed as aggregation computes an hour (metering.aggregation: the meter's
filters and aggregation), a day's value is the sum of its hours' values. The groups of an hour
therefore add up to that hour's aggregate for count and sum meters. Raw events are pruned after
`RAW_EVENT_RETENTION`, so only hours from `group_by_horizon()` on can be grouped.
"""

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db.models import CharField, Count, F, Func, Max, QuerySet, Sum, Window
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast, RowNumber, TruncDay, TruncHour

from metering.aggregation import recompute_horizon
from metering.eventstore import event_store
from metering.ingest import value_path
from metering.models import Meter
from tenants.models import Tenant

MAX_GROUP_BY = 3
# Rows (one per hour, or day, and group) a grouped read may produce across its meters: a property
# with many distinct values (a user id) over a month would otherwise answer millions of points.
MAX_GROUPED_ROWS = 100_000
ADDITIVE = (Meter.Aggregation.COUNT, Meter.Aggregation.SUM)


class TooManyGroups(Exception):
    """The grouped read would produce more than `limit` (MAX_GROUPED_ROWS) rows."""

    def __init__(self, limit: int):
        super().__init__(limit)
        self.limit = limit


class PropertyText(Func):
    """An event property at a path (`("usage", "region")`) as text, NULL when missing or JSON null.

    Compared as text, as meter filters compare: 200 and "200" fall in one group. Django's
    KeyTextTransform gives the text "null" for a JSON null on SQLite (NULL on PostgreSQL), so both
    vendors are written out here; others fall back to it.
    """

    output_field = CharField()

    def __init__(self, path: tuple[str, ...]):
        self.path = path
        super().__init__(F("properties"))

    def as_postgresql(self, compiler, connection, **extra):
        lhs, params = compiler.compile(self.source_expressions[0])
        # `#>>` walks object keys by name (a key "0" too) and yields NULL for a JSON null.
        return f"({lhs} #>> %s)", (*params, list(self.path))

    def as_sqlite(self, compiler, connection, **extra):
        lhs, params = compiler.compile(self.source_expressions[0])
        json_path = "$" + "".join("." + json.dumps(key) for key in self.path)
        # JSON_EXTRACT gives 1/0 for true/false: spell them as PostgreSQL does.
        sql = (
            f"(CASE JSON_TYPE({lhs}, %s) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
            f"ELSE CAST(JSON_EXTRACT({lhs}, %s) AS TEXT) END)"
        )
        return sql, (*params, json_path, *params, json_path)

    def as_sql(self, compiler, connection, **extra):
        expression = F("properties")
        for key in self.path[:-1]:
            expression = KeyTransform(key, expression)
        text = Cast(KeyTextTransform(self.path[-1], expression), CharField())
        return compiler.compile(text.resolve_expression(compiler.query))


@dataclass(frozen=True)
class GroupedUsagePoint:
    meter: str
    start: datetime
    group: dict[str, str | None]
    value: Decimal
    events: int


def group_by_horizon(granularity: str) -> datetime:
    """The first hour (or UTC day) a grouped read may start at: every hour from it on still holds all
    of its raw events (the later of the latest prune's cutoff and `RAW_EVENT_RETENTION` ago, as
    for recomputes)."""
    horizon = recompute_horizon().astimezone(UTC)
    if granularity == "day" and horizon != horizon.replace(hour=0):
        return horizon.replace(hour=0) + timedelta(days=1)
    return horizon


def _value_expression(meter: Meter):
    # As metering.aggregation._hourly_values computes an hour (LATEST is read by a window below).
    if meter.aggregation == Meter.Aggregation.SUM:
        return Sum("quantity")
    if meter.aggregation == Meter.Aggregation.MAX:
        return Max("quantity")
    if meter.aggregation == Meter.Aggregation.UNIQUE_COUNT and meter.unique_property:
        return Count(Cast(KeyTextTransform(meter.unique_property, "properties"), CharField()), distinct=True)
    return Count("id")


def _rows(meter: Meter, events: QuerySet, groups: dict[str, PropertyText], trunc, limit: int) -> list[dict]:
    """[{"bucket", "g0".., "value", "events"}], one per bucket (hour, or day for additive meters) and
    group; at most `limit` + 1 of them."""
    bucket = trunc("timestamp")
    if meter.aggregation == Meter.Aggregation.LATEST:
        # The hour's last quantity per group: one window pass instead of a query per hour and group.
        partition = [bucket, *groups.values()]
        rows = (
            events.annotate(
                bucket=bucket,
                **groups,
                _rank=Window(
                    RowNumber(), partition_by=partition, order_by=[F("timestamp").desc(), F("id").desc()]
                ),
                events=Window(Count("id"), partition_by=partition),
            )
            .filter(_rank=1)
            .values("bucket", *groups, "events", value=F("quantity"))
            .order_by()
        )
    else:
        rows = (
            events.annotate(bucket=bucket, **groups)
            .values("bucket", *groups)
            .annotate(value=_value_expression(meter), events=Count("id"))
            .order_by()
        )
    return list(rows[: limit + 1])


def usage_series_by_group(
    *,
    tenant: Tenant,
    start: datetime,
    end: datetime,
    granularity: str,
    group_by: list[str],
    meter: Meter | None = None,
) -> list[GroupedUsagePoint]:
    """The tenant's usage in [start, end) per hour or UTC day and per value of the `group_by`
    properties (names or paths such as `usage.region`), from raw events: call it for ranges from
    `group_by_horizon()` on. One query per meter; raises TooManyGroups past MAX_GROUPED_ROWS rows."""
    groups = {f"g{index}": PropertyText(value_path(name)) for index, name in enumerate(group_by)}
    meters = [meter] if meter is not None else list(Meter.objects.prefetch_related("filters"))
    points: list[GroupedUsagePoint] = []
    for each in meters:
        events = event_store().meter_events_between(each, tenant_id=tenant.pk, start=start, end=end)
        # A day of a count or sum meter is the sum of its hours either way: let the database add.
        by_day_in_sql = granularity == "day" and each.aggregation in ADDITIVE
        trunc = TruncDay if by_day_in_sql else TruncHour
        rows = _rows(each, events, groups, trunc, MAX_GROUPED_ROWS - len(points))
        if len(points) + len(rows) > MAX_GROUPED_ROWS:
            raise TooManyGroups(MAX_GROUPED_ROWS)
        if granularity == "day" and not by_day_in_sql:
            rows = _sum_per_day(rows, list(groups))
        for row in rows:
            group = {name: row[f"g{index}"] for index, name in enumerate(group_by)}
            value = Decimal(row["value"] or 0)
            points.append(GroupedUsagePoint(each.code, row["bucket"], group, value, row["events"]))
    return sorted(points, key=_order)


def _sum_per_day(rows: list[dict], keys: list[str]) -> list[dict]:
    days: dict[tuple, list] = defaultdict(lambda: [Decimal(0), 0])
    for row in rows:
        day = row["bucket"].astimezone(UTC).replace(hour=0)
        total = days[(day, *(row[key] for key in keys))]
        total[0] += Decimal(row["value"] or 0)
        total[1] += row["events"]
    return [
        {"bucket": key[0], **dict(zip(keys, key[1:], strict=True)), "value": value, "events": count}
        for key, (value, count) in days.items()
    ]


def _order(point: GroupedUsagePoint) -> tuple:
    # No group (None) first, then groups by their text.
    return (point.meter, point.start, *((value is not None, value or "") for value in point.group.values()))
