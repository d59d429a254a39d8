"""Single-event ingestion through gunicorn, against a bare DRF endpoint on the same server.

    .venv/bin/python bench/ingest_single.py [--duration 15] [--clients 4] [--latency-duration 20]

One gunicorn (2 sync workers, production settings, DJANGO_SETTINGS_MODULE=bench.settings, which
is the product's settings plus POST /bench/bare from bench/bare_urls.py: no authentication, no
parsing, no database) serves both endpoints:
1. max throughput, closed loop: N client processes send one request after another for D seconds,
   to /bench/bare and to /api/v1/events (one event per request, unique ids, API key), in
   alternating rounds; the median of the rounds is reported;
2. latency of /api/v1/events at half its measured max rate, open loop: sender processes send on
   a fixed schedule whatever the answers; latency runs from the scheduled send time to the end of
   the response (so a stalled server is not hidden by a stalled client), p50 and p99.
Gunicorn's sync workers close the connection after every response; the clients ask for keep-alive
and reconnect when the server closes, so every request includes a loopback TCP connect.

Goal: real rps / bare rps >= 0.7, and p99 < 20 ms at half max rate (issue 14; 0.5 and 50 ms before).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

GOAL_RATIO = 0.7
GOAL_P99_MS = 20.0
REAL_PATH = "/api/v1/events"
BARE_PATH = "/bench/bare"


def make_bodies(tag: str, count: int) -> list[bytes]:
    now = datetime.now(UTC)
    bodies = []
    for i in range(count):
        moment = now - timedelta(seconds=(i % 600))
        event = {
            "id": f"{tag}-{i:08d}",
            "meter": "api_calls",
            "quantity": 1,
            "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "properties": {"path": "/x", "status": 200},
        }
        bodies.append(json.dumps(event, separators=(",", ":")).encode())
    return bodies


def _send(conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict) -> tuple[int, bytes]:
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.will_close:
            conn.close()
        return response.status, data
    except (OSError, http.client.HTTPException):
        conn.close()
        return 0, b""


def closed_loop_client(host, port, path, key, tag, count, duration, barrier, queue):
    """Send requests back to back for `duration` seconds; report completions."""
    try:
        bodies = make_bodies(tag, count)
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Api-Key {key}",
            "Connection": "keep-alive",
        }
        conn = http.client.HTTPConnection(host, port, timeout=30)
        ok = errors = 0
        first_error = ""
        barrier.wait(timeout=120)
        started = time.perf_counter()
        deadline = started + duration
        index = 0
        while time.perf_counter() < deadline:
            if index >= len(bodies):
                first_error = first_error or "ran out of pre-built bodies; raise the estimate"
                break
            status, data = _send(conn, path, bodies[index], headers)
            index += 1
            if status == 202:
                ok += 1
            else:
                errors += 1
                first_error = first_error or f"HTTP {status}: {data[:200]!r}"
        finished = time.perf_counter()
        conn.close()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        queue.put(
            {
                "ok": ok,
                "errors": errors,
                "first_error": first_error,
                "started": started,
                "finished": finished,
                "cpu": usage.ru_utime + usage.ru_stime,
            }
        )
    except BaseException as exc:
        queue.put({"fatal": f"{type(exc).__name__}: {exc}"})
        raise


def open_loop_client(host, port, path, key, tag, rate, offset, duration, barrier, queue):
    """Send at `rate` requests/s on a fixed schedule starting at `offset`; latency from schedule."""
    try:
        count = int(rate * duration) + 1
        bodies = make_bodies(tag, count)
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Api-Key {key}",
            "Connection": "keep-alive",
        }
        conn = http.client.HTTPConnection(host, port, timeout=30)
        interval = 1.0 / rate
        latencies, service, errors = [], [], 0
        first_error = ""
        lag_max = 0.0
        barrier.wait(timeout=120)
        t0 = time.perf_counter() + 0.05 + offset
        for i in range(count):
            scheduled = t0 + i * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent = time.perf_counter()
            lag_max = max(lag_max, sent - scheduled)
            status, data = _send(conn, path, bodies[i], headers)
            done = time.perf_counter()
            if status == 202:
                latencies.append(done - scheduled)
                service.append(done - sent)
            else:
                errors += 1
                first_error = first_error or f"HTTP {status}: {data[:200]!r}"
        conn.close()
        queue.put(
            {
                "latencies": latencies,
                "service": service,
                "errors": errors,
                "first_error": first_error,
                "sent": count,
                "lag_max": lag_max,
                "span": time.perf_counter() - t0,
            }
        )
    except BaseException as exc:
        queue.put({"fatal": f"{type(exc).__name__}: {exc}"})
        raise


def run_processes(target, arg_list, cpu: common.CpuMeter | None = None) -> list[dict]:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(arg_list) + 1)
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, queue)) for args in arg_list]
    for proc in procs:
        proc.start()
    barrier.wait(timeout=120)
    if cpu:
        cpu.start()
    results = [queue.get(timeout=600) for _ in procs]
    if cpu:
        cpu.stop()
    for proc in procs:
        proc.join(timeout=30)
    fatal = [r["fatal"] for r in results if "fatal" in r]
    if fatal:
        sys.exit(f"a client failed: {fatal[0]}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration", type=float, default=15.0, help="seconds per throughput round (default 15)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds per endpoint (default 2)")
    parser.add_argument("--clients", type=int, default=4, help="closed-loop client processes (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument(
        "--latency-duration", type=float, default=20.0, help="seconds of paced sends (default 20)"
    )
    parser.add_argument("--senders", type=int, default=8, help="open-loop sender processes (default 8)")
    parser.add_argument("--max-rps", type=float, default=5000.0, help="upper bound used to pre-build bodies")
    parser.add_argument(
        "--app",
        default="billing_platform.wsgi:application",
        help="WSGI app for gunicorn (to measure a candidate change kept outside the product)",
    )
    parser.add_argument("--db", default=common.DEFAULT_DB, help="database name (default billing_bench)")
    args = parser.parse_args()

    url = common.bench_database_url(args.db)
    common.setup_django(url)
    from django.db import connections

    tenant_id, key = common.tenant_with_key("bench-single")
    common.meter_ensure("api_calls", "count")
    connections.close_all()
    common.truncate_usage(url)

    busy = common.background_cores()
    common.warn_if_busy(busy)
    server = common.Gunicorn(url, workers=args.workers, settings_module="bench.settings", app=args.app)
    common.log(
        f"ingest_single: gunicorn {args.workers} sync workers on {server.host}:{server.port}, "
        f"{args.clients} closed-loop clients x {args.duration:.0f}s x {args.rounds} round(s) per endpoint, "
        f"then {args.senders} paced senders x {args.latency_duration:.0f}s; tenant {tenant_id}; "
        f"background load {busy} cores"
    )
    per_client = int(args.max_rps * (args.duration + 1) / args.clients) + 100
    run_tag = f"s{int(time.time())}"

    def throughput(path: str, tag: str, duration: float, cpu: common.CpuMeter | None = None) -> dict:
        arg_list = [
            (server.host, server.port, path, key, f"{tag}-c{c}", per_client, duration)
            for c in range(args.clients)
        ]
        results = run_processes(closed_loop_client, arg_list, cpu)
        wall = max(r["finished"] for r in results) - min(r["started"] for r in results)
        ok = sum(r["ok"] for r in results)
        errors = sum(r["errors"] for r in results)
        first_error = next((r["first_error"] for r in results if r["first_error"]), "")
        return {
            "rps": ok / wall,
            "ok": ok,
            "errors": errors,
            "first_error": first_error,
            "wall": wall,
            "client_cpu": sum(r["cpu"] for r in results),
        }

    # Warm-up: every worker has imported, connected and cached before any timing.
    throughput(BARE_PATH, f"{run_tag}-wb", 2.0)
    throughput(REAL_PATH, f"{run_tag}-wr", 2.0)

    rounds: dict[str, list[dict]] = {"bare": [], "real": []}
    for round_no in range(1, args.rounds + 1):
        for name, path in (("bare", BARE_PATH), ("real", REAL_PATH)):
            if name == "real":
                common.truncate_usage(url)
            cpu = common.CpuMeter({"gunicorn": server.worker_pids, "postgres": common.postgres_pids})
            result = throughput(path, f"{run_tag}-{name}{round_no}", args.duration, cpu)
            result["cpu"] = dict(cpu.used, clients=round(result["client_cpu"], 2))
            ours = sum(v for k, v in result["cpu"].items() if k != "machine")
            result["cpu"]["other"] = round(max(0.0, cpu.used["machine"] - ours), 2)
            rounds[name].append(result)
            per_req = {
                k: round(v / max(result["ok"], 1) * 1000, 3)
                for k, v in result["cpu"].items()
                if k != "machine"
            }
            common.log(
                f"round {round_no} {name:<4} {path:<15} {result['rps']:8,.0f} requests/s "
                f"({result['ok']} answered 202 in {result['wall']:.1f}s, {result['errors']} errors"
                f"{'; first: ' + result['first_error'] if result['first_error'] else ''}); "
                f"CPU ms per request: " + ", ".join(f"{k} {v}" for k, v in per_req.items())
            )
            if result["ok"] == 0:
                sys.exit(f"no request to {path} succeeded: {result['first_error']}")

    bare_rps = common.median([r["rps"] for r in rounds["bare"]])
    real_rps = common.median([r["rps"] for r in rounds["real"]])
    ratio = real_rps / bare_rps

    # Latency at half the real endpoint's max rate, open loop.
    common.truncate_usage(url)
    target_rps = real_rps / 2
    per_sender = target_rps / args.senders
    arg_list = [
        (
            server.host,
            server.port,
            REAL_PATH,
            key,
            f"{run_tag}-lat-s{s}",
            per_sender,
            s / target_rps,
            args.latency_duration,
        )
        for s in range(args.senders)
    ]
    cpu = common.CpuMeter({"gunicorn": server.worker_pids, "postgres": common.postgres_pids})
    lat_results = run_processes(open_loop_client, arg_list, cpu)
    server.stop()
    common.truncate_usage(url)
    latencies = [x for r in lat_results for x in r["latencies"]]
    service = [x for r in lat_results for x in r["service"]]
    sent = sum(r["sent"] for r in lat_results)
    lat_errors = sum(r["errors"] for r in lat_results)
    span = max(r["span"] for r in lat_results)
    p50 = common.percentile(latencies, 50) * 1000
    p99 = common.percentile(latencies, 99) * 1000
    figures: dict = {"bench": "ingest_single", **common.machine_info(), "background_cores": busy}
    figures.update(
        workers=args.workers,
        clients=args.clients,
        duration_s=args.duration,
        rounds=args.rounds,
        bare_rps=round(bare_rps),
        real_rps=round(real_rps),
        ratio=round(ratio, 3),
        bare_rps_rounds=[round(r["rps"]) for r in rounds["bare"]],
        real_rps_rounds=[round(r["rps"]) for r in rounds["real"]],
        errors=sum(r["errors"] for rs in rounds.values() for r in rs),
        cpu_ms_per_request={
            name: {
                k: round(common.median([r["cpu"][k] / max(r["ok"], 1) * 1000 for r in rs]), 3)
                for k in rs[0]["cpu"]
                if k != "machine"
            }
            for name, rs in rounds.items()
        },
        latency_target_rps=round(target_rps, 1),
        latency_achieved_rps=round(len(latencies) / span, 1) if span > 0 else 0,
        latency_requests=sent,
        latency_errors=lat_errors,
        latency_p50_ms=round(p50, 2),
        latency_p99_ms=round(p99, 2),
        latency_max_ms=round(max(latencies) * 1000, 2) if latencies else None,
        service_p50_ms=round(common.percentile(service, 50) * 1000, 2),
        service_p99_ms=round(common.percentile(service, 99) * 1000, 2),
        sender_max_lag_ms=round(max(r["lag_max"] for r in lat_results) * 1000, 2),
        latency_cpu_s=cpu.used,
        goal_ratio=GOAL_RATIO,
        goal_p99_ms=GOAL_P99_MS,
        goal_ratio_met=ratio >= GOAL_RATIO,
        goal_p99_met=p99 < GOAL_P99_MS and lat_errors == 0,
    )
    common.log(
        f"latency at {target_rps:,.0f} requests/s (half of max, open loop, {args.senders} senders, "
        f"{sent} requests, {lat_errors} errors): p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
        f"max {figures['latency_max_ms']} ms (from scheduled send; service time p50 "
        f"{figures['service_p50_ms']} ms, p99 {figures['service_p99_ms']} ms)"
    )
    common.log("")
    common.log(f"bare DRF endpoint (median): {bare_rps:8,.0f} requests/s")
    common.log(f"POST /api/v1/events (median): {real_rps:8,.0f} requests/s")
    common.log(f"ratio real/bare: {ratio:.3f}")
    common.log(common.goal_line(f"ratio >= {GOAL_RATIO}", figures["goal_ratio_met"], f"ratio {ratio:.3f}"))
    common.log(
        common.goal_line(
            f"p99 < {GOAL_P99_MS:.0f} ms at half max rate",
            figures["goal_p99_met"],
            f"p99 {p99:.2f} ms at {target_rps:,.0f} req/s",
        )
    )
    common.emit_json(figures)


if __name__ == "__main__":
    main()
