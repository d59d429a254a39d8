"""GET /api/v1/entitlements/{meter} through gunicorn on PostgreSQL, against the bare DRF view.

    .venv/bin/python bench/entitlements.py [--tenants 1000] [--duration 10] [--rounds 2] [--clients 1]

The table (database `billing_bench_ent`, built once and reused while its shape matches):
- `--tenants` tenants (half free, half metered) x 3 meters (count, sum, max), every hour of the
  last 31 days aggregated: about 2.2M hourly aggregates at 1,000 tenants;
- per-meter plan allowances: the free plan refuses beyond a limit on the count meter, includes an
  allowance of the others;
- rebuilt on every run (the current hour moves): every (tenant, meter) has the current hour pending
  with 20 raw events, and one tenant in ten an earlier hour of the month pending again (late events
  after it was aggregated), so each read adds raw events to aggregates as in production.

One gunicorn (2 sync workers, bench.settings: the product's URLs plus POST /bench/bare, a DRF view
with no authentication, parsing or database) serves both endpoints. Closed loop: `--clients`
processes send one request after another for `--duration` seconds per round, alternating bare and
real rounds; each request's latency is timed by the client (a loopback connect included: the sync
workers close every connection). Requests go round-robin over `--keyed` tenants' keys and the three
meters. Reported: p50/p99 of both and the real/bare ratio of requests/s, medians of the rounds.

Goal: p99 of GET /api/v1/entitlements/{meter} < 20 ms.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

GOAL_P99_MS = 20.0
BARE_PATH = "/bench/bare"
METERS = (("ent_calls", "count"), ("ent_tokens", "sum"), ("ent_peak", "max"))
SLUG_PREFIX = "bench-ent-"
RAW_PER_PENDING_HOUR = 20

AGGREGATES_SQL = """
INSERT INTO metering_hourlyaggregate
    (tenant_id, meter_id, hour, value, event_count, revision, created_at, updated_at)
SELECT t.id, m.id, h.hour, (t.id %% 7 + 1) * 3, 3, 1, now(), now()
FROM tenants_tenant t
CROSS JOIN metering_meter m
CROSS JOIN generate_series(%(start)s::timestamptz, %(end)s::timestamptz, interval '1 hour') AS h(hour)
WHERE t.slug LIKE %(prefix)s AND m.code = ANY(%(meters)s)
"""

EVENTS_SQL = """
INSERT INTO metering_usageevent
    (tenant_id, meter_id, event_id, "timestamp", quantity, properties, received_at)
SELECT t.id, m.id, 'bench-' || m.code || '-' || p.hour_no || '-' || n, p.hour + n * interval '1 second',
       n %% 5 + 1, '{}'::jsonb, now()
FROM tenants_tenant t
CROSS JOIN metering_meter m
CROSS JOIN (VALUES (0, %(current)s::timestamptz), (1, %(late)s::timestamptz)) AS p(hour_no, hour)
CROSS JOIN generate_series(1, %(per_hour)s) AS n
WHERE t.slug LIKE %(prefix)s AND m.code = ANY(%(meters)s)
  AND (p.hour_no = 0 OR t.id %% 10 = 0)
"""

PENDING_SQL = """
INSERT INTO metering_pendinghour (tenant_id, meter_id, hour, marked_at)
SELECT DISTINCT tenant_id, meter_id, date_trunc('hour', "timestamp", 'UTC'), now()
FROM metering_usageevent WHERE event_id LIKE 'bench-%%'
ON CONFLICT DO NOTHING
"""


def seed(url: str, *, tenants: int, keyed: int) -> tuple[list[str], dict]:
    """Build (or reuse) the table; the keys of `keyed` tenants. Returns (keys, shape)."""
    from decimal import Decimal

    from django.db import connection

    from metering.allowances import plan_allowance_set
    from metering.models import HourlyAggregate, Meter
    from tenants.models import Tenant
    from tenants.services import api_key_issue

    meters = {
        code: Meter.objects.get(pk=common.meter_ensure(code, aggregation)) for code, aggregation in METERS
    }
    plan_allowance_set(
        plan="free",
        meter=meters["ent_calls"],
        included=Decimal(100_000),
        hard_limit=Decimal(10**9),
        at_limit="refuse",
    )
    plan_allowance_set(plan="free", meter=meters["ent_tokens"], included=Decimal(50_000))
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(days=31)
    ours = Tenant.objects.filter(slug__startswith=SLUG_PREFIX)
    expected = tenants * len(METERS) * int((now - timedelta(hours=1) - start) / timedelta(hours=1) + 1)
    existing = HourlyAggregate.objects.filter(tenant__slug__startswith=SLUG_PREFIX).count()
    if ours.count() != tenants or existing < expected * 0.9:
        common.log(f"seeding {tenants} tenants x {len(METERS)} meters x 31 days of hourly aggregates")
        started = time.monotonic()
        with connection.cursor() as cursor:
            cursor.execute(
                "TRUNCATE metering_hourlyaggregatechange, metering_hourlyaggregate, "
                "metering_usageevent, metering_pendinghour"
            )
        ours.delete()
        Tenant.objects.bulk_create(
            Tenant(
                name=f"{SLUG_PREFIX}{n:05d}",
                slug=f"{SLUG_PREFIX}{n:05d}",
                plan="free" if n % 2 else "metered",
                monthly_free_allowance=Decimal(1000),
            )
            for n in range(tenants)
        )
        with connection.cursor() as cursor:
            cursor.execute(
                AGGREGATES_SQL,
                {
                    "start": start,
                    "end": now - timedelta(hours=1),
                    "prefix": SLUG_PREFIX + "%",
                    "meters": list(meters),
                },
            )
            common.log(f"  {cursor.rowcount:,} hourly aggregates in {time.monotonic() - started:.0f}s")
    # The current hour moves: pending hours and their raw events are rebuilt on every run.
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM metering_pendinghour")
        cursor.execute("DELETE FROM metering_usageevent WHERE event_id LIKE 'bench-%%'")
        late = now - timedelta(hours=30) if now.day > 2 else now - timedelta(hours=1)
        cursor.execute(
            EVENTS_SQL,
            {
                "current": now,
                "late": late,
                "per_hour": RAW_PER_PENDING_HOUR,
                "prefix": SLUG_PREFIX + "%",
                "meters": list(meters),
            },
        )
        events = cursor.rowcount
        cursor.execute(PENDING_SQL)
        pending = cursor.rowcount
        # As autovacuum leaves a table that is not written to: its visibility map set, so that the
        # month's sum is an index-only scan.
        cursor.execute("VACUUM ANALYZE metering_hourlyaggregate")
        cursor.execute("ANALYZE metering_pendinghour")
        cursor.execute("ANALYZE metering_usageevent")
        cursor.execute("SELECT count(*) FROM metering_hourlyaggregate")
        aggregates = cursor.fetchone()[0]
    keys = [api_key_issue(tenant=tenant, name="bench").secret for tenant in ours.order_by("slug")[:keyed]]
    shape = {
        "tenants": tenants,
        "meters": len(METERS),
        "hourly_aggregates": aggregates,
        "pending_hours": pending,
        "raw_events": events,
    }
    common.log(
        f"table: {aggregates:,} hourly aggregates, {pending:,} pending hours holding {events:,} raw events"
    )
    return keys, shape


def client(host, port, paths, keys, method, duration, barrier, queue):
    """Requests back to back for `duration` seconds; each one's latency in seconds."""
    try:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        latencies, errors, first_error = [], 0, ""
        barrier.wait(timeout=120)
        deadline = time.perf_counter() + duration
        index = 0
        while time.perf_counter() < deadline:
            path, key = paths[index % len(paths)], keys[index % len(keys)]
            index += 1
            started = time.perf_counter()
            try:
                conn.request(
                    method, path, headers={"Authorization": f"Api-Key {key}", "Connection": "keep-alive"}
                )
                response = conn.getresponse()
                data = response.read()
                if response.will_close:
                    conn.close()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                status, data = 0, str(exc).encode()
            elapsed = time.perf_counter() - started
            if status in (200, 202):
                latencies.append(elapsed)
            else:
                errors += 1
                first_error = first_error or f"HTTP {status}: {data[:200]!r}"
        conn.close()
        queue.put({"latencies": latencies, "errors": errors, "first_error": first_error})
    except BaseException as exc:
        queue.put({"fatal": f"{type(exc).__name__}: {exc}"})
        raise


def run_round(server, paths, keys, method, duration, clients) -> dict:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(clients + 1)
    queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=client,
            # Each client starts at another place in the rotation.
            args=(server.host, server.port, paths[c:] + paths[:c], keys, method, duration, barrier, queue),
        )
        for c in range(clients)
    ]
    for proc in procs:
        proc.start()
    barrier.wait(timeout=120)
    results = [queue.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    fatal = [r["fatal"] for r in results if "fatal" in r]
    if fatal:
        sys.exit(f"a client failed: {fatal[0]}")
    latencies = [x for r in results for x in r["latencies"]]
    errors = sum(r["errors"] for r in results)
    first_error = next((r["first_error"] for r in results if r["first_error"]), "")
    if not latencies:
        sys.exit(f"no request succeeded: {first_error}")
    return {
        "requests": len(latencies),
        "rps": len(latencies) / duration,
        "p50_ms": common.percentile(latencies, 50) * 1000,
        "p99_ms": common.percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000,
        "errors": errors,
        "first_error": first_error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tenants", type=int, default=1000, help="tenants in the table (default 1000)")
    parser.add_argument("--keyed", type=int, default=50, help="tenants whose keys send requests (default 50)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per round (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per endpoint (default 2)")
    parser.add_argument("--clients", type=int, default=1, help="closed-loop client processes (default 1)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--db", default="billing_bench_ent", help="database name (default billing_bench_ent)")
    args = parser.parse_args()

    url = common.bench_database_url(args.db)
    common.setup_django(url)
    from django.db import connections

    keys, shape = seed(url, tenants=args.tenants, keyed=args.keyed)
    connections.close_all()

    busy = common.background_cores()
    common.warn_if_busy(busy)
    server = common.Gunicorn(url, workers=args.workers, settings_module="bench.settings")
    real_paths = [f"/api/v1/entitlements/{code}" for code, _ in METERS]
    common.log(
        f"entitlements: gunicorn {args.workers} sync workers on {server.host}:{server.port}, "
        f"{args.clients} closed-loop clients x {args.duration:.0f}s x {args.rounds} round(s) per endpoint; "
        f"background load {busy} cores"
    )
    # Warm-up: every worker has imported, connected and cached keys before any timing.
    run_round(server, [BARE_PATH], keys, "POST", 2.0, args.clients)
    run_round(server, real_paths, keys, "GET", 2.0, args.clients)

    rounds: dict[str, list[dict]] = {"bare": [], "real": []}
    for round_no in range(1, args.rounds + 1):
        for name, paths, method in (("bare", [BARE_PATH], "POST"), ("real", real_paths, "GET")):
            result = run_round(server, paths, keys, method, args.duration, args.clients)
            rounds[name].append(result)
            common.log(
                f"round {round_no} {name:<4} {result['rps']:7,.0f} requests/s, "
                f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
                f"max {result['max_ms']:.1f} ms "
                f"({result['requests']} answered, {result['errors']} errors"
                f"{'; first: ' + result['first_error'] if result['first_error'] else ''})"
            )
    server.stop()

    def med(name: str, key: str) -> float:
        return common.median([r[key] for r in rounds[name]])

    p99 = med("real", "p99_ms")
    figures: dict = {"bench": "entitlements", **common.machine_info(), "background_cores": busy, **shape}
    figures.update(
        workers=args.workers,
        clients=args.clients,
        duration_s=args.duration,
        rounds=args.rounds,
        bare_rps=round(med("bare", "rps")),
        real_rps=round(med("real", "rps")),
        ratio=round(med("real", "rps") / med("bare", "rps"), 3),
        bare_p50_ms=round(med("bare", "p50_ms"), 2),
        bare_p99_ms=round(med("bare", "p99_ms"), 2),
        real_p50_ms=round(med("real", "p50_ms"), 2),
        real_p99_ms=round(p99, 2),
        real_p99_ms_rounds=[round(r["p99_ms"], 2) for r in rounds["real"]],
        errors=sum(r["errors"] for rs in rounds.values() for r in rs),
        goal_p99_ms=GOAL_P99_MS,
        goal_p99_met=p99 < GOAL_P99_MS,
    )
    common.log("")
    common.log(f"bare DRF view (median): p50 {figures['bare_p50_ms']} ms, p99 {figures['bare_p99_ms']} ms")
    common.log(
        f"GET /api/v1/entitlements/{{meter}} (median): p50 {figures['real_p50_ms']} ms, "
        f"p99 {figures['real_p99_ms']} ms"
    )
    common.log(f"requests/s real/bare: {figures['ratio']}")
    common.log(common.goal_line("p99 < 20 ms", figures["goal_p99_met"], f"p99 {p99:.2f} ms"))
    common.emit_json(figures)


if __name__ == "__main__":
    main()
