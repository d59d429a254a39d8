"""One worker process against two: a backlog of pending hours aggregated, then reported to Stripe.

    .venv/bin/python bench/workers.py [--tenants 2000] [--hours 4] [--events 5] [--rounds 1]

1. Starts the suite's local Stripe server (tests/stripe_server) in this process, with no rate limit;
   sets up --tenants metered tenants with their Stripe customers (onboarding's
   `tenant_customer_ensure`) and three meters (count, sum, max) with their Stripe billing meters.
2. For each round and worker count (1, then 2): seeds a backlog of --hours new past hours for every
   tenant and meter (--tenants x 3 x --hours pending hours, about --events raw events each, the sum
   meter's quantities with fractions), through the public ingestion functions
   (`usage_events_validate` + `usage_events_record`), before any worker starts.
3. Starts that many real `celery worker` processes (prefork, concurrency 1 each, the Redis broker, a
   queue of this run's own), warms each up, then publishes one `metering.aggregate_usage` per worker
   at once (what Beat publishes every hour; a second message is what a backlog longer than an hour
   leaves) and times until every task has finished and no hour is pending; then one
   `stripe_sync.report_usage` per worker, timed until every task has finished and nothing is left to
   send.
4. Checks each stage: every pending hour aggregated exactly once (the runs' hour counts add up to the
   backlog, one revision-1 aggregate per hour, each equal to what was seeded) and every report sent
   exactly once (the identifiers the local Stripe server received: each once, all of them the outbox's,
   no two calls for one customer and meter in flight at once; per customer and meter, the whole units
   received equal the floor of the local running total).
On this project's 2-core machine the workers, PostgreSQL and the local Stripe server share two cores:
the speed-up says that work is shared without duplication and throughput grows, not what two
machines would do; CPU per 1,000 hours with one and with two workers says that the work is not
repeated. Last line: one JSON object. Uses its own database (billing_bench_workers).
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import timedelta
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

STRIPE_KEY = "sk_test_BenchWorkersLocalStripe0001"
# (code, aggregation) of the three meters every tenant reports on.
METERS = (("bench_calls", "count"), ("bench_tokens", "sum"), ("bench_seats", "max"))
INGEST_BATCH = 1000
GOAL_SPEEDUP = 1.1  # two workers must drain a stage at least 10% faster than one (on 2 cores)
STAGE_TIMEOUT = 900.0


# --- Setup --------------------------------------------------------------------------------------


def setup_tenants(count: int) -> tuple[list, dict]:
    """Fresh tenants with Stripe customers and the three meters at Stripe; returns (tenants, meters)."""
    from django.db import connection

    from metering.services import meter_create
    from stripe_sync.catalog import stripe_meter_ensure
    from stripe_sync.onboarding import tenant_customer_ensure
    from tenants.services import tenant_create

    with connection.cursor() as cursor:
        # Everything of an earlier run goes with its tenants and meters (raw events, pending hours,
        # aggregates, the outbox and balances follow their foreign keys).
        cursor.execute(
            "TRUNCATE tenants_tenant, djstripe_customer, metering_meter, metering_aggregationrun, "
            "stripe_sync_circuitbreaker CASCADE"
        )
    meters = {}
    for code, aggregation in METERS:
        meter = meter_create(code=code, aggregation=aggregation, name=code)
        stripe_meter_ensure(meter=meter)
        meters[code] = meter
    tenants = []
    for i in range(count):
        tenant = tenant_create(name=f"Workers {i}", slug=f"bench-workers-{i}", plan="metered", source="bench")
        tenant_customer_ensure(tenant=tenant)
        tenants.append(tenant)
    return tenants, meters


def seed_backlog(tenants, meters, hours: list, events_per_hour: int, run: str, rng: random.Random) -> dict:
    """Raw events for every tenant, meter and hour, through the public ingestion functions.

    Returns {(tenant id, meter id, hour): (value, event count)}, what aggregation must produce."""
    from django.utils import timezone

    from metering.ingest import usage_events_record, usage_events_validate

    expected: dict = {}
    batch: list[dict] = []
    now = timezone.now()

    def flush() -> None:
        valid = usage_events_validate(payload={"events": batch}, now=now, tenant_required=True)
        result = usage_events_record(events=valid, now=now)
        if result.accepted != len(batch):
            sys.exit(f"ingestion stored {result.accepted} of {len(batch)} new events")
        batch.clear()

    for tenant in tenants:
        for code, meter in meters.items():
            for hour in hours:
                count = rng.randint(1, 2 * events_per_hour - 1)
                quantities = []
                for i in range(count):
                    event = {
                        "id": f"{run}-{tenant.pk}-{meter.pk}-{hour:%m%d%H}-{i}",
                        "meter": code,
                        "tenant": tenant.slug,
                        "timestamp": (hour + timedelta(seconds=rng.randrange(3600))).isoformat(),
                    }
                    if meter.aggregation == "sum":
                        quantity = Decimal(rng.randint(1, 500)) + Decimal(rng.choice((0, 0, 25, 50))) / 100
                    elif meter.aggregation == "max":
                        quantity = Decimal(rng.randint(1, 100))
                    else:
                        quantity = None
                    if quantity is not None:
                        event["quantity"] = str(quantity)
                        quantities.append(quantity)
                    batch.append(event)
                    if len(batch) >= INGEST_BATCH:
                        flush()
                if meter.aggregation == "sum":
                    value = sum(quantities, Decimal(0))
                elif meter.aggregation == "max":
                    value = max(quantities)
                else:
                    value = Decimal(count)
                expected[(tenant.pk, meter.pk, hour)] = (value, count)
    if batch:
        flush()
    return expected


# --- Workers ------------------------------------------------------------------------------------


class Workers:
    """`count` real `celery worker` processes (prefork, concurrency 1), as production runs them."""

    def __init__(self, count: int, *, env: dict, queue: str, app, tag: str):
        self.app = app
        self.queue = queue
        self.procs: list[subprocess.Popen] = []
        self.nodes: list[str] = []
        self.logs: list[Path] = []
        for i in range(count):
            node = f"bench{i}-{tag}@{socket.gethostname()}"
            own = f"{queue}.w{i}"  # each one's own queue, for its warm-up task
            log = common.ROOT / "bench" / f".worker-{tag}-{i}.log"
            command = [common.PYTHON, "-m", "celery", "-A", "billing_platform", "worker"]
            command += ["--pool", "prefork", "--concurrency", "1", "-Q", f"{queue},{own}", "-n", node]
            command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
            command += ["--loglevel", "WARNING"]
            with open(log, "wb") as out:  # the banner and the log; the child keeps its own descriptor
                self.procs.append(
                    subprocess.Popen(
                        command,
                        cwd=common.ROOT,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            self.nodes.append(node)
            self.logs.append(log)
        self._wait_ready()
        # Each worker's first task connects to PostgreSQL and finishes imports: not part of the timing.
        warm = [app.send_task("billing_platform.worker_check", queue=f"{queue}.w{i}") for i in range(count)]
        for result in warm:
            result.get(timeout=60)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 90
        waiting = set(self.nodes)
        while waiting:
            for proc, log in zip(self.procs, self.logs, strict=True):
                if proc.poll() is not None:
                    text = log.read_text() if log.exists() else ""
                    self.stop()
                    sys.exit(f"a celery worker exited ({proc.returncode}): {text[-2000:]}")
            for answer in self.app.control.ping(destination=sorted(waiting), timeout=0.5):
                waiting -= set(answer)
            if time.monotonic() > deadline:
                self.stop()
                sys.exit(f"celery workers {sorted(waiting)} answered no ping in 90 s")

    def pids(self) -> list[int]:
        """The workers' processes: each main process and its pool child."""
        pids = []
        for proc in self.procs:
            if proc.poll() is not None:
                continue
            pids.append(proc.pid)
            out = subprocess.run(
                ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
            ).stdout
            pids += [int(pid) for pid in out.split()]
        return pids

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for log in self.logs:
            try:
                text = log.read_text()
            except OSError:
                continue
            if "Traceback" in text or "ERROR" in text:
                common.log(f"  worker log kept: {log}")
            else:
                log.unlink(missing_ok=True)


def run_stage(
    workers: Workers, task: str, done, database_url: str, milestone=None
) -> tuple[float, list, dict, float | None]:
    """Publish one `task` per worker at once; time until all finished and `done()` holds.

    Returns (seconds, the tasks' return values, CPU seconds of the workers, of the bench database's
    PostgreSQL backends, of this process (which serves the local Stripe) and of the whole machine,
    and the seconds until `milestone()` first held, polled every 0.1 s while the tasks run)."""
    cpu = common.CpuMeter({"workers": workers.pids, "stripe_server": lambda: [os.getpid()]})
    backends = BackendCpu(database_url)
    backends.start()
    cpu.start()
    started = time.perf_counter()
    results = [workers.app.send_task(task, queue=workers.queue) for _ in workers.procs]
    reached = None
    while not all(result.ready() for result in results):
        if time.perf_counter() - started > STAGE_TIMEOUT:
            sys.exit(f"{task}: not finished after {STAGE_TIMEOUT:.0f} s")
        if milestone is not None and reached is None and milestone():
            reached = time.perf_counter() - started
        time.sleep(0.1)
    values = [result.get(timeout=STAGE_TIMEOUT) for result in results]
    if milestone is not None and reached is None:
        reached = time.perf_counter() - started
    while not done():
        if time.perf_counter() - started > STAGE_TIMEOUT:
            sys.exit(f"{task}: tasks finished but the queue is not empty after {STAGE_TIMEOUT:.0f} s")
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    return seconds, values, {**cpu.stop(), "postgres": backends.stop()}, reached


class BackendCpu:
    """CPU seconds of the PostgreSQL backends connected to the bench's database between start() and
    stop(), sampled every 0.1 s from a connection of its own. The server is shared with other
    databases (counting every postgres process would count their work too), and Celery closes a
    task's connections when it ends, so its backend is gone by stop(): the last sample counts (at most
    0.1 s of a backend's CPU is missed)."""

    def __init__(self, database_url: str):
        self.database_url = database_url
        self.baseline: dict[int, float] = {}
        self.seen: dict[int, float] = {}

    def _sample(self, conn) -> dict[int, float]:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        return {pid: common.proc_cpu_seconds(pid) for (pid,) in rows}

    def start(self) -> None:
        import threading

        self.conn = common.psql_connect(self.database_url, autocommit=True)
        self.baseline = self._sample(self.conn)
        self.seen = dict(self.baseline)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.wait(0.1):
            for pid, cpu in self._sample(self.conn).items():
                self.seen[pid] = max(cpu, self.seen.get(pid, 0.0))

    def stop(self) -> float:
        self.stopping.set()
        self.thread.join()
        for pid, cpu in self._sample(self.conn).items():
            self.seen[pid] = max(cpu, self.seen.get(pid, 0.0))
        self.conn.close()
        return round(sum(cpu - self.baseline.get(pid, 0.0) for pid, cpu in self.seen.items()), 2)


# --- Checks -------------------------------------------------------------------------------------


def check_aggregation(expected: dict, hours: list, phase_start, results: list) -> dict:
    from metering.models import AggregationRun, HourlyAggregate, HourlyAggregateChange, PendingHour

    problems = []
    runs = AggregationRun.objects.filter(started_at__gte=phase_start, trigger="beat")
    claimed = sum(run.hours_aggregated for run in runs)
    if claimed != len(expected):
        problems.append(f"the runs aggregated {claimed} hours for a backlog of {len(expected)}")
    if PendingHour.objects.exists():
        problems.append(f"{PendingHour.objects.count()} hours still pending")
    rows = HourlyAggregate.objects.filter(hour__in=hours).values_list(
        "pk", "tenant_id", "meter_id", "hour", "value", "event_count", "revision"
    )
    found = {}
    for pk, tenant_id, meter_id, hour, value, event_count, revision in rows:
        found[(tenant_id, meter_id, hour)] = (value, event_count)
        if revision != 1:
            problems.append(f"aggregate {pk} is at revision {revision}")
    wrong = [key for key, want in expected.items() if found.get(key) != want]
    if wrong or len(found) != len(expected):
        problems.append(f"{len(wrong)} aggregates differ from the seeded events ({len(found)} rows)")
    changes = HourlyAggregateChange.objects.filter(aggregate__hour__in=hours).count()
    if changes != len(expected):
        problems.append(f"{changes} change rows for {len(expected)} aggregates")
    shares = [value["hours_aggregated"] for value in results]
    return {"exact": not problems, "problems": problems[:5], "hours_per_task": shares}


def check_reporting(
    server, marker: int, expected_units: dict, hours: list, results: list, customers: dict
) -> dict:
    """What the local Stripe server received since `marker` against the outbox and the local totals."""
    from stripe_sync.models import UsageReport

    problems = []
    received: Counter = Counter()
    units: dict = defaultdict(int)
    calls = limited = 0
    for request in server.requests[marker:]:
        if request.path.startswith("/v2/billing/meter_event_stream"):
            bodies = request.params.get("events", [])
        elif request.path.startswith("/v1/billing/meter_events"):
            bodies = [request.params]
        else:
            continue
        calls += 1
        if request.status == 429:
            limited += 1
        if request.status is None or request.status >= 300:
            continue
        for event in bodies:
            received[event["identifier"]] += 1
            key = (event["payload"]["stripe_customer_id"], event["event_name"])
            units[key] += int(event["payload"]["value"])
    twice = sum(1 for n in received.values() if n > 1)
    if twice:
        problems.append(f"{twice} identifiers received more than once")
    outbox = UsageReport.objects.filter(hour__in=hours)
    to_send = set(outbox.filter(value__gt=0).values_list("identifier", flat=True))
    if set(received) != to_send:
        problems.append(
            f"received {len(set(received) - to_send)} identifiers not in the outbox; "
            f"{len(to_send - set(received))} of the outbox's not received"
        )
    unsent = outbox.filter(value__gt=0).exclude(status=UsageReport.Status.SENT).count()
    if unsent:
        problems.append(f"{unsent} outbox rows not marked sent")
    want = {(customers[t], code): n for (t, code), n in expected_units.items()}
    differing = sum(1 for key in set(want) | set(units) if want.get(key, 0) != units.get(key, 0))
    if differing:
        problems.append(f"{differing} (customer, meter) totals differ from the local whole units")
    concurrent = len(server.concurrent_meter_event_calls)
    if concurrent:
        problems.append(f"{concurrent} calls for a (customer, meter) already in flight")
    return {
        "exact": not problems,
        "problems": problems[:5],
        "events_received": sum(received.values()),
        "calls": calls,
        "calls_429": limited,
        "sent_per_task": [(value.get("sent") or {}).get("sent") for value in results],
        "prepared_per_task": [(value.get("prepared") or {}).get("reports") for value in results],
    }


def units_to_report(expected: dict, meters: dict, carried: dict) -> dict:
    """{(tenant id, meter code): whole units due for this backlog}; `carried` keeps each pair's running
    local quantity across rounds (Stripe gets floor(total so far) - what it got before)."""
    codes = {meter.pk: code for code, meter in meters.items()}
    added: dict = defaultdict(Decimal)
    for (tenant_id, meter_id, _hour), (value, _count) in expected.items():
        added[(tenant_id, codes[meter_id])] += value
    due = {}
    for key, value in added.items():
        before = carried.get(key, Decimal(0))
        after = before + value
        due[key] = int(after.to_integral_value(ROUND_FLOOR)) - int(before.to_integral_value(ROUND_FLOOR))
        carried[key] = after
    return due


# --- Main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tenants", type=int, default=2000)
    parser.add_argument("--hours", type=int, default=4, help="new past hours per backlog")
    parser.add_argument("--events", type=int, default=5, help="mean raw events per tenant, meter and hour")
    parser.add_argument("--rounds", type=int, default=1, help="1 then 2 workers, this many times")
    parser.add_argument(
        "--pace",
        type=float,
        default=1000.0,
        help="STRIPE_MAX_REQUESTS_PER_SECOND of each worker (default: measure the work, not the limit)",
    )
    parser.add_argument(
        "--stripe-rps", type=float, default=None, help="the local Stripe server's limit (default: none)"
    )
    parser.add_argument("--db", default="billing_bench_workers")
    parser.add_argument(
        "--redis", default=None, help="broker (default: REDIS_URL, else scripts/services.sh's)"
    )
    args = parser.parse_args()
    if args.rounds * 2 * args.hours + 2 > 30 * 24:
        sys.exit("--rounds x 2 x --hours must fit in the 35-day backfill window (under 720 hours)")

    redis_url = args.redis or os.environ.get("REDIS_URL") or common.services_env().get("REDIS_URL")
    if not redis_url:
        sys.exit("no Redis: pass --redis or set REDIS_URL (scripts/services.sh starts one)")
    background = common.background_cores()
    common.warn_if_busy(background)

    sys.path.insert(0, str(common.ROOT))
    from tests.stripe_server import StripeServer

    server = StripeServer().start()
    os.environ.update(STRIPE_API_KEY=STRIPE_KEY, STRIPE_API_BASE=server.url)
    url = common.bench_database_url(args.db)
    common.setup_django(url)
    from celery import Celery
    from django.db import connection
    from django.utils import timezone

    from metering.models import PendingHour
    from stripe_sync.models import UsageReport

    app = Celery("bench-workers", broker=redis_url, backend=redis_url)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    run = secrets.token_hex(3)
    queue = f"bench-workers-{run}"
    worker_env = {
        **{k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL"}},
        "DJANGO_SETTINGS_MODULE": "billing_platform.settings",
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "STRIPE_API_KEY": STRIPE_KEY,
        "STRIPE_API_BASE": server.url,
        "STRIPE_MAX_REQUESTS_PER_SECOND": str(args.pace),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(common.ROOT), os.environ.get("PYTHONPATH", "")])),
    }

    try:
        common.log(f"setting up {args.tenants} tenants with Stripe customers and {len(METERS)} meters ...")
        started = time.perf_counter()
        tenants, meters = setup_tenants(args.tenants)
        customers = {t.pk: t.stripe_customer_id for t in tenants}
        common.log(f"  done in {time.perf_counter() - started:.1f} s")
        server.set_rate_limit(args.stripe_rps, scope="api")
        server.set_rate_limit(args.stripe_rps, scope="stream")
        rng = random.Random(14)
        carried: dict = {}
        current = timezone.now().replace(minute=0, second=0, microsecond=0)
        next_hour_back = 2  # backlogs go back from two hours ago, each round's older than the last
        phases = []
        for round_no in range(args.rounds):
            for count in (1, 2):
                hours = [current - timedelta(hours=next_hour_back + h) for h in range(args.hours)]
                next_hour_back += args.hours
                seeded = time.perf_counter()
                expected = seed_backlog(tenants, meters, hours, args.events, run, rng)
                events = sum(n for _, n in expected.values())
                due_units = units_to_report(expected, meters, carried)
                with connection.cursor() as cursor:
                    cursor.execute("ANALYZE")
                common.log(
                    f"round {round_no + 1}, {count} worker(s): {len(expected)} pending hours, {events} raw "
                    f"events seeded in {time.perf_counter() - seeded:.1f} s"
                )
                workers = Workers(
                    count, env=worker_env, queue=queue, app=app, tag=f"{run}-{round_no}-{count}"
                )
                try:
                    phase_start = timezone.now()
                    agg_s, agg_results, agg_cpu, _ = run_stage(
                        workers, "metering.aggregate_usage", lambda: not PendingHour.objects.exists(), url
                    )
                    aggregation = check_aggregation(expected, hours, phase_start, agg_results)
                    marker = len(server.requests)
                    outbox, rows = UsageReport.objects.filter(hour__in=hours), len(expected)
                    report_s, report_results, report_cpu, prepare_s = run_stage(
                        workers,
                        "stripe_sync.report_usage",
                        lambda: not UsageReport.objects.filter(status=UsageReport.Status.PENDING).exists(),
                        url,
                        # The outbox is written: one row per hour (values this small need one part).
                        milestone=lambda outbox=outbox, rows=rows: outbox.count() >= rows,
                    )
                    reporting = check_reporting(server, marker, due_units, hours, report_results, customers)
                finally:
                    workers.stop()
                phase = {
                    "round": round_no + 1,
                    "workers": count,
                    "pending_hours": len(expected),
                    "raw_events": events,
                    "aggregate_s": round(agg_s, 2),
                    "aggregate_hours_per_s": round(len(expected) / agg_s, 1),
                    "aggregate_events_per_s": round(events / agg_s, 1),
                    "aggregate_cpu_s": agg_cpu,
                    "aggregation": aggregation,
                    "report_s": round(report_s, 2),
                    "report_outbox_written_s": round(prepare_s, 2),
                    "reports_per_s": round(reporting["events_received"] / report_s, 1),
                    "report_cpu_s": report_cpu,
                    "reporting": reporting,
                    # The work itself, whatever else runs on the machine: CPU of the workers and of
                    # their PostgreSQL backends per 1,000 hours aggregated / reported.
                    "aggregate_cpu_s_per_1000": round(
                        (agg_cpu["workers"] + agg_cpu["postgres"]) * 1000 / len(expected), 3
                    ),
                    "report_cpu_s_per_1000": round(
                        (report_cpu["workers"] + report_cpu["postgres"]) * 1000 / len(expected), 3
                    ),
                }
                phases.append(phase)
                common.log(
                    f"  aggregation: {agg_s:.2f} s, {phase['aggregate_hours_per_s']:,.0f} hours/s "
                    f"({phase['aggregate_events_per_s']:,.0f} raw events/s), hours per task "
                    f"{aggregation['hours_per_task']}, exactly once: {aggregation['exact']} "
                    f"{'; '.join(aggregation['problems'])}"
                )
                common.log(
                    f"    CPU s: workers {agg_cpu['workers']}, PostgreSQL (this database) "
                    f"{agg_cpu['postgres']}, all programs {agg_cpu['machine']}"
                )
                common.log(
                    f"  reporting: {report_s:.2f} s (outbox written after {prepare_s:.2f} s), "
                    f"{phase['reports_per_s']:,.0f} reports/s in "
                    f"{reporting['calls']} calls ({reporting['calls_429']} answered 429), prepared per task "
                    f"{reporting['prepared_per_task']}, sent per task {reporting['sent_per_task']}, "
                    f"exactly once: {reporting['exact']} {'; '.join(reporting['problems'])}"
                )
                common.log(
                    f"    CPU s: workers {report_cpu['workers']}, PostgreSQL (this database) "
                    f"{report_cpu['postgres']}, local Stripe {report_cpu['stripe_server']}, "
                    f"all programs {report_cpu['machine']}"
                )
    finally:
        server.stop()

    def median_of(count: int, key: str) -> float:
        return common.median([p[key] for p in phases if p["workers"] == count])

    agg_speedup = median_of(1, "aggregate_s") / median_of(2, "aggregate_s")
    report_speedup = median_of(1, "report_s") / median_of(2, "report_s")
    # Two workers doing the same work, not more: CPU per 1,000 hours with two over with one.
    agg_cpu_ratio = median_of(2, "aggregate_cpu_s_per_1000") / median_of(1, "aggregate_cpu_s_per_1000")
    report_cpu_ratio = median_of(2, "report_cpu_s_per_1000") / median_of(1, "report_cpu_s_per_1000")
    drain_1 = median_of(1, "aggregate_s") + median_of(1, "report_s")
    drain_2 = median_of(2, "aggregate_s") + median_of(2, "report_s")
    exact = all(p["aggregation"]["exact"] and p["reporting"]["exact"] for p in phases)
    goals = {
        "exactly_once": exact,
        "aggregation_speedup": agg_speedup >= GOAL_SPEEDUP,
        "reporting_speedup": report_speedup >= GOAL_SPEEDUP,
    }
    cores = os.cpu_count()
    common.log(
        f"aggregation: 1 worker {median_of(1, 'aggregate_hours_per_s'):,.0f} hours/s, 2 workers "
        f"{median_of(2, 'aggregate_hours_per_s'):,.0f} hours/s: speed-up {agg_speedup:.2f}"
    )
    common.log(
        f"reporting: 1 worker {median_of(1, 'reports_per_s'):,.0f} reports/s, 2 workers "
        f"{median_of(2, 'reports_per_s'):,.0f} reports/s: speed-up {report_speedup:.2f}"
    )
    agg_cpu = [median_of(n, "aggregate_cpu_s_per_1000") for n in (1, 2)]
    report_cpu = [median_of(n, "report_cpu_s_per_1000") for n in (1, 2)]
    common.log(
        f"CPU s of the workers and PostgreSQL per 1,000 hours: aggregation {agg_cpu[0]} with 1 worker, "
        f"{agg_cpu[1]} with 2 ({agg_cpu_ratio:.2f}x); reporting {report_cpu[0]} and {report_cpu[1]} "
        f"({report_cpu_ratio:.2f}x)"
    )
    common.log(
        f"backlog drained: 1 worker {drain_1:.2f} s, 2 workers {drain_2:.2f} s: {drain_1 / drain_2:.2f}x"
    )
    common.log(
        f"note: {cores} cores for the workers, PostgreSQL and the local Stripe server together; "
        f"background_cores {background}"
    )
    common.log(common.goal_line("exactly once", exact, "every hour aggregated once, every report sent once"))
    common.log(common.goal_line("aggregation speed-up", goals["aggregation_speedup"], f">= {GOAL_SPEEDUP}"))
    common.log(common.goal_line("reporting speed-up", goals["reporting_speedup"], f">= {GOAL_SPEEDUP}"))
    common.emit_json(
        {
            "bench": "workers",
            "machine": common.machine_info(),
            "background_cores": background,
            "under_load": background > 0.25,
            "tenants": args.tenants,
            "meters": len(METERS),
            "hours_per_backlog": args.hours,
            "pace_rps_per_worker": args.pace,
            "stripe_rps": args.stripe_rps,
            "phases": phases,
            "aggregate_hours_per_s_1": median_of(1, "aggregate_hours_per_s"),
            "aggregate_hours_per_s_2": median_of(2, "aggregate_hours_per_s"),
            "aggregate_speedup": round(agg_speedup, 2),
            "reports_per_s_1": median_of(1, "reports_per_s"),
            "reports_per_s_2": median_of(2, "reports_per_s"),
            "report_speedup": round(report_speedup, 2),
            "aggregate_cpu_ratio_2_vs_1": round(agg_cpu_ratio, 2),
            "report_cpu_ratio_2_vs_1": round(report_cpu_ratio, 2),
            "drain_s_1": round(drain_1, 2),
            "drain_s_2": round(drain_2, 2),
            "drain_speedup": round(drain_1 / drain_2, 2),
            "exactly_once": exact,
            "goal_speedup": GOAL_SPEEDUP,
            "goals": goals,
            "goals_met": all(goals.values()),
        }
    )


if __name__ == "__main__":
    main()
