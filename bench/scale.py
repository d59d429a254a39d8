"""The ingestion and aggregation figures with a large history in the partitioned store against an
empty one; dropping a day's partition against DELETE of the same rows; disk bytes per million events.

    .venv/bin/python bench/scale.py [--events 100000000] [--days 35] [--rounds 3]
    .venv/bin/python bench/scale.py --events 350000 --batches 20 --rounds 1 --repeat 1   # quick check

Two databases of its own: billing_bench_scale (the history) and billing_bench_scale_empty.
1. History (kept between runs; rebuilt only when --events, --days or --tenants change): --events
   events spread evenly over the --days full UTC days before the day of the first build, --tenants
   tenants (100), three meters (count, sum, max), properties like the other benches. Loaded day by
   day with INSERT ... SELECT generate_series into the day's partition (partitions created by the
   product's event store), in one transaction per day together with the day's idempotency keys
   (each key in the current and the previous generation, as the product writes them), the day's
   hourly aggregates and their revision-1 change rows; --loaders days at a time. A stopped build
   resumes at the first day not loaded. Then VACUUM ANALYZE of the keys; the time taken is kept
   and printed on every run. Sizes: pg_total_relation_size of every event partition and every key
   partition (indexes included), and bytes per million events.
2. Against the history and against the empty store, interleaved (same machine, same run):
   (a) batch ingestion through the API (bench/ingest_batch.py's gunicorn + client processes, its
       batches, 10% repeated ids) and the bare exactly-once insert (its BASELINE_SQL), --rounds
       rounds of --batches batches of 1,000 events, medians; new ids every round;
   (b) new-hour aggregation (bench/aggregate.py's new hour of --new events and its timed child
       running metering.aggregation.usage_aggregate), --repeat hours, median.
   Goals: history/empty within 1.1x for both (ingestion events/s empty/history <= 1.1,
   aggregation time history/empty <= 1.1).
3. Retention, on the history: the oldest loaded day's partition detached and dropped through the
   event store (PostgreSQL's DETACH PARTITION ... CONCURRENTLY + DROP TABLE), against the old
   pruning path on a plain table in the pre-partitioning layout (primary key id, unique
   (tenant_id, event_id), (tenant_id, meter_id, timestamp), (received_at)) holding the same day's
   rows and the next day's: DELETE by batches of 10,000 ids received before the cutoff. Time and
   size of each: before, after, after a plain VACUUM and after VACUUM FULL for the DELETE. The
   dropped day is loaded again on the next run (its keys and aggregates are still there).
Everything the bench added after the history (events from the history's end on, pending hours,
their aggregates) is deleted before each phase and at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common
import aggregate as agg
import ingest_batch as ib

GOAL_RATIO = 1.1
DB_HISTORY, DB_EMPTY = "billing_bench_scale", "billing_bench_scale_empty"
METERS = (("bench_scale_count", "count"), ("bench_scale_sum", "sum"), ("bench_scale_max", "max"))
GENERATION_S = 36 * 86400  # metering.eventstore.postgresql.KEY_GENERATION
PLAIN = "bench_scale_plain_events"
DELETE_BATCH = 10_000

STATE_SQL = """
CREATE TABLE IF NOT EXISTS bench_scale_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS bench_scale_day (
    day date PRIMARY KEY, events bigint NOT NULL, seconds double precision NOT NULL
);
"""

# One day of history: n events at even steps through the day, tenant g % n_tenants, meter by g.
DAY_EVENTS_SQL = """
INSERT INTO {partition} (tenant_id, meter_id, event_id, "timestamp", quantity, properties, received_at)
SELECT (%(tenants)s::bigint[])[1 + (g %% %(n_tenants)s)],
       (%(meters)s::bigint[])[1 + ((g / %(n_tenants)s) %% 3)],
       %(prefix)s || lpad(g::text, 8, '0'),
       %(start)s::timestamptz + (g * %(step_us)s) * interval '1 microsecond',
       CASE (g / %(n_tenants)s) %% 3 WHEN 0 THEN 1 WHEN 1 THEN (g %% 1000) / 10.0 ELSE (g %% 997) END,
       ('{{"path": "/api/items/' || (g %% 40) || '", "status": '
        || CASE WHEN g %% 50 = 0 THEN 500 ELSE 200 END || '}}')::jsonb,
       %(start)s::timestamptz + (g * %(step_us)s) * interval '1 microsecond' + interval '2 seconds'
FROM generate_series(0, %(n)s::bigint - 1) AS g
"""

DAY_KEYS_SQL = """
INSERT INTO metering_eventkey (generation, tenant_id, event_id, "timestamp")
SELECT g.generation, e.tenant_id, e.event_id, e."timestamp"
FROM {partition} e CROSS JOIN unnest(%(generations)s::integer[]) AS g(generation)
ON CONFLICT (tenant_id, event_id, generation) DO NOTHING
"""

DAY_AGGREGATES_SQL = """
WITH a AS (
    INSERT INTO metering_hourlyaggregate
        (tenant_id, meter_id, hour, value, event_count, revision, created_at, updated_at)
    SELECT e.tenant_id, e.meter_id, date_trunc('hour', e."timestamp", 'UTC'),
           CASE e.meter_id WHEN %(sum_meter)s THEN sum(e.quantity) WHEN %(max_meter)s THEN max(e.quantity)
                ELSE count(*) END,
           count(*), 1, now(), now()
    FROM {partition} e
    GROUP BY 1, 2, 3
    ON CONFLICT (tenant_id, meter_id, hour) DO NOTHING
    RETURNING id, value, event_count
)
INSERT INTO metering_hourlyaggregatechange
    (aggregate_id, revision, old_value, new_value, old_event_count, new_event_count, created_at)
SELECT id, 1, NULL, value, NULL, event_count, now() FROM a
"""

SIZES_SQL = """
SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint, count(*)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
WHERE p.relname = %s
"""


def day_partition(day: date) -> str:
    return f"metering_usageevent_{day:%Y%m%d}"


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


# --- Children (Django, one database each) ------------------------------------------------------


def child(mode: str, url: str, params: dict) -> None:
    common.setup_django(url)
    from metering.eventstore import event_store

    store = event_store()
    result: dict = {}
    if mode == "setup":
        from tenants.models import Tenant
        from tenants.services import tenant_create

        now = datetime.now(UTC)
        result["meters"] = [common.meter_ensure(code, kind) for code, kind in METERS]
        tenants = list(
            Tenant.objects.filter(slug__startswith="bench-scale-").order_by("id").values_list("id", flat=True)
        )[: params["tenants"]]
        for n in range(len(tenants), params["tenants"]):
            tenants.append(tenant_create(name=f"bench-scale-{n:04d}", slug=f"bench-scale-{n:04d}").pk)
        result["tenants"] = tenants
        result["ingest_tenant"], result["ingest_key"] = common.tenant_with_key("bench-scale-ingest")
        result["ingest_meter"] = common.meter_ensure("api_calls", "count")
        store.maintain(now=now)
        days = [date.fromisoformat(d) for d in params.get("days", [])]
        store.ensure_days(days)
        if params.get("generation") is not None:
            store.ensure_generations((params["generation"] - 1, params["generation"]))
    elif mode == "drop":
        from metering.eventstore.postgresql import EVENTS

        started = time.perf_counter()
        store._detach_and_drop(EVENTS, params["partition"])  # the prune path, one day
        result["drop_s"] = time.perf_counter() - started
    print("CHILD " + json.dumps(result), flush=True)


def run_child(mode: str, url: str, params: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--child-url", url]
    cmd += ["--child-params", json.dumps(params)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=common.ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("CHILD ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{mode} child failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("CHILD ") :])


# --- History -----------------------------------------------------------------------------------


def meta_get(conn, key: str) -> str | None:
    row = conn.execute("SELECT value FROM bench_scale_meta WHERE key = %s", (key,)).fetchone()
    return row[0] if row else None


def meta_set(conn, key: str, value) -> None:
    conn.execute(
        "INSERT INTO bench_scale_meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        (key, str(value)),
    )


def history_plan(url: str, args) -> dict:
    """The history's shape: kept from the first build unless --events/--days/--tenants changed."""
    wanted = {"events": str(args.events), "days": str(args.days), "tenants": str(args.tenants)}
    with common.psql_connect(url, autocommit=True) as conn:
        conn.execute(STATE_SQL)
        stored = {key: meta_get(conn, key) for key in wanted}
        if stored != wanted or meta_get(conn, "first_day") is None:
            if any(stored.values()):
                common.log(f"history shape changed ({stored} -> {wanted}): emptying and rebuilding")
            conn.execute(
                "TRUNCATE metering_usageevent, metering_eventkey, metering_pendinghour, "
                "metering_hourlyaggregatechange, metering_hourlyaggregate, metering_aggregationrun, "
                "bench_scale_day, bench_scale_meta"
            )
            now = datetime.now(UTC)
            first_day = now.date() - timedelta(days=args.days)
            for key, value in wanted.items():
                meta_set(conn, key, value)
            meta_set(conn, "first_day", first_day.isoformat())
            meta_set(conn, "generation", int(now.timestamp() // GENERATION_S))
            meta_set(conn, "build_s", 0)
        first_day = date.fromisoformat(meta_get(conn, "first_day"))
        plan = {
            "first_day": first_day,
            "days": [first_day + timedelta(days=n) for n in range(args.days)],
            "history_end": midnight(first_day + timedelta(days=args.days)),
            "generation": int(meta_get(conn, "generation")),
            "build_s": float(meta_get(conn, "build_s")),
            "loaded": {row[0] for row in conn.execute("SELECT day FROM bench_scale_day")},
        }
    return plan


def load_day(url: str, day: date, *, n: int, tenants, meters, generation: int) -> float:
    started = time.perf_counter()
    partition = day_partition(day)
    with common.psql_connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET work_mem = '256MB'")
        with conn.transaction():
            conn.execute(f"TRUNCATE {partition}")  # a day loaded halfway by a stopped run
            conn.execute(
                DAY_EVENTS_SQL.format(partition=partition),
                {
                    "tenants": tenants,
                    "n_tenants": len(tenants),
                    "meters": meters,
                    "prefix": f"h{day:%Y%m%d}-",
                    "start": midnight(day),
                    "step_us": int(86400 * 1e6 // n),
                    "n": n,
                },
            )
            conn.execute(
                DAY_KEYS_SQL.format(partition=partition),
                {"generations": f"{{{generation - 1},{generation}}}"},
            )
            conn.execute(
                DAY_AGGREGATES_SQL.format(partition=partition),
                {"sum_meter": meters[1], "max_meter": meters[2]},
            )
            seconds = time.perf_counter() - started
            conn.execute("INSERT INTO bench_scale_day VALUES (%s, %s, %s)", (day, n, seconds))
        conn.execute(f"VACUUM ANALYZE {partition}")
    return time.perf_counter() - started


def build_history(url: str, plan: dict, args, setup: dict) -> dict:
    todo = [day for day in plan["days"] if day not in plan["loaded"]]
    per_day = args.events // args.days
    if todo:
        common.log(
            f"loading {len(todo)} of {args.days} days ({per_day:,} events a day, with keys and hourly "
            f"aggregates), {args.loaders} at a time ..."
        )
        started = time.perf_counter()
        queue = list(todo)
        lock = threading.Lock()
        errors: list[BaseException] = []

        def worker():
            while True:
                with lock:
                    if not queue or errors:
                        return
                    day = queue.pop(0)
                try:
                    seconds = load_day(
                        url,
                        day,
                        n=per_day,
                        tenants=setup["tenants"],
                        meters=setup["meters"],
                        generation=plan["generation"],
                    )
                except BaseException as exc:  # noqa: BLE001 - raised in the main thread
                    errors.append(exc)
                    return
                common.log(
                    f"  day {day} loaded in {seconds:.1f}s ({per_day / seconds:,.0f} events/s); "
                    f"{time.perf_counter() - started:.0f}s so far"
                )

        threads = [threading.Thread(target=worker) for _ in range(args.loaders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        with common.psql_connect(url, autocommit=True) as conn:
            t0 = time.perf_counter()
            conn.execute(
                "VACUUM ANALYZE metering_eventkey, metering_hourlyaggregate, metering_hourlyaggregatechange"
            )
            common.log(f"  VACUUM ANALYZE of keys and aggregates {time.perf_counter() - t0:.1f}s")
            spent = time.perf_counter() - started
            meta_set(conn, "build_s", round(plan["build_s"] + spent, 1))
            plan["build_s"] += spent
    with common.psql_connect(url, autocommit=True) as conn:
        events = conn.execute("SELECT coalesce(sum(events), 0) FROM bench_scale_day").fetchone()[0]
        load_s = conn.execute("SELECT coalesce(sum(seconds), 0) FROM bench_scale_day").fetchone()[0]
    return {"events": int(events), "day_load_s_sum": round(load_s, 1)}


def store_sizes(url: str, events: int) -> dict:
    with common.psql_connect(url, autocommit=True) as conn:
        ev_bytes, ev_parts = conn.execute(SIZES_SQL, ("metering_usageevent",)).fetchone()
        key_bytes, key_parts = conn.execute(SIZES_SQL, ("metering_eventkey",)).fetchone()
        agg_bytes = conn.execute(
            "SELECT pg_total_relation_size('metering_hourlyaggregate') "
            "+ pg_total_relation_size('metering_hourlyaggregatechange')"
        ).fetchone()[0]
    millions = max(events, 1) / 1e6
    return {
        "events_bytes": ev_bytes,
        "event_partitions": ev_parts,
        "keys_bytes": key_bytes,
        "key_partitions": key_parts,
        "aggregates_bytes": agg_bytes,
        "event_bytes_per_million": round(ev_bytes / millions),
        "key_bytes_per_million": round(key_bytes / millions),
        "bytes_per_million": round((ev_bytes + key_bytes) / millions),
    }


def cleanup(url: str, history_end: datetime) -> None:
    """Remove what the bench added after the history: events, pending hours, their aggregates."""
    with common.psql_connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM metering_pendinghour")
        conn.execute(
            "DELETE FROM metering_hourlyaggregatechange c USING metering_hourlyaggregate a "
            "WHERE c.aggregate_id = a.id AND a.hour >= %s",
            (history_end,),
        )
        conn.execute("DELETE FROM metering_hourlyaggregate WHERE hour >= %s", (history_end,))
        conn.execute('DELETE FROM metering_usageevent WHERE "timestamp" >= %s', (history_end,))
        conn.execute("DELETE FROM metering_aggregationrun")


# --- Figures -----------------------------------------------------------------------------------


def ingestion(dbs: dict, args) -> dict:
    """Per database: api and baseline events/s, medians over the rounds (interleaved)."""
    servers = {name: common.Gunicorn(db["url"], workers=args.workers) for name, db in dbs.items()}
    results: dict = {name: {"api": [], "baseline": []} for name in dbs}
    stamp = int(time.time())
    for round_no in range(1, args.rounds + 1):
        warm, timed = ib.make_batches(
            warmup=2 * args.clients,
            count=args.batches,
            size=1000,
            dup_fraction=0.10,
            seed=round_no,
            run_tag=f"s{stamp}r{round_no}",
            clients=args.clients,
        )
        now = datetime.now(UTC)

        def body(events):
            return json.dumps({"events": events}, separators=(",", ":")).encode()

        api_in = ([(body(b), len(b)) for b in warm], [(body(b), len(b)) for b in timed])
        for name, db in dbs.items():
            server = servers[name]
            db_in = (
                [ib.db_params(db["ingest_tenant"], db["ingest_meter"], b, now) for b in warm],
                [ib.db_params(db["ingest_tenant"], db["ingest_meter"], b, now) for b in timed],
            )
            # The baseline writes into the same tenant's keys: give it ids of its own.
            db_in = tuple(
                [dict(p, event_ids=p["event_ids"].replace(f"s{stamp}r", f"s{stamp}b")) for p in part]
                for part in db_in
            )
            phases = {
                "api": (
                    ib.http_client,
                    lambda part, s=server, d=db: (s.host, s.port, d["ingest_key"], "api", part),
                    api_in,
                ),
                "baseline": (ib.db_client, lambda part, d=db: (d["url"], ib.BASELINE_SQL, part), db_in),
            }
            for phase, (target, make_args, (warm_in, timed_in)) in phases.items():
                cleanup(db["url"], args.history_end)
                ib.run_clients(target, [make_args(part) for part in ib.split(warm_in, args.clients)])
                result = ib.run_clients(
                    target, [make_args(part) for part in ib.split(timed_in, args.clients)]
                )
                eps = (result["accepted"] + result["duplicates"]) / result["wall_s"]
                results[name][phase].append(
                    {
                        "eps": eps,
                        "accepted": result["accepted"],
                        "dup": result["duplicates"],
                        "errors": result["errors"],
                    }
                )
                common.log(
                    f"round {round_no} {name:<7} {phase:<8} {eps:9,.0f} events/s "
                    f"({result['accepted']} accepted + {result['duplicates']} duplicates "
                    f"in {result['wall_s']:.2f}s, {result['errors']} errors)"
                )
            cleanup(db["url"], args.history_end)
    for server in servers.values():
        server.stop()
    out = {}
    for name, phases in results.items():
        for phase, runs in phases.items():
            out[f"{name}_{phase}_events_per_s"] = round(common.median([r["eps"] for r in runs]))
            out[f"{name}_{phase}_events_per_s_rounds"] = [round(r["eps"]) for r in runs]
            out[f"{name}_{phase}_errors"] = sum(r["errors"] for r in runs)
    return out


def aggregation(dbs: dict, args) -> dict:
    """Per database: the time to aggregate one new hour of --new events (median of --repeat)."""
    runs: dict = {name: [] for name in dbs}
    hours = [args.history_end + timedelta(hours=i) for i in range(args.repeat)]
    for db in dbs.values():
        cleanup(db["url"], args.history_end)
    for hour in hours:
        for name, db in dbs.items():
            pending = agg.add_new_hour(
                db["url"], hour=hour, count=args.new, tenants=db["tenants"], meters=db["meters"][:2]
            )
            result = agg.run_child("new_hour", db["url"])
            if result["hours_aggregated"] != pending or result["status"] != "succeeded":
                sys.exit(f"aggregation did not take every pending hour: {result}")
            runs[name].append(result["elapsed_s"])
            common.log(
                f"new hour {hour:%Y-%m-%d %H}:00 {name:<7}: {pending} pending hours aggregated in "
                f"{result['elapsed_s'] * 1000:.0f} ms ({result['statements']} SQL statements)"
            )
    for db in dbs.values():
        cleanup(db["url"], args.history_end)
    out = {}
    for name, values in runs.items():
        out[f"{name}_new_hour_s"] = round(common.median(values), 4)
        out[f"{name}_new_hour_s_runs"] = [round(v, 4) for v in values]
    return out


def retention(url: str, day: date) -> dict:
    """Drop the day's partition vs DELETE of the same rows from a plain table (that day + the next)."""
    partition, following = day_partition(day), day_partition(day + timedelta(days=1))
    cutoff = midnight(day + timedelta(days=1))
    out: dict = {"retention_day": day.isoformat()}
    with common.psql_connect(url, autocommit=True) as conn:

        def size(name):
            return conn.execute("SELECT pg_total_relation_size(%s)", (name,)).fetchone()[0]

        rows = conn.execute(f"SELECT count(*) FROM {partition}").fetchone()[0]  # noqa: S608
        out["retention_rows"] = rows
        common.log(f"retention: day {day} ({rows:,} events); building the plain-table copy ...")
        conn.execute(f"DROP TABLE IF EXISTS {PLAIN}")
        conn.execute(f"CREATE TABLE {PLAIN} (LIKE metering_usageevent INCLUDING DEFAULTS)")
        conn.execute(f"INSERT INTO {PLAIN} SELECT * FROM {partition} UNION ALL SELECT * FROM {following}")  # noqa: S608
        conn.execute(f"ALTER TABLE {PLAIN} ADD PRIMARY KEY (id)")
        conn.execute(f"CREATE UNIQUE INDEX {PLAIN}_idem ON {PLAIN} (tenant_id, event_id)")
        conn.execute(f'CREATE INDEX {PLAIN}_tmt ON {PLAIN} (tenant_id, meter_id, "timestamp")')
        conn.execute(f"CREATE INDEX {PLAIN}_received ON {PLAIN} (received_at)")
        conn.execute(f"VACUUM ANALYZE {PLAIN}")
        out["delete_rows_in_table"] = conn.execute(f"SELECT count(*) FROM {PLAIN}").fetchone()[0]  # noqa: S608
        out["delete_size_before"] = size(PLAIN)
        # The pre-partitioning prune (metering.aggregation before issue 14): batches of ids received
        # and timed before the cutoff, each batch deleted and committed.
        started = time.perf_counter()
        deleted = 0
        while True:
            cursor = conn.execute(
                f"DELETE FROM {PLAIN} WHERE id IN (SELECT id FROM {PLAIN} "  # noqa: S608
                f'WHERE received_at < %s AND "timestamp" < %s LIMIT {DELETE_BATCH})',
                (cutoff, cutoff),
            )
            if cursor.rowcount == 0:
                break
            deleted += cursor.rowcount
        out["delete_s"] = round(time.perf_counter() - started, 2)
        out["delete_rows"] = deleted
        out["delete_size_after"] = size(PLAIN)
        started = time.perf_counter()
        conn.execute(f"VACUUM {PLAIN}")
        out["vacuum_s"] = round(time.perf_counter() - started, 2)
        out["delete_size_after_vacuum"] = size(PLAIN)
        started = time.perf_counter()
        conn.execute(f"VACUUM FULL {PLAIN}")
        out["vacuum_full_s"] = round(time.perf_counter() - started, 2)
        out["delete_size_after_vacuum_full"] = size(PLAIN)
        conn.execute(f"DROP TABLE {PLAIN}")

        out["drop_partition_size"] = size(partition)
        out["drop_events_size_before"] = conn.execute(SIZES_SQL, ("metering_usageevent",)).fetchone()[0]
    result = run_child("drop", url, {"partition": partition})
    with common.psql_connect(url, autocommit=True) as conn:
        out["drop_events_size_after"] = conn.execute(SIZES_SQL, ("metering_usageevent",)).fetchone()[0]
        conn.execute("DELETE FROM bench_scale_day WHERE day = %s", (day,))  # reloaded by the next run
    out["drop_s"] = round(result["drop_s"], 3)
    return out


# --- Main --------------------------------------------------------------------------------------


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000_000, help="events of history (default 100M)")
    parser.add_argument("--days", type=int, default=35, help="days of history (default 35)")
    parser.add_argument("--tenants", type=int, default=100, help="tenants of the history (default 100)")
    parser.add_argument("--loaders", type=int, default=2, help="days loaded at a time (default 2)")
    parser.add_argument("--build-only", action="store_true", help="build the history, print sizes, stop")
    parser.add_argument("--batches", type=int, default=100, help="timed batches of 1,000 per round (100)")
    parser.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="ingestion rounds (default 3)")
    parser.add_argument("--new", type=int, default=100_000, help="events in a new hour (default 100,000)")
    parser.add_argument("--repeat", type=int, default=3, help="new hours per store (default 3)")
    parser.add_argument("--skip-retention", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-url", help=argparse.SUPPRESS)
    parser.add_argument("--child-params", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.child_url, json.loads(args.child_params))
        return
    if args.events < args.days or args.days < 2:
        parser.error("--events must be at least --days, and --days at least 2")

    bench_started = time.perf_counter()
    urls = {"history": common.bench_database_url(DB_HISTORY), "empty": common.bench_database_url(DB_EMPTY)}
    # Django in this process only for the product's helpers the ingestion phase imports
    # (bench/ingest_batch.py's db_params); it keeps no connection open across the forks.
    common.setup_django(urls["history"])
    from django.db import connections

    connections.close_all()
    plan = history_plan(urls["history"], args)
    args.history_end = plan["history_end"]
    dbs = {}
    for name, url in urls.items():
        params = {"tenants": args.tenants}
        if name == "history":
            params.update(days=[d.isoformat() for d in plan["days"]], generation=plan["generation"])
        dbs[name] = {"url": url, **run_child("setup", url, params)}
    busy = common.background_cores()
    common.warn_if_busy(busy)
    common.log(
        f"scale: {args.events:,} events of history over {args.days} days from {plan['first_day']} "
        f"({args.tenants} tenants, 3 meters); background load {busy} cores"
    )
    figures: dict = {"bench": "scale", **common.machine_info(), "background_cores_start": busy}

    built = build_history(urls["history"], plan, args, dbs["history"])
    sizes = store_sizes(urls["history"], built["events"])
    figures.update(history_events=built["events"], history_days=args.days, tenants=args.tenants)
    figures.update(build_s=round(plan["build_s"], 1), **sizes)
    common.log(
        f"history: {built['events']:,} events, built in {plan['build_s'] / 60:.1f} min in all "
        f"(day loads {built['day_load_s_sum']:.0f}s of it, summed over {args.loaders} loaders)"
    )
    common.log(
        f"sizes: events {mb(sizes['events_bytes'])} in {sizes['event_partitions']} partitions, keys "
        f"{mb(sizes['keys_bytes'])} in {sizes['key_partitions']} partitions, hourly aggregates "
        f"{mb(sizes['aggregates_bytes'])}"
    )
    common.log(
        f"bytes per million events: events {mb(sizes['event_bytes_per_million'])}, keys "
        f"{mb(sizes['key_bytes_per_million'])}, both {mb(sizes['bytes_per_million'])}"
    )
    if args.build_only:
        common.emit_json(figures)
        return

    busy = common.background_cores()
    common.warn_if_busy(busy)
    figures["background_cores"] = busy
    ing = ingestion(dbs, args)
    figures.update(ing)
    ing_ratio = ing["empty_api_events_per_s"] / ing["history_api_events_per_s"]
    base_ratio = ing["empty_baseline_events_per_s"] / ing["history_baseline_events_per_s"]
    figures.update(
        ingest_empty_over_history=round(ing_ratio, 3), baseline_empty_over_history=round(base_ratio, 3)
    )
    figures.update(
        history_api_over_baseline=round(
            ing["history_api_events_per_s"] / ing["history_baseline_events_per_s"], 3
        ),
        empty_api_over_baseline=round(ing["empty_api_events_per_s"] / ing["empty_baseline_events_per_s"], 3),
    )

    ag = aggregation(dbs, args)
    figures.update(ag, new_events=args.new)
    agg_ratio = ag["history_new_hour_s"] / ag["empty_new_hour_s"]
    figures["aggregate_history_over_empty"] = round(agg_ratio, 3)

    if not args.skip_retention:
        figures.update(retention(urls["history"], plan["days"][0]))
    figures["background_cores_end"] = common.background_cores()
    figures.update(
        total_bench_s=round(time.perf_counter() - bench_started, 1),
        goal_ratio=GOAL_RATIO,
        goal_ingest_met=ing_ratio <= GOAL_RATIO,
        goal_aggregate_met=agg_ratio <= GOAL_RATIO,
    )

    common.log("")
    common.log(
        f"ingestion through the API: {ing['history_api_events_per_s']:,} events/s with the history, "
        f"{ing['empty_api_events_per_s']:,} empty (empty/history {ing_ratio:.2f}); bare insert "
        f"{ing['history_baseline_events_per_s']:,} vs {ing['empty_baseline_events_per_s']:,} "
        f"({base_ratio:.2f})"
    )
    common.log(
        f"new hour of {args.new:,} events: {ag['history_new_hour_s'] * 1000:.0f} ms with the history, "
        f"{ag['empty_new_hour_s'] * 1000:.0f} ms empty (history/empty {agg_ratio:.2f})"
    )
    if not args.skip_retention:
        common.log(
            f"retention of {figures['retention_rows']:,} events: drop partition "
            f"{figures['drop_s'] * 1000:.0f} ms "
            f"(events {mb(figures['drop_events_size_before'])} -> {mb(figures['drop_events_size_after'])}); "
            f"DELETE {figures['delete_s']:.1f}s from a {figures['delete_rows_in_table']:,}-row table "
            f"({mb(figures['delete_size_before'])} -> {mb(figures['delete_size_after'])}, after VACUUM "
            f"{mb(figures['delete_size_after_vacuum'])} ({figures['vacuum_s']:.1f}s), after VACUUM FULL "
            f"{mb(figures['delete_size_after_vacuum_full'])} ({figures['vacuum_full_s']:.1f}s))"
        )
    common.log(
        common.goal_line("ingestion empty/history <= 1.1", figures["goal_ingest_met"], f"{ing_ratio:.2f}")
    )
    common.log(
        common.goal_line(
            "new-hour aggregation history/empty <= 1.1", figures["goal_aggregate_met"], f"{agg_ratio:.2f}"
        )
    )
    common.emit_json(figures)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
