"""`GET /api/v1/usage?group_by=` over a month of one tenant's raw events.

    .venv/bin/python bench/usage_group_by.py [--events 1000000] [--days 30] [--repeat 5]

1. load --events events of one tenant with SQL (INSERT ... SELECT generate_series), spread evenly
   over the past --days days, half on a count meter and half on a sum meter, each with
   `{"region": one of 4, "model": one of 12, "user": one of 500}`; their hourly aggregates with one
   INSERT ... SELECT ... GROUP BY; VACUUM ANALYZE;
2. --repeat times each (median and max printed), through the API in this process (Django's test
   client with the tenant's key, JSON rendering included):
   - grouped: the count meter by region per hour over the whole range; both meters by region and
     model per day; the sum meter by user per day (high cardinality);
   - baselines: the ungrouped read of the same range (aggregates), and the bare SQL GROUP BY the
     first grouped read amounts to (psycopg, no Django), which is the database's own floor.
No goal is asserted: the figures say what a month costs. Uses its own database
(billing_bench_groupby) and empties its usage tables at the start and the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

COUNT_METER, SUM_METER = "bench_gb_count", "bench_gb_sum"

LOAD_SQL = """
INSERT INTO metering_usageevent
    (tenant_id, meter_id, event_id, "timestamp", quantity, properties, received_at)
SELECT %(tenant)s,
       (%(meters)s::bigint[])[1 + (g %% 2)],
       'gb-' || lpad(g::text, 10, '0'),
       %(start)s::timestamptz + (g * %(step_us)s) * interval '1 microsecond',
       CASE WHEN g %% 2 = 0 THEN 1 ELSE (g %% 1000) / 10.0 END,
       jsonb_build_object(
           'region', (ARRAY['eu-west-1', 'us-east-1', 'ap-south-1', 'sa-east-1'])[1 + (g / 7) %% 4],
           'model', 'model-' || ((g / 3) %% 12),
           'user', 'user-' || ((g / 11) %% 500)
       ),
       %(start)s::timestamptz + (g * %(step_us)s) * interval '1 microsecond' + interval '2 seconds'
FROM generate_series(1, %(events)s::bigint) AS g
"""

AGGREGATE_SQL = """
INSERT INTO metering_hourlyaggregate
    (tenant_id, meter_id, hour, value, event_count, revision, created_at, updated_at)
SELECT tenant_id, meter_id, date_trunc('hour', "timestamp", 'UTC'),
       CASE WHEN meter_id = %(count_meter)s THEN count(*) ELSE sum(quantity) END, count(*), 1, now(), now()
FROM metering_usageevent GROUP BY tenant_id, meter_id, date_trunc('hour', "timestamp", 'UTC')
"""

# What `?meter=bench_gb_count&group_by=region` runs, written by hand.
BARE_SQL = """
SELECT date_trunc('hour', "timestamp", 'UTC') AS bucket, properties #>> '{region}' AS g0, count(*), count(*)
FROM metering_usageevent
WHERE tenant_id = %(tenant)s AND meter_id = %(meter)s AND "timestamp" >= %(start)s AND "timestamp" < %(end)s
GROUP BY 1, 2
"""


def timed(repeat: int, call) -> tuple[float, float, object]:
    """Median and max milliseconds of `repeat` calls, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 1), round(max(times), 1), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", default="billing_bench_groupby")
    args = parser.parse_args()

    url = common.bench_database_url(args.db)
    common.setup_django(url)
    common.truncate_usage(url, aggregates=True)
    tenant_id, key = common.tenant_with_key("groupby")
    meters = [common.meter_ensure(COUNT_METER, "count"), common.meter_ensure(SUM_METER, "sum")]

    now = datetime.now(UTC)
    start = (now - timedelta(days=args.days)).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    end = now.replace(minute=0, second=0, microsecond=0)
    step_us = int((end - start).total_seconds() * 1_000_000 / args.events)
    started = time.monotonic()
    with common.psql_connect(url, autocommit=True) as conn:
        conn.execute(
            LOAD_SQL,
            {
                "tenant": tenant_id,
                "meters": meters,
                "start": start,
                "step_us": step_us,
                "events": args.events,
            },
        )
        conn.execute(AGGREGATE_SQL, {"count_meter": meters[0]})
        conn.execute("VACUUM ANALYZE metering_usageevent")
        conn.execute("VACUUM ANALYZE metering_hourlyaggregate")
    common.log(f"loaded {args.events:,} events over {args.days} days in {time.monotonic() - started:.0f} s")
    cores = common.background_cores()
    common.warn_if_busy(cores)

    from django.test import Client

    client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Api-Key {key}")
    window = {"start": start.isoformat(), "end": end.isoformat()}

    def api(**params):
        def call():
            response = client.get("/api/v1/usage", {**window, **params}, secure=True)
            if response.status_code != 200:
                sys.exit(f"{params}: {response.status_code} {response.content[:500]!r}")
            return len(response.json()["data"])

        return call

    figures: dict = {"events": args.events, "days": args.days, "background_cores": cores}
    phases = {
        "grouped_hour_region": api(meter=COUNT_METER, group_by="region"),
        "grouped_day_region_model_all_meters": api(group_by="region,model", granularity="day"),
        "grouped_day_user_sum_meter": api(meter=SUM_METER, group_by="user", granularity="day"),
        "ungrouped_hour": api(meter=COUNT_METER),
    }
    for name, call in phases.items():
        median_ms, max_ms, points = timed(args.repeat, call)
        figures[name] = {"median_ms": median_ms, "max_ms": max_ms, "points": points}
        common.log(f"{name}: median {median_ms} ms, max {max_ms} ms, {points} points")

    with common.psql_connect(url) as conn:
        params = {"tenant": tenant_id, "meter": meters[0], "start": start, "end": end}
        median_ms, max_ms, rows = timed(args.repeat, lambda: len(conn.execute(BARE_SQL, params).fetchall()))
    figures["bare_sql_hour_region"] = {"median_ms": median_ms, "max_ms": max_ms, "points": rows}
    common.log(f"bare_sql_hour_region: median {median_ms} ms, max {max_ms} ms, {rows} rows")
    ratio = figures["grouped_hour_region"]["median_ms"] / max(median_ms, 0.1)
    figures["grouped_vs_bare_sql"] = round(ratio, 2)
    common.log(f"grouped read / bare SQL: {ratio:.2f}")

    common.truncate_usage(url, aggregates=True)
    common.emit_json({**figures, **common.machine_info()})


if __name__ == "__main__":
    main()
