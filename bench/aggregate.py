"""Hourly aggregation of one new hour, at 1M and at 10M events of history; a full recompute.

    .venv/bin/python bench/aggregate.py [--history 1000000,10000000] [--new 100000] [--repeat 3]

For each history size (fresh tables each time):
1. load the history with SQL (INSERT ... SELECT generate_series, two connections in parallel):
   events spread evenly over the past --days days (30), --tenants tenants (20), one count meter and
   one sum meter; then their HourlyAggregate rows (and revision-1 change rows) with one
   INSERT ... SELECT ... GROUP BY, so every history hour is aggregated; then VACUUM ANALYZE;
2. --repeat times: insert --new events for one new hour (spread over the tenants and both meters)
   and their PendingHour rows exactly as ingestion marks them (one per tenant, meter and hour),
   then time metering.aggregation.usage_aggregate(trigger="bench") in a fresh child process,
   which also reports its peak RSS and the number of SQL statements it ran. The median counts.
After the largest size: a full recompute in a child process, timed:
usage_mark_for_recompute(since=<oldest hour>) + usage_aggregate(trigger="bench-recompute").

Goals: new-hour time at the largest history within 1.5x of the smallest; full recompute of the
largest history < 60 s; peak RSS of the aggregating process < 300 MB.
Uses its own database (billing_bench_agg by default) and empties its usage tables at the start
and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

GOAL_RATIO = 1.5
GOAL_RECOMPUTE_S = 60.0
GOAL_RSS_MB = 300.0
COUNT_METER, SUM_METER = "bench_agg_count", "bench_agg_sum"

LOAD_SQL = """
INSERT INTO metering_usageevent
    (tenant_id, meter_id, event_id, "timestamp", quantity, properties, received_at)
SELECT (%(tenants)s::bigint[])[1 + (g %% %(n_tenants)s)],
       (%(meters)s::bigint[])[1 + ((g / %(n_tenants)s) %% 2)],
       %(prefix)s || lpad(g::text, 10, '0'),
       %(start)s::timestamptz + (g * %(step_us)s) * interval '1 microsecond',
       CASE WHEN (g / %(n_tenants)s) %% 2 = 0 THEN 1 ELSE (g %% 1000) / 10.0 END,
       '{"path": "/x", "status": 200}'::jsonb,
       %(start)s::timestamptz + (g * %(step_us)s) * interval '1 microsecond' + interval '2 seconds'
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g
"""

# What ingestion's statement (metering.ingest._PG_INSERT) marks: one row per (tenant, meter, hour).
PENDING_SQL = """
INSERT INTO metering_pendinghour (tenant_id, meter_id, hour, marked_at)
SELECT DISTINCT tenant_id, meter_id, date_trunc('hour', "timestamp", 'UTC'), now()
FROM metering_usageevent
WHERE "timestamp" >= %(hour)s AND "timestamp" < %(hour)s + interval '1 hour'
ORDER BY 1, 2, 3
ON CONFLICT (tenant_id, meter_id, hour) DO UPDATE SET marked_at = EXCLUDED.marked_at
"""

AGGREGATES_SQL = """
INSERT INTO metering_hourlyaggregate
    (tenant_id, meter_id, hour, value, event_count, revision, created_at, updated_at)
SELECT e.tenant_id, e.meter_id, date_trunc('hour', e."timestamp", 'UTC'),
       CASE WHEN e.meter_id = %(sum_meter)s THEN sum(e.quantity) ELSE count(*) END,
       count(*), 1, now(), now()
FROM metering_usageevent e
GROUP BY 1, 2, 3
"""

CHANGES_SQL = """
INSERT INTO metering_hourlyaggregatechange
    (aggregate_id, revision, old_value, new_value, old_event_count, new_event_count, created_at)
SELECT id, 1, NULL, value, NULL, event_count, now() FROM metering_hourlyaggregate
"""


# --- Child process: the aggregation being measured -------------------------------------------


def child(mode: str, url: str, since: str | None) -> None:
    import resource

    common.setup_django(url)
    from django.db import connection

    from metering.aggregation import usage_aggregate, usage_mark_for_recompute

    with connection.cursor() as cursor:  # connect before timing
        cursor.execute("SELECT 1")
    rss_before = common.rss_peak_mb_self()
    statements = 0

    def count(execute, sql, params, many, context):
        nonlocal statements
        statements += 1
        return execute(sql, params, many, context)

    result: dict = {}
    with connection.execute_wrapper(count):
        started = time.perf_counter()
        if mode == "recompute":
            result["marked"] = usage_mark_for_recompute(since=datetime.fromisoformat(since)).marked
            result["mark_s"] = time.perf_counter() - started
        run = usage_aggregate(trigger="bench-recompute" if mode == "recompute" else "bench")
        result["elapsed_s"] = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.update(
        hours_aggregated=run.hours_aggregated,
        hours_changed=run.hours_changed,
        status=run.status,
        statements=statements,
        rss_before_mb=round(rss_before, 1),
        peak_rss_mb=round(usage.ru_maxrss / 1024.0, 1),
        cpu_s=round(usage.ru_utime + usage.ru_stime, 2),
    )
    print("CHILD " + json.dumps(result), flush=True)


def run_child(mode: str, url: str, since: datetime | None = None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--child-url", url]
    if since is not None:
        cmd += ["--child-since", since.isoformat()]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=common.ROOT)
    wall = time.perf_counter() - started
    lines = [line for line in proc.stdout.splitlines() if line.startswith("CHILD ")]
    if proc.returncode != 0 or not lines:
        sys.exit(
            f"aggregation child failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    result = json.loads(lines[-1][len("CHILD ") :])
    result["process_wall_s"] = round(wall, 2)
    return result


# --- Loading -------------------------------------------------------------------------------------


def parallel(url: str, jobs: list[tuple[str, dict]]) -> None:
    """Run statements on one connection each, concurrently (PostgreSQL does the work)."""
    errors: list[BaseException] = []

    def work(sql, params):
        try:
            with common.psql_connect(url, autocommit=True) as conn:
                conn.execute(sql, params)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, raised there
            errors.append(exc)

    threads = [threading.Thread(target=work, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def load_history(url: str, *, size: int, tenants: list[int], meters: list[int], start, end, loaders: int):
    step_us = int((end - start).total_seconds() * 1e6 // size)
    chunk = -(-size // loaders)
    jobs = []
    for part in range(loaders):
        lo, hi = part * chunk, min(size, (part + 1) * chunk) - 1
        if lo > hi:
            continue
        params = {
            "tenants": tenants,
            "n_tenants": len(tenants),
            "meters": meters,
            "prefix": "h",
            "start": start,
            "step_us": step_us,
            "lo": lo,
            "hi": hi,
        }
        jobs.append((LOAD_SQL, params))
    parallel(url, jobs)


def add_new_hour(url: str, *, hour: datetime, count: int, tenants: list[int], meters: list[int]) -> int:
    """`count` events inside [hour, hour + 1h) over all tenants and both meters, and their
    pending hours; returns the number of pending rows."""
    step_us = int(3600 * 1e6 // count)
    params = {
        "tenants": tenants,
        "n_tenants": len(tenants),
        "meters": meters,
        "prefix": f"n{int(hour.timestamp())}-",
        "start": hour,
        "step_us": step_us,
        "lo": 0,
        "hi": count - 1,
    }
    with common.psql_connect(url, autocommit=True) as conn:
        with conn.transaction():  # events and their pending hours together, as ingestion does
            conn.execute(LOAD_SQL, params)
            conn.execute(PENDING_SQL, {"hour": hour})
        return conn.execute("SELECT count(*) FROM metering_pendinghour").fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--history", default="1000000,10000000", help="history sizes, comma-separated")
    parser.add_argument("--new", type=int, default=100_000, help="events in the new hour (default 100,000)")
    parser.add_argument("--repeat", type=int, default=5, help="new hours timed per history size (default 5)")
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--days", type=int, default=30, help="days of history (default 30)")
    parser.add_argument("--loaders", type=int, default=2, help="parallel loading connections (default 2)")
    parser.add_argument("--skip-recompute", action="store_true")
    parser.add_argument("--keep", action="store_true", help="leave the loaded data in place at the end")
    parser.add_argument("--db", default="billing_bench_agg", help="database name (default billing_bench_agg)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-url", help=argparse.SUPPRESS)
    parser.add_argument("--child-since", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.child_url, args.child_since)
        return
    sizes = [int(x) for x in args.history.split(",") if x.strip()]
    if not sizes or any(s <= 0 for s in sizes) or args.new <= 0:
        parser.error("--history and --new must be positive")

    bench_started = time.perf_counter()
    url = common.bench_database_url(args.db)
    common.setup_django(url)
    from django.db import connections

    from tenants.models import Tenant

    meter_ids = [common.meter_ensure(COUNT_METER, "count"), common.meter_ensure(SUM_METER, "sum")]
    tenant_ids = list(
        Tenant.objects.filter(slug__startswith="bench-agg-").order_by("id").values_list("id", flat=True)
    )[: args.tenants]
    while len(tenant_ids) < args.tenants:
        tenant_ids.append(common.tenant_with_key("bench-agg")[0])
    connections.close_all()

    busy = common.background_cores()
    common.warn_if_busy(busy)
    now_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    # History ends where the new hours begin; every new hour is in the past.
    history_end = now_hour - timedelta(hours=args.repeat + 1)
    history_start = history_end - timedelta(days=args.days)
    new_hours = [history_end + timedelta(hours=i) for i in range(args.repeat)]
    common.log(
        f"aggregate: history sizes {', '.join(f'{s:,}' for s in sizes)} over {args.days} days, "
        f"{args.tenants} tenants, meters {COUNT_METER} (count) and {SUM_METER} (sum); "
        f"{args.new:,} new events per new hour, {args.repeat} new hour(s) per size; "
        f"background load {busy} cores"
    )

    figures: dict = {"bench": "aggregate", **common.machine_info(), "background_cores": busy}
    figures.update(new_events=args.new, tenants=args.tenants, days=args.days, repeat=args.repeat)
    per_size: dict[int, dict] = {}
    peak_rss = 0.0
    for size in sizes:
        common.truncate_usage(url, aggregates=True)
        started = time.perf_counter()
        load_history(
            url,
            size=size,
            tenants=tenant_ids,
            meters=meter_ids,
            start=history_start,
            end=history_end,
            loaders=args.loaders,
        )
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        with common.psql_connect(url, autocommit=True) as conn:
            conn.execute("SET work_mem = '512MB'")  # one GROUP BY over the whole history, in memory
            conn.execute(AGGREGATES_SQL, {"sum_meter": meter_ids[1]})
            conn.execute(CHANGES_SQL)
            hours = conn.execute("SELECT count(*) FROM metering_hourlyaggregate").fetchone()[0]
            aggregates_s = time.perf_counter() - started
            started = time.perf_counter()
            conn.execute(
                "VACUUM ANALYZE metering_usageevent, metering_hourlyaggregate, "
                "metering_hourlyaggregatechange, metering_pendinghour"
            )
            vacuum_s = time.perf_counter() - started
            table_mb = (
                conn.execute("SELECT pg_total_relation_size('metering_usageevent')").fetchone()[0] / 2**20
            )
        common.log(
            f"history {size:>12,}: loaded in {load_s:.1f}s, "
            f"{hours:,} hourly aggregates in {aggregates_s:.1f}s, "
            f"VACUUM ANALYZE {vacuum_s:.1f}s (events table with indexes: {table_mb:,.0f} MB)"
        )
        runs = []
        for hour in new_hours:
            pending = add_new_hour(url, hour=hour, count=args.new, tenants=tenant_ids, meters=meter_ids)
            result = run_child("new_hour", url)
            runs.append(result)
            peak_rss = max(peak_rss, result["peak_rss_mb"])
            common.log(
                f"  new hour {hour:%Y-%m-%d %H}:00: {pending} pending rows -> aggregated "
                f"{result['hours_aggregated']} hours ({result['hours_changed']} changed) in "
                f"{result['elapsed_s'] * 1000:.0f} ms, {result['statements']} SQL statements, "
                f"peak RSS {result['peak_rss_mb']} MB"
            )
            if result["hours_aggregated"] != pending or result["status"] != "succeeded":
                sys.exit(f"aggregation did not take every pending hour: {result}")
        per_size[size] = {
            "load_s": round(load_s, 1),
            "vacuum_s": round(vacuum_s, 1),
            "history_hours": hours,
            "new_hour_s": round(common.median([r["elapsed_s"] for r in runs]), 4),
            "new_hour_s_runs": [round(r["elapsed_s"], 4) for r in runs],
            "statements": runs[-1]["statements"],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        }
        common.log(
            f"  median new-hour aggregation at {size:,} events of history: "
            f"{per_size[size]['new_hour_s'] * 1000:.0f} ms"
        )

    small, large = sizes[0], sizes[-1]
    ratio = per_size[large]["new_hour_s"] / per_size[small]["new_hour_s"]
    figures["sizes"] = {str(size): values for size, values in per_size.items()}
    figures.update(
        history_small=small,
        history_large=large,
        new_hour_s_small=per_size[small]["new_hour_s"],
        new_hour_s_large=per_size[large]["new_hour_s"],
        ratio=round(ratio, 3),
    )

    recompute = None
    if not args.skip_recompute:
        total_events = large + args.new * args.repeat
        common.log(f"full recompute of {total_events:,} events (since {history_start:%Y-%m-%d %H}:00) ...")
        recompute = run_child("recompute", url, since=history_start)
        peak_rss = max(peak_rss, recompute["peak_rss_mb"])
        common.log(
            f"full recompute: marked {recompute['marked']:,} hours in {recompute['mark_s']:.1f}s, "
            f"aggregated {recompute['hours_aggregated']:,} ({recompute['hours_changed']} changed) - total "
            f"{recompute['elapsed_s']:.1f}s, {recompute['statements']:,} SQL statements, "
            f"peak RSS {recompute['peak_rss_mb']} MB"
        )
        figures.update(
            recompute_events=total_events,
            recompute_s=round(recompute["elapsed_s"], 2),
            recompute_mark_s=round(recompute["mark_s"], 2),
            recompute_hours=recompute["hours_aggregated"],
            recompute_hours_changed=recompute["hours_changed"],
            recompute_statements=recompute["statements"],
            recompute_peak_rss_mb=recompute["peak_rss_mb"],
        )
    if not args.keep:
        common.truncate_usage(url, aggregates=True)

    figures.update(
        peak_rss_mb=peak_rss,
        total_bench_s=round(time.perf_counter() - bench_started, 1),
        goal_ratio=GOAL_RATIO,
        goal_recompute_s=GOAL_RECOMPUTE_S,
        goal_rss_mb=GOAL_RSS_MB,
        goal_ratio_met=ratio <= GOAL_RATIO,
        goal_recompute_met=None if recompute is None else recompute["elapsed_s"] < GOAL_RECOMPUTE_S,
        goal_rss_met=peak_rss < GOAL_RSS_MB,
    )
    common.log("")
    common.log(
        f"new hour of {args.new:,} events: "
        f"{per_size[small]['new_hour_s'] * 1000:.0f} ms at {small:,} history, "
        f"{per_size[large]['new_hour_s'] * 1000:.0f} ms at {large:,}; ratio {ratio:.2f}"
    )
    common.log(common.goal_line("ratio <= 1.5", figures["goal_ratio_met"], f"ratio {ratio:.2f}"))
    if recompute is not None:
        common.log(
            common.goal_line(
                "full recompute < 60 s",
                figures["goal_recompute_met"],
                f"{recompute['elapsed_s']:.1f}s for {figures['recompute_events']:,} events",
            )
        )
    common.log(common.goal_line("peak RSS < 300 MB", figures["goal_rss_met"], f"{peak_rss} MB"))
    common.emit_json(figures)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
