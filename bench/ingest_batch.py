"""Batch ingestion through the HTTP API, against a bare PostgreSQL insert of the same rows.

    .venv/bin/python bench/ingest_batch.py [--batches 200] [--clients 4] [--batch-size 1000]

Phases (the events table and the pending-hours queue are emptied before each):
1. api: gunicorn (2 sync workers, production settings) and N client processes POSTing
   pre-serialized batches of 1,000 events to /api/v1/events, 10% of ids repeating earlier events;
2. baseline: the same rows, from the same number of processes, straight into PostgreSQL with
   psycopg: the bare exactly-once insert into the same partitioned store (keys into two
   generations ON CONFLICT DO NOTHING, then the events whose keys were new; BASELINE_SQL);
3. product_sql (diagnostic): the product's own statement (metering.eventstore.postgresql: keys,
   events, plus the pending-hours upsert) run the same way, without HTTP or Python validation,
   which splits the gap between database work and request handling;
4. lago: the same batches as Lago's `POST /api/v1/events/batch` bodies to
   /compat/lago/api/v1/events/batch, every transaction_id new (Lago refuses a batch repeating a
   stored one with 422, so this phase sends no duplicates);
5. openmeter: the same batches as CloudEvents (application/cloudevents-batch+json) to
   /compat/openmeter/api/v1/events, duplicates included (OpenMeter ignores them; the answer is 204).

Every phase first sends the same untimed warm-up batches (whose ids the duplicates repeat).
Figures: events/s = (accepted + duplicates) / wall time of the timed batches (the compat phases:
events sent in batches answered 200/204).
Goal: >= 20,000 events/s through the API and api/baseline >= 0.8 (issue 14; 0.5 before); the compat
endpoints are printed beside the native one (compat/api ratios), no goal of their own.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import random
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

GOAL_EVENTS_PER_S = 20_000
GOAL_RATIO = 0.8

# The bare exactly-once insert of the same rows into the same store (metering/eventstore/
# postgresql.py): each key into the current and previous generation, the events whose keys were both
# new. ORDER BY as in the product's statement: concurrent batches that share ids then take their
# locks in one order and cannot deadlock. What the product adds on top: the pending-hours upsert
# (product_sql) and HTTP, authentication and validation (api).
BASELINE_SQL = """
WITH input AS MATERIALIZED (
    SELECT * FROM unnest(%(meter_ids)s::bigint[], %(event_ids)s::varchar[], %(timestamps)s::timestamptz[],
                         %(quantities)s::numeric[], %(properties)s::text[])
         AS u(meter_id, event_id, ts, quantity, properties)
), keys AS (
    INSERT INTO metering_eventkey (generation, tenant_id, event_id, "timestamp")
    SELECT g, %(tenant)s, i.event_id, i.ts FROM input i CROSS JOIN unnest(%(generations)s::integer[]) g
    ORDER BY i.event_id, g
    ON CONFLICT (tenant_id, event_id, generation) DO NOTHING
    RETURNING event_id
)
INSERT INTO metering_usageevent
    (tenant_id, meter_id, event_id, "timestamp", quantity, properties, received_at)
SELECT %(tenant)s, i.meter_id, i.event_id, i.ts, i.quantity, i.properties::jsonb, %(now)s
FROM input i JOIN (SELECT event_id FROM keys GROUP BY event_id HAVING count(*) = 2) k USING (event_id)
"""


# --- Data --------------------------------------------------------------------------------------


def make_batches(
    *, warmup: int, count: int, size: int, dup_fraction: float, seed: int, run_tag: str, clients: int
):
    """`warmup` + `count` batches of `size` events (lists of dicts).

    In each timed batch a fraction of the events repeats events sent earlier: from the warm-up
    batches or from earlier batches of the same client (timed batch t goes to client t % clients),
    so the original is always committed before its repeat arrives, whatever the interleaving.
    """
    rng = random.Random(seed)
    now = datetime.now(UTC)
    paths = ["/x", "/y", "/api/items", "/api/users/42"]
    serial = 0
    n_dup = round(size * dup_fraction)

    def fresh(n):
        nonlocal serial
        events = []
        for _ in range(n):
            serial += 1
            moment = now - timedelta(seconds=rng.uniform(10, 3 * 3600))
            events.append(
                {
                    "id": f"{run_tag}-{serial:09d}",
                    "meter": "api_calls",
                    "quantity": 1,
                    "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "properties": {"path": rng.choice(paths), "status": 200},
                }
            )
        return events

    warm = [fresh(size) for _ in range(warmup)]
    timed: list[list[dict]] = []
    for t in range(count):
        events = fresh(size - n_dup)
        pool = warm + timed[t % clients : t : clients]
        for _ in range(n_dup):
            source = pool[rng.randrange(len(pool))]
            events.append(dict(source[rng.randrange(len(source))]))
        rng.shuffle(events)
        timed.append(events)
    return warm, timed


def lago_body(events: list[dict], subscription: str, tag: str) -> bytes:
    """A batch as lago-python-client's batch_create sends it: every transaction_id new."""
    return json.dumps(
        {
            "events": [
                {
                    "transaction_id": f"{e['id']}-{tag}{n}",
                    "external_subscription_id": subscription,
                    "code": e["meter"],
                    "timestamp": str(
                        datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
                    ),
                    "precise_total_amount_cents": None,
                    "properties": e["properties"],
                }
                for n, e in enumerate(events)
            ]
        },
        separators=(",", ":"),
    ).encode()


def openmeter_body(events: list[dict], subject: str) -> bytes:
    """A batch of CloudEvents as the openmeter client's ingest_events sends it."""
    return json.dumps(
        [
            {
                "id": e["id"],
                "source": "bench",
                "specversion": "1.0",
                "type": e["meter"],
                "subject": subject,
                "time": e["timestamp"],
                "data": e["properties"],
            }
            for e in events
        ]
    ).encode()


def db_params(tenant_id: int, meter_id: int, events: list[dict], now: datetime) -> dict:
    """The parameters of one batch for BASELINE_SQL and the product's statement
    (metering.eventstore.postgresql.INSERT_COUNTING).

    Each array goes as one pre-built array literal (cast by the statement), so the database
    clients spend next to no CPU adapting values during the timed part.
    """
    from metering.eventstore.postgresql import generation

    return {
        "tenant": tenant_id,
        "generations": f"{{{generation(now) - 1},{generation(now)}}}",
        "tenant_ids": common.pg_array_literal([tenant_id] * len(events)),
        "now": now,
        "meter_ids": common.pg_array_literal([meter_id] * len(events)),
        "event_ids": common.pg_array_literal(e["id"] for e in events),
        "timestamps": common.pg_array_literal(e["timestamp"] for e in events),
        "quantities": common.pg_array_literal(Decimal(e["quantity"]) for e in events),
        "properties": common.pg_array_literal(
            json.dumps(e["properties"], separators=(",", ":")) for e in events
        ),
        "count": len(events),
    }


# --- Clients (forked processes) ----------------------------------------------------------------


# Each HTTP phase: (path, content type, status of success).
ENDPOINTS = {
    "api": ("/api/v1/events", "application/json", 202),
    "lago": ("/compat/lago/api/v1/events/batch", "application/json", 200),
    "openmeter": ("/compat/openmeter/api/v1/events", "application/cloudevents-batch+json", 204),
}


def http_client(host, port, key, endpoint, bodies, barrier, queue, done):
    """POST every (body, events in it); native answers count accepted and duplicates, the compat
    endpoints' successes count the events sent."""
    path, content_type, ok = ENDPOINTS[endpoint]
    headers = {
        "Content-Type": content_type,
        "Authorization": f"Bearer {key}",
        "Connection": "keep-alive",
    }
    conn = http.client.HTTPConnection(host, port, timeout=120)
    accepted = duplicates = errors = 0
    latencies = []
    barrier.wait()
    started = time.perf_counter()
    for body, count in bodies:
        t0 = time.perf_counter()
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            errors += 1
            continue
        latencies.append(time.perf_counter() - t0)
        if response.status == ok == 202:
            result = json.loads(data)
            accepted += result["accepted"]
            duplicates += result["duplicates"]
        elif response.status == ok:
            accepted += count
        else:
            errors += 1
            if errors <= 3:
                print(f"  client: HTTP {response.status}: {data[:300]!r}", file=sys.stderr, flush=True)
    finished = time.perf_counter()
    conn.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    queue.put(
        {
            "started": started,
            "finished": finished,
            "accepted": accepted,
            "duplicates": duplicates,
            "errors": errors,
            "latencies": latencies,
            "cpu": usage.ru_utime + usage.ru_stime,
        }
    )


def db_client(url, sql, param_list, barrier, queue, done):
    import psycopg

    accepted = 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT 1")
        barrier.wait()
        started = time.perf_counter()
        with conn.cursor() as cursor:
            for params in param_list:
                cursor.execute(sql, params)
                if cursor.description:  # the product statement answers (accepted, pending)
                    accepted += cursor.fetchone()[0]
                else:
                    accepted += cursor.rowcount
        finished = time.perf_counter()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        total = sum(p["count"] for p in param_list)
        queue.put(
            {
                "started": started,
                "finished": finished,
                "accepted": accepted,
                "duplicates": total - accepted,
                "errors": 0,
                "latencies": [],
                "cpu": usage.ru_utime + usage.ru_stime,
            }
        )
        # Keep the backend alive until the parent has read the CPU counters.
        done.wait(60)


def _guarded(target, *args):
    queue = args[-2]
    try:
        target(*args)
    except BaseException as exc:  # a client's failure must reach the parent, not hang it
        queue.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


def run_clients(target, per_client_args: list[tuple], cpu: common.CpuMeter | None = None) -> dict:
    """Fork one process per client, release them together, gather their figures."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(per_client_args) + 1)
    queue = ctx.Queue()
    done = ctx.Event()
    procs = [
        ctx.Process(target=_guarded, args=(target, *args, barrier, queue, done)) for args in per_client_args
    ]
    for proc in procs:
        proc.start()
    if cpu:
        cpu.start()
    barrier.wait(timeout=300)
    results = [queue.get(timeout=900) for _ in procs]
    failed = [r["error"] for r in results if "error" in r]
    if failed:
        done.set()
        sys.exit(f"a client failed: {failed[0]}")
    if cpu:
        cpu.stop()
    done.set()
    for proc in procs:
        proc.join(timeout=30)
    wall = max(r["finished"] for r in results) - min(r["started"] for r in results)
    latencies = [x for r in results for x in r["latencies"]]
    return {
        "wall_s": wall,
        "accepted": sum(r["accepted"] for r in results),
        "duplicates": sum(r["duplicates"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "latencies": latencies,
        "client_cpu_s": sum(r["cpu"] for r in results),
    }


def split(items: list, parts: int) -> list[list]:
    """Round-robin: client c sends items c, c + parts, ... so the global order interleaves."""
    return [items[c::parts] for c in range(parts)]


# --- Main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=200, help="timed batches per phase (default 200)")
    parser.add_argument("--batch-size", type=int, default=1000, help="events per batch (max 1000)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client processes (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of all phases; medians reported (default 3)"
    )
    parser.add_argument("--dup-fraction", type=float, default=0.10)
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed batches first (default 2 x clients)"
    )
    parser.add_argument(
        "--app",
        default="billing_platform.wsgi:application",
        help="WSGI app for gunicorn (to measure a candidate change kept outside the product)",
    )
    parser.add_argument("--db", default=common.DEFAULT_DB, help="database name (default billing_bench)")
    parser.add_argument(
        "--skip-product-sql", action="store_true", help="skip the diagnostic product_sql phase"
    )
    parser.add_argument(
        "--skip-compat", action="store_true", help="skip the Lago and OpenMeter compat phases"
    )
    args = parser.parse_args()
    if not 1 <= args.batch_size <= 1000:
        parser.error("--batch-size must be 1..1000")
    warmup = max(1, args.warmup if args.warmup is not None else 2 * args.clients)

    url = common.bench_database_url(args.db)
    common.setup_django(url)
    from django.db import connections

    from metering.eventstore.postgresql import INSERT_COUNTING as _PG_INSERT
    from tenants.models import Tenant

    tenant_id, key = common.tenant_with_key("bench-batch")
    slug = Tenant.objects.get(pk=tenant_id).slug
    meter_id = common.meter_ensure("api_calls", "count")
    connections.close_all()  # nothing of Django's is shared with forked clients
    busy = common.background_cores()
    common.warn_if_busy(busy)

    warm, timed = make_batches(
        warmup=warmup,
        count=args.batches,
        size=args.batch_size,
        dup_fraction=args.dup_fraction,
        seed=7,
        run_tag=f"b{int(time.time())}",
        clients=args.clients,
    )
    n_timed = sum(len(b) for b in timed)
    warm_ids = {e["id"] for b in warm for e in b}
    n_dup_sent = n_timed - len({e["id"] for b in timed for e in b} - warm_ids)
    common.log(
        f"ingest_batch: {args.batches} timed batches of {args.batch_size} events ({n_timed} events, "
        f"{n_dup_sent} repeated ids), {args.clients} client processes, {args.workers} gunicorn sync workers, "
        f"{warmup} warm-up batches per phase, {args.rounds} round(s), tenant {tenant_id}"
    )

    # Pre-serialize everything before any timing.
    now = datetime.now(UTC)

    def native_body(events):
        return json.dumps({"events": events}, separators=(",", ":")).encode()

    inputs = {
        "api": ([(native_body(b), len(b)) for b in warm], [(native_body(b), len(b)) for b in timed]),
        # Every transaction id new (the tables are emptied before each phase and round).
        "lago": (
            [(lago_body(b, slug, f"w{i}-"), len(b)) for i, b in enumerate(warm)],
            [(lago_body(b, slug, f"t{i}-"), len(b)) for i, b in enumerate(timed)],
        ),
        "openmeter": (
            [(openmeter_body(b, slug), len(b)) for b in warm],
            [(openmeter_body(b, slug), len(b)) for b in timed],
        ),
        "db": (
            [db_params(tenant_id, meter_id, b, now) for b in warm],
            [db_params(tenant_id, meter_id, b, now) for b in timed],
        ),
    }
    body_kb = sum(len(b) for b, _ in inputs["api"][1]) / len(timed) / 1e3

    server = common.Gunicorn(url, workers=args.workers, app=args.app)
    phases = {
        "api": (http_client, lambda part: (server.host, server.port, key, "api", part), "api"),
        "baseline": (db_client, lambda part: (url, BASELINE_SQL, part), "db"),
    }
    if not args.skip_product_sql:
        phases["product_sql"] = (db_client, lambda part: (url, _PG_INSERT, part), "db")
    if not args.skip_compat:
        phases["lago"] = (http_client, lambda part: (server.host, server.port, key, "lago", part), "lago")
        phases["openmeter"] = (
            http_client,
            lambda part: (server.host, server.port, key, "openmeter", part),
            "openmeter",
        )
    results: dict[str, list[dict]] = {name: [] for name in phases}
    for round_no in range(1, args.rounds + 1):
        for name, (target, make_args, kind) in phases.items():
            common.truncate_usage(url)
            warm_in, timed_in = inputs[kind]
            run_clients(target, [make_args(part) for part in split(warm_in, args.clients)])
            groups = {"postgres": common.postgres_pids}
            if name in ENDPOINTS:
                groups["gunicorn"] = server.worker_pids
            cpu = common.CpuMeter(groups)
            result = run_clients(target, [make_args(part) for part in split(timed_in, args.clients)], cpu)
            result["events_per_s"] = (result["accepted"] + result["duplicates"]) / result["wall_s"]
            result["cpu"] = dict(cpu.used, clients=round(result["client_cpu_s"], 2))
            ours = sum(v for k, v in result["cpu"].items() if k != "machine")
            result["cpu"]["other"] = round(max(0.0, cpu.used["machine"] - ours), 2)
            results[name].append(result)
            extra = ""
            if name in ENDPOINTS:
                lat = result["latencies"]
                extra = (
                    f"; batch latency p50 {common.percentile(lat, 50) * 1000:.0f} ms, "
                    f"p99 {common.percentile(lat, 99) * 1000:.0f} ms"
                )
            cpu_text = ", ".join(f"{k} {v:.1f}" for k, v in result["cpu"].items() if k != "machine")
            common.log(
                f"round {round_no} {name:<11} {result['events_per_s']:9,.0f} events/s "
                f"({result['accepted']} accepted + {result['duplicates']} duplicates "
                f"in {result['wall_s']:.2f}s, "
                f"{result['errors']} errors{extra}); CPU s: {cpu_text}"
            )
    server.stop()
    common.truncate_usage(url)

    def med(name: str, field: str = "events_per_s") -> float:
        return common.median([r[field] for r in results[name]])

    api_eps, base_eps = med("api"), med("baseline")
    ratio = api_eps / base_eps
    api_lat = [x for r in results["api"] for x in r["latencies"]]
    last_api, last_base = results["api"][-1], results["baseline"][-1]
    counts_agree = all(
        (a["accepted"], a["duplicates"]) == (b["accepted"], b["duplicates"])
        for a, b in zip(results["api"], results["baseline"], strict=True)
    )
    per_1k = {
        name: {
            k: round(common.median([r["cpu"][k] for r in rs]) / (n_timed / 1000) * 1000, 1)
            for k in rs[0]["cpu"]
        }
        for name, rs in results.items()
    }
    figures: dict = {"bench": "ingest_batch", **common.machine_info(), "background_cores": busy}
    figures.update(
        batches=args.batches,
        batch_size=args.batch_size,
        clients=args.clients,
        workers=args.workers,
        rounds=args.rounds,
        events=n_timed,
        duplicates_sent=n_dup_sent,
        avg_body_kb=round(body_kb, 1),
        api_events_per_s=round(api_eps),
        baseline_events_per_s=round(base_eps),
        ratio=round(ratio, 3),
        api_events_per_s_rounds=[round(r["events_per_s"]) for r in results["api"]],
        baseline_events_per_s_rounds=[round(r["events_per_s"]) for r in results["baseline"]],
        api_accepted=last_api["accepted"],
        api_duplicates=last_api["duplicates"],
        api_errors=sum(r["errors"] for r in results["api"]),
        baseline_accepted=last_base["accepted"],
        baseline_duplicates=last_base["duplicates"],
        counts_agree=counts_agree,
        api_batch_p50_ms=round(common.percentile(api_lat, 50) * 1000, 1),
        api_batch_p99_ms=round(common.percentile(api_lat, 99) * 1000, 1),
    )
    if "product_sql" in results:
        figures["product_sql_events_per_s"] = round(med("product_sql"))
        figures["product_sql_events_per_s_rounds"] = [
            round(r["events_per_s"]) for r in results["product_sql"]
        ]
    for name in ("lago", "openmeter"):
        if name in results:
            figures[f"{name}_events_per_s"] = round(med(name))
            figures[f"{name}_events_per_s_rounds"] = [round(r["events_per_s"]) for r in results[name]]
            figures[f"{name}_vs_api"] = round(med(name) / api_eps, 3)
            figures[f"{name}_errors"] = sum(r["errors"] for r in results[name])
    figures["cpu_ms_per_1k_events"] = per_1k
    figures.update(
        goal_events_per_s=GOAL_EVENTS_PER_S,
        goal_ratio=GOAL_RATIO,
        goal_events_per_s_met=api_eps >= GOAL_EVENTS_PER_S,
        goal_ratio_met=ratio >= GOAL_RATIO,
    )

    common.log("")
    common.log(
        f"api (median of {args.rounds}):      {api_eps:9,.0f} events/s  (accepted + duplicates per second)"
    )
    common.log(
        f"baseline (median of {args.rounds}): {base_eps:9,.0f} events/s  "
        "(the bare exactly-once insert: keys, then new events)"
    )
    if "product_sql" in results:
        common.log(
            f"product_sql (median):  {figures['product_sql_events_per_s']:9,} events/s  "
            "(the product's statement alone: keys, events, pending hours; no HTTP, no validation)"
        )
    for name, what in (
        ("lago", "Lago batch, /compat/lago/api/v1/events/batch, no duplicates"),
        ("openmeter", "OpenMeter CloudEvents batch, /compat/openmeter/api/v1/events"),
    ):
        if name in results:
            common.log(
                f"{name} (median):  {figures[f'{name}_events_per_s']:9,} events/s  ({what}; "
                f"{figures[f'{name}_vs_api']:.2f}x the native api)"
            )
    common.log(f"ratio api/baseline: {ratio:.3f}")
    for name, costs in per_1k.items():
        common.log(f"CPU ms per 1,000 events, {name}: " + ", ".join(f"{k} {v}" for k, v in costs.items()))
    common.log(f"accepted/duplicates agree between api and baseline in every round: {counts_agree}")
    common.log(
        common.goal_line(
            "events/s >= 20,000", figures["goal_events_per_s_met"], f"{api_eps:,.0f} events/s through the API"
        )
    )
    common.log(common.goal_line(f"ratio >= {GOAL_RATIO}", figures["goal_ratio_met"], f"ratio {ratio:.3f}"))
    common.emit_json(figures)


if __name__ == "__main__":
    main()
