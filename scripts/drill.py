# ruff: noqa: S311, S603, S607, T201 - a script: prints, seeded randomness, local commands
"""Reliability drill: the whole pipeline under failures, then every count checked.

    .venv/bin/python scripts/drill.py            (scripts/test.sh runs it after the pytest runs)

Runs, against a database of its own (billing_drill, cloned from a migrated template database),
a Redis database of its own on the suite's Redis server, the local Stripe server in its own process,
gunicorn, a Celery worker and Celery beat (with 5-second schedules for aggregation and reporting):

- a few tenants stream usage events over HTTP (batches and single events, some duplicate ids, some
  late events for the previous hours; a request that fails is retried with the same ids);
- the worker is killed twice with SIGKILL (whole process group, mid-task) and restarted;
- Redis is restarted once (SHUTDOWN SAVE, then scripts/services.sh starts it again on its port with
  the same data directory: production runs Redis with persistence);
- the local Stripe server answers 500 to every call for DRILL_FAULT_SECONDS (default 60), later 429
  to every call for as long;
- tenants' Stripe objects change (payment method attached, subscriptions updated and canceled), and
  every Stripe event is delivered to the webhook endpoint twice, out of order, signed as Stripe signs.

After the stream stops and the pipeline drains (bounded by DRILL_DRAIN_SECONDS), it asserts that every
accepted event is in exactly one hourly aggregate, that Stripe's totals per tenant and meter equal the
local whole units, that every webhook event was stored once and processed, that tenants' plans follow
Stripe's final state, and that the dashboard shows no stuck work. Exits 1 with the failures listed;
the last line printed is one JSON object with the counts. Logs: test-output/drill/.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
import _common as common  # noqa: E402 (bench/_common.py: services, databases, gunicorn)

from tests.stripe_server.server import sign  # noqa: E402 (Stripe's signature scheme, stdlib only)

DB_NAME = os.environ.get("DRILL_DB", "billing_drill")
TEMPLATE_DB = "billing_template"  # shared with scripts/test_databases.py: migrated once per make test
REDIS_DB = int(os.environ.get("DRILL_REDIS_DB", "9"))  # not the suite's 0: its workers must not meet ours
FAULT_SECONDS = float(os.environ.get("DRILL_FAULT_SECONDS", "60"))
DRAIN_SECONDS = float(os.environ.get("DRILL_DRAIN_SECONDS", "150"))
SEED = int(os.environ.get("DRILL_SEED", str(int(time.time()))))
OUT = ROOT / "test-output" / "drill"
STRIPE_KEY = "sk_test_DrillLocalStripeServer000001"
WEBHOOK_SECRET = "whsec_drill_local"  # noqa: S105 (a test value)
SCHEDULE_SECONDS = 5

USAGE_TENANTS = ["drill-u1", "drill-u2", "drill-u3"]
# Tenants whose Stripe objects change during the drill (no usage): what happens and the final plan.
PLAN_TENANTS = {
    "drill-card": "free; a card is attached mid-stream (the platform subscribes it): metered",
    "drill-churn": "metered; its subscription is canceled mid-stream: free",
    "drill-flap": "metered; subscription updated, canceled, then a card attached: metered",
}
METERS = {  # code: (aggregation, quantity generator)
    "api_calls": ("count", None),
    "tokens": ("sum", lambda rng: str(rng.randint(1, 500))),
    "gb_hours": ("sum", lambda rng: rng.choice(["0.25", "0.5", "1.75", "0.125", "2", "0.333"])),
}


def log(message: str) -> None:
    print(f"[drill {time.strftime('%H:%M:%S')}] {message}", flush=True)


class DrillFailure(Exception):
    pass


# --- child processes ----------------------------------------------------------------------------


class Child:
    """A child process in its own process group, its output in a log file; stop() ends the group."""

    def __init__(self, name: str, command: list[str], env: dict, log_name: str):
        self.name = name
        self.log_path = OUT / log_name
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        # Pool processes left behind by a SIGKILLed parent share its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


def http_json(method: str, url: str, body=None, headers=None, timeout: float = 15.0) -> tuple[int, dict]:
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (loopback)
            text = response.read()
            return response.status, (json.loads(text) if text.strip() else {})
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            return error.code, json.loads(text)
        except ValueError:
            return error.code, {"raw": text[:500].decode(errors="replace")}


class Stripe:
    """The local Stripe server in its own process, its /_test controls and its API over HTTP."""

    def __init__(self, env: dict):
        self.port = common.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.child = Child(
            "stripe",
            [common.PYTHON, "-m", "tests.stripe_server", "--port", str(self.port)],
            env,
            "stripe-server.log",
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if http_json("GET", f"{self.url}/_test/requests", timeout=2)[0] == 200:
                    return
            time.sleep(0.1)
        raise DrillFailure("the local Stripe server did not start")

    def control(self, path: str, body: dict | None = None, method: str = "POST") -> dict:
        status, data = http_json(method, f"{self.url}/_test/{path}", body if method == "POST" else None)
        if status != 200:
            raise DrillFailure(f"Stripe test control {path}: {status} {data}")
        return data

    def api(self, method: str, path: str, params: dict | None = None) -> tuple[int, dict]:
        query = urllib.parse.urlencode(params or {})
        url = f"{self.url}{path}" + (f"?{query}" if query and method == "GET" else "")
        body = query if method != "GET" and query else None
        headers = {"Authorization": f"Bearer {STRIPE_KEY}"}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        return http_json(method, url, body, headers)

    def api_ok(self, method: str, path: str, params: dict | None = None, tries: int = 20) -> dict:
        """A drill-side call (the customer or Stripe's dashboard acting), retried through faults."""
        for _ in range(tries):
            with contextlib.suppress(OSError):
                status, data = self.api(method, path, params)
                if status == 200:
                    return data
                if status < 429:
                    raise DrillFailure(f"Stripe {method} {path}: {status} {data}")
            time.sleep(1.0)
        raise DrillFailure(f"Stripe {method} {path} kept failing")

    def events(self) -> list[dict]:
        """Every v1 event Stripe recorded (all pages)."""
        found, after = [], None
        while True:
            params = {"limit": 100, **({"starting_after": after} if after else {})}
            status, page = self.api("GET", "/v1/events", params)
            if status != 200:
                raise OSError(f"GET /v1/events answered {status}")
            found += page["data"]
            if not page.get("has_more") or not page["data"]:
                return found
            after = page["data"][-1]["id"]


# --- the event stream -----------------------------------------------------------------------------


class Streamer(threading.Thread):
    """One tenant's service pushing usage over HTTP; every request retried until it is answered."""

    def __init__(self, slug: str, key: str, web: str, stop: threading.Event, seed: int):
        super().__init__(name=f"stream-{slug}", daemon=True)
        self.slug, self.key, self.web, self.stop_event = slug, key, web, stop
        self.rng = random.Random(seed)
        self.seq = 0
        self.acked: dict[str, dict] = {}  # event id -> the event, once a request holding it got 202
        self.stats = Counter()
        self.error: str | None = None

    def _event(self, now: datetime) -> dict:
        self.seq += 1
        meter = self.rng.choice(list(METERS))
        event = {"id": f"{self.slug}-{self.seq}", "meter": meter}
        quantity = METERS[meter][1]
        if quantity is not None:
            event["quantity"] = quantity(self.rng)
        if self.rng.random() < 0.15:  # late: an hour that was aggregated and reported already
            hour = (now - timedelta(hours=self.rng.randint(1, 3))).replace(minute=0, second=0, microsecond=0)
            moment = hour + timedelta(seconds=self.rng.randint(0, 3599))
            self.stats["late_events"] += 1
        else:
            moment = now - timedelta(seconds=self.rng.uniform(0, 5))
        event["timestamp"] = moment.isoformat().replace("+00:00", "Z")
        return event

    def _post(self, payload: dict) -> dict:
        """POST until answered 202 (retrying the same ids on errors, 5xx and 429)."""
        deadline = time.monotonic() + 120
        while True:
            try:
                status, body = http_json(
                    "POST",
                    f"{self.web}/api/v1/events",
                    payload,
                    {"Authorization": f"Api-Key {self.key}"},
                    timeout=10,
                )
            except OSError as error:
                status, body = None, {"error": str(error)}
            self.stats["requests"] += 1
            if status == 202:
                return body
            if status is not None and status < 500 and status != 429:
                raise DrillFailure(f"{self.slug}: POST /api/v1/events answered {status}: {body}")
            self.stats["retries"] += 1
            self.stats[f"retried_{status or 'connection_error'}"] += 1
            if time.monotonic() > deadline:
                raise DrillFailure(f"{self.slug}: ingestion kept failing for 120 s: {status} {body}")
            time.sleep(0.5)

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                now = datetime.now(UTC)
                events = [self._event(now) for _ in range(self.rng.choice([1, 1, 5, 20, 50]))]
                if self.acked and self.rng.random() < 0.2:  # duplicates of accepted events
                    dups = self.rng.sample(list(self.acked.values()), min(3, len(self.acked)))
                    events += dups
                    self.stats["duplicates_sent"] += len(dups)
                payload = events[0] if len(events) == 1 else {"events": events}
                answer = self._post(payload)
                self.stats["accepted"] += answer["accepted"]
                self.stats["duplicates"] += answer["duplicates"]
                for event in events:
                    self.acked[event["id"]] = event
                time.sleep(self.rng.uniform(0.1, 0.3))
        except Exception as error:  # noqa: BLE001 - reported by the drill
            self.error = f"{type(error).__name__}: {error}"


# --- webhooks -------------------------------------------------------------------------------------


class WebhookDeliverer(threading.Thread):
    """Stripe's webhook deliveries: every recorded event twice, each at a random later moment (so
    out of order), signed; a delivery that is not answered 2xx is retried, as Stripe retries."""

    def __init__(self, stripe: Stripe, web: str, stop: threading.Event, seed: int):
        super().__init__(name="webhooks", daemon=True)
        self.stripe, self.url, self.stop_event = stripe, f"{web}/api/v1/stripe/webhook", stop
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.events: dict[str, dict] = {}
        self.queue: list[tuple[float, str]] = []  # (due monotonic time, event id)
        self.delivered = Counter()  # event id -> 2xx deliveries
        self.stats = Counter()
        self.order: list[str] = []  # event ids in delivery order (2xx)
        self.fast = False  # after the stream: shorter delays
        self.error: str | None = None

    def poll(self) -> int:
        try:
            found = self.stripe.events()
        except OSError:
            self.stats["event_list_failures"] += 1
            return 0
        new = 0
        now = time.monotonic()
        with self.lock:
            for event in found:
                if event["id"] in self.events:
                    continue
                self.events[event["id"]] = event
                new += 1
                spread = 4.0 if self.fast else 25.0
                self.queue.append((now + self.rng.uniform(0, spread / 3), event["id"]))
                self.queue.append((now + self.rng.uniform(spread / 4, spread), event["id"]))
        return new

    def _deliver(self, event_id: str) -> bool:
        body = json.dumps(self.events[event_id], indent=2)
        try:
            status, answer = http_json(
                "POST", self.url, body, {"Stripe-Signature": sign(body, WEBHOOK_SECRET)}, timeout=15
            )
        except OSError as error:
            status, answer = None, {"error": str(error)}
        self.stats["attempts"] += 1
        if status is not None and 200 <= status < 300:
            self.delivered[event_id] += 1
            self.order.append(event_id)
            self.stats["duplicate_answers" if answer.get("duplicate") else "first_answers"] += 1
            return True
        self.stats[f"failed_{status or 'connection_error'}"] += 1
        return False

    def pending(self) -> int:
        with self.lock:
            return len(self.queue)

    def run(self) -> None:
        last_poll = 0.0
        try:
            while not self.stop_event.is_set():
                if time.monotonic() - last_poll > 2.0:
                    self.poll()
                    last_poll = time.monotonic()
                with self.lock:
                    now = time.monotonic()
                    due = [item for item in self.queue if item[0] <= now]
                    self.queue = [item for item in self.queue if item[0] > now]
                # Several due at once go newest first: out of order on purpose.
                due.sort(key=lambda item: -self.events[item[1]]["created"])
                for _, event_id in due:
                    if not self._deliver(event_id):
                        # Stripe retries later; after a minute the platform re-queues an event it stored
                        # but never picked up (REQUEUE_AFTER).
                        with self.lock:
                            self.queue.append((time.monotonic() + self.rng.uniform(5, 15), event_id))
                time.sleep(0.2)
        except Exception as error:  # noqa: BLE001 - reported by the drill
            self.error = f"{type(error).__name__}: {traceback.format_exc()[-1500:]}"

    def inversions(self) -> int:
        """Deliveries of an event older than one delivered before it (first deliveries only)."""
        seen, newest, count = set(), 0, 0
        for event_id in self.order:
            if event_id in seen:
                continue
            seen.add(event_id)
            created = self.events[event_id]["created"]
            if created < newest:
                count += 1
            newest = max(newest, created)
        return count


# --- the drill ------------------------------------------------------------------------------------


class Drill:
    def __init__(self):
        self.children: list[Child] = []
        self.figures: dict = {"drill": "reliability", "seed": SEED, "fault_seconds": FAULT_SECONDS}
        self.failures: list[str] = []
        self.worker: Child | None = None
        self.worker_generation = 0
        self.marks: list[tuple[float, str]] = []
        self.started = time.monotonic()

    # -- setup --
    def setup(self) -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        for old in OUT.glob("*.log"):
            old.unlink()
        services = common.services_env()
        redis_url = services["REDIS_URL"]
        self.redis_port = int(urllib.parse.urlsplit(redis_url).port)
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/{REDIS_DB}"
        base = services["DATABASE_URL"]
        log(f"database {DB_NAME} from a migrated template ({TEMPLATE_DB}); Redis db {REDIS_DB}")
        # created when missing, migrated (a no-op when current); named for this checkout
        template = urllib.parse.urlsplit(common.bench_database_url(TEMPLATE_DB)).path.lstrip("/")
        name = f"{DB_NAME}_{services['CHECKOUT_ID']}" if "CHECKOUT_ID" in services else DB_NAME
        import psycopg

        with psycopg.connect(common.with_db_name(base, "postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        self.database_url = common.with_db_name(base, name)
        self._redis("FLUSHDB")  # our own Redis database: last run's queue and cache

        self.stripe = Stripe({**os.environ})
        self.children.append(self.stripe.child)
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "billing_platform.settings",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "DJANGO_SECURE_SSL_REDIRECT": "0",
            "STRIPE_API_KEY": STRIPE_KEY,
            "STRIPE_API_BASE": self.stripe.url,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_TIMEOUT": "5",
            "STRIPE_CIRCUIT_FAILURES": "3",
            "STRIPE_CIRCUIT_OPEN_SECONDS": "10",
            "STRIPE_REPORTING_LEASE_SECONDS": "5",
            "CELERY_VISIBILITY_TIMEOUT": "30",  # a killed worker's tasks come back after 30 s
            "INGEST_RATE_LIMIT": "1000/s",  # counted in Redis, so the restart touches ingestion too
            "LOG_LEVEL": "INFO",
            "PYTHONPATH": str(ROOT),
        }
        os.environ.update({k: v for k, v in self.env.items() if k != "LOG_LEVEL"})
        os.environ["LOG_LEVEL"] = "WARNING"
        import django

        django.setup()
        self._data()
        self._schedules()
        self.web = common.Gunicorn(
            self.database_url, workers=2, extra_env=self.env, log_path=OUT / "gunicorn.log"
        )
        self.web_url = f"http://{self.web.host}:{self.web.port}"
        self.start_worker()
        self.beat = Child(
            "beat",
            [
                common.PYTHON,
                "-m",
                "celery",
                "-A",
                "billing_platform",
                "beat",
                "--loglevel",
                "INFO",
                "--pidfile=",
                "--scheduler",
                "django_celery_beat.schedulers:DatabaseScheduler",
            ],
            self.env,
            "beat.log",
        )
        self.children.append(self.beat)

    def _redis(self, *args: str) -> str:
        result = subprocess.run(
            ["redis-cli", "-p", str(self.redis_port), "-n", str(REDIS_DB), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
        return result.stdout.strip()

    def _data(self) -> None:
        from metering.models import Meter, Price
        from stripe_sync.onboarding import tenant_onboard
        from tenants.models import Tenant
        from tenants.services import api_key_issue, tenant_create

        for code, (aggregation, _) in METERS.items():
            meter = Meter.objects.create(
                code=code, name=code.replace("_", " "), unit="unit", aggregation=aggregation
            )
            Price.objects.create(meter=meter, plan=Tenant.Plan.METERED, unit_amount=Decimal("0.01"))
        self.keys = {}
        plans = {"drill-card": Tenant.Plan.FREE}
        for slug in [*USAGE_TENANTS, *PLAN_TENANTS]:
            tenant = tenant_create(
                name=slug, slug=slug, plan=plans.get(slug, Tenant.Plan.METERED), source="drill"
            )
            tenant_onboard(tenant=tenant)
            if slug in USAGE_TENANTS:
                self.keys[slug] = api_key_issue(tenant=tenant, name="drill").secret
        log(f"{len(self.keys)} usage tenants, {len(PLAN_TENANTS)} plan tenants onboarded at the local Stripe")

    def _schedules(self) -> None:
        """Aggregation and reporting every 5 s instead of hourly (this database only)."""
        from django_celery_beat.models import IntervalSchedule, PeriodicTask

        every, _ = IntervalSchedule.objects.get_or_create(
            every=SCHEDULE_SECONDS, period=IntervalSchedule.SECONDS
        )
        for task in ("metering.aggregate_usage", "stripe_sync.report_usage"):
            for periodic in PeriodicTask.objects.filter(task=task):
                periodic.crontab = None
                periodic.interval = every
                periodic.expire_seconds = 4 * SCHEDULE_SECONDS  # a backlog behind a dead worker expires
                periodic.save()

    # -- the worker --
    def start_worker(self) -> None:
        from billing_platform.celery import app

        self.worker_generation += 1
        node = f"drill-{os.getpid()}-{self.worker_generation}@%h"
        worker = Child(
            "worker",
            [
                common.PYTHON,
                "-m",
                "celery",
                "-A",
                "billing_platform",
                "worker",
                "--concurrency",
                "2",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
                "-n",
                node,
            ],
            self.env,
            f"worker-{self.worker_generation}.log",
        )
        self.children.append(worker)
        hostname = node.replace("%h", __import__("socket").gethostname())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not worker.alive():
                raise DrillFailure(f"the worker exited at start; see {worker.log_path}")
            with contextlib.suppress(Exception):
                if app.control.ping(destination=[hostname], timeout=0.5):
                    self.worker = worker
                    return
        raise DrillFailure(f"the worker did not answer a ping in 60 s; see {worker.log_path}")

    def kill_worker(self, label: str) -> None:
        """SIGKILL the worker's process group, preferably in the middle of a task (a reporting run
        holding its leases, or an aggregation run)."""
        from django.utils import timezone

        from metering.models import AggregationRun
        from stripe_sync.models import ReportingBalance

        deadline = time.monotonic() + 10
        busy = ""
        while time.monotonic() < deadline and not busy:
            if ReportingBalance.objects.filter(sending_until__gt=timezone.now()).exists():
                busy = "while reporting"
            elif AggregationRun.objects.filter(status=AggregationRun.Status.RUNNING).exists():
                busy = "while aggregating"
            else:
                time.sleep(0.05)
        self.worker.kill()
        self.mark(f"{label}: worker SIGKILLed ({busy or 'between tasks'})")
        started = time.monotonic()
        self.start_worker()
        self.mark(f"{label}: new worker answering after {time.monotonic() - started:.1f} s")
        self.figures.setdefault("worker_kills_mid_task", 0)
        self.figures["worker_kills_mid_task"] += int(bool(busy))

    def restart_redis(self) -> None:
        started = time.monotonic()
        subprocess.run(
            ["redis-cli", "-p", str(self.redis_port), "shutdown", "save"], capture_output=True, check=False
        )
        result = subprocess.run(
            ["bash", str(ROOT / "scripts" / "services.sh")], capture_output=True, text=True, check=False
        )
        down = time.monotonic() - started
        if result.returncode != 0:
            raise DrillFailure(f"scripts/services.sh could not start Redis again: {result.stderr[-1000:]}")
        # The snapshot was only for this restart; a later start must not load it.
        dump = Path(
            subprocess.run(
                ["redis-cli", "-p", str(self.redis_port), "config", "get", "dir"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()[-1]
        )
        (dump / "dump.rdb").unlink(missing_ok=True)
        self.figures["redis_down_seconds"] = round(down, 2)
        self.mark(f"Redis restarted (down {down:.2f} s)")

    def mark(self, text: str) -> None:
        at = time.monotonic() - self.t0
        self.marks.append((round(at, 1), text))
        log(f"t={at:5.1f}s {text}")

    # -- customer actions at Stripe --
    def customers(self) -> dict[str, str]:
        from tenants.models import Tenant

        return dict(Tenant.objects.filter(slug__in=PLAN_TENANTS).values_list("slug", "stripe_customer_id"))

    def live_subscription(self, customer: str) -> str | None:
        page = self.stripe.api_ok(
            "GET", "/v1/subscriptions", {"customer": customer, "status": "all", "limit": 100}
        )
        live = [s["id"] for s in page["data"] if s["status"] in ("active", "trialing")]
        return live[0] if live else None

    def actions_first(self) -> None:
        customers = self.customers()
        self.stripe.api_ok(
            "POST", "/v1/payment_methods/pm_card_visa/attach", {"customer": customers["drill-card"]}
        )
        churn = self.live_subscription(customers["drill-churn"])
        self.stripe.api_ok("POST", f"/v1/subscriptions/{churn}", {"metadata[drill]": "renewal-check"})
        flap = self.live_subscription(customers["drill-flap"])
        self.stripe.api_ok("POST", f"/v1/subscriptions/{flap}", {"metadata[drill]": "upgrade"})
        self.mark("Stripe: card attached (drill-card), subscriptions updated (drill-churn, drill-flap)")

    def actions_second(self) -> None:
        customers = self.customers()
        churn = self.live_subscription(customers["drill-churn"])
        self.stripe.api_ok("DELETE", f"/v1/subscriptions/{churn}")
        flap = self.live_subscription(customers["drill-flap"])
        self.stripe.api_ok("DELETE", f"/v1/subscriptions/{flap}")
        time.sleep(1)
        self.stripe.api_ok(
            "POST", "/v1/payment_methods/pm_card_visa/attach", {"customer": customers["drill-flap"]}
        )
        self.mark("Stripe: subscriptions canceled (drill-churn, drill-flap), card attached (drill-flap)")

    # -- the run --
    def run(self) -> None:
        stop = threading.Event()
        rng = random.Random(SEED)
        self.streamers = [
            Streamer(slug, key, self.web_url, stop, rng.randint(0, 10**9)) for slug, key in self.keys.items()
        ]
        hooks_stop = threading.Event()
        self.hooks = WebhookDeliverer(self.stripe, self.web_url, hooks_stop, rng.randint(0, 10**9))
        self.t0 = time.monotonic()
        for thread in [*self.streamers, self.hooks]:
            thread.start()
        self.mark(f"streaming from {len(self.streamers)} tenants; webhooks delivered twice, out of order")
        plan = [
            (5, self.actions_first),
            (12, lambda: self.kill_worker("kill 1")),
            (25, self.fault_500),
            (30 + FAULT_SECONDS, self.restart_redis),
            (40 + FAULT_SECONDS, self.fault_429),
            (40 + 1.4 * FAULT_SECONDS, lambda: self.kill_worker("kill 2")),
            (45 + 2 * FAULT_SECONDS, self.actions_second),
        ]
        stream_seconds = 55 + 2 * FAULT_SECONDS
        try:
            for at, step in plan:
                self._sleep_until(at)
                step()
            self._sleep_until(stream_seconds)
        finally:
            stop.set()
            for streamer in self.streamers:
                streamer.join(timeout=150)
        self.mark("stream stopped")
        for streamer in self.streamers:
            if streamer.error:
                self.failures.append(f"stream {streamer.slug}: {streamer.error}")
        self.drain(hooks_stop)

    def _sleep_until(self, at: float) -> None:
        while time.monotonic() - self.t0 < at:
            for streamer in self.streamers:
                if streamer.error:
                    raise DrillFailure(f"stream {streamer.slug}: {streamer.error}")
            time.sleep(0.2)

    def fault_500(self) -> None:
        self.stripe.control("faults", {"kind": "fail_for", "seconds": FAULT_SECONDS, "status": 500})
        self.mark(f"Stripe answers 500 to every call for {FAULT_SECONDS:.0f} s")

    def fault_429(self) -> None:
        self.stripe.control("faults", {"kind": "fail_for", "seconds": FAULT_SECONDS, "status": 429})
        self.mark(f"Stripe answers 429 to every call for {FAULT_SECONDS:.0f} s")

    # -- draining --
    def _drain_state(self) -> dict:
        from django.db import connection
        from django.utils import timezone

        from metering.models import PendingHour
        from stripe_sync.models import UsageReport, WebhookEvent
        from stripe_sync.reporting import _changed_aggregates, window_start

        connection.close()  # a fresh connection each time (Redis/DB state changes under us)
        return {
            "pending_hours": PendingHour.objects.count(),
            "unreported_hours": _changed_aggregates(window_start(timezone.now())).count(),
            "pending_reports": UsageReport.objects.filter(status=UsageReport.Status.PENDING).count(),
            "webhook_queue": self.hooks.pending(),
            "webhooks_unprocessed": WebhookEvent.objects.exclude(
                status__in=WebhookEvent.FINAL_STATUSES
            ).count(),
            "webhooks_undelivered": sum(1 for e in self.hooks.events if self.hooks.delivered[e] < 2),
        }

    def drain(self, hooks_stop: threading.Event) -> None:
        self.hooks.fast = True
        started = time.monotonic()
        deadline = started + DRAIN_SECONDS
        calm_since = None
        state = {}
        while time.monotonic() < deadline:
            new = self.hooks.poll()
            state = self._drain_state()
            settled = new == 0 and not any(state.values())
            if settled:
                calm_since = calm_since or time.monotonic()
                # Two schedule periods with nothing to do: beat's runs found nothing either.
                if time.monotonic() - calm_since > 2 * SCHEDULE_SECONDS + 1:
                    break
            else:
                calm_since = None
            time.sleep(1.0)
        hooks_stop.set()
        self.hooks.join(timeout=30)
        drained = time.monotonic() - started
        self.figures["drain_seconds"] = round(drained, 1)
        self.mark(f"drained in {drained:.1f} s: {state}")
        if any(state.values()):
            self.failures.append(f"the pipeline did not drain in {DRAIN_SECONDS:.0f} s: {state}")
        if self.hooks.error:
            self.failures.append(f"webhook deliverer: {self.hooks.error}")

    # -- checks --
    def check(self) -> None:
        from django.db import connection

        connection.close()
        self.check_processes()
        self.check_usage()
        self.check_stripe_totals()
        self.check_webhooks()
        self.check_dashboard()

    def check_processes(self) -> None:
        alive = {
            "worker": self.worker.alive(),
            "beat": self.beat.alive(),
            "gunicorn": self.web.proc.poll() is None,
        }
        self.figures["processes_alive_at_end"] = alive
        for name, ok in alive.items():
            if not ok:
                self.failures.append(f"{name} died during the drill (see {OUT})")

    def check_usage(self) -> None:
        from metering.models import HourlyAggregate, PendingHour, UsageEvent
        from tenants.models import Tenant

        tenants = dict(Tenant.objects.filter(slug__in=USAGE_TENANTS).values_list("slug", "pk"))
        expected = defaultdict(lambda: [0, Decimal(0)])  # (slug, meter, hour) -> [events, quantity]
        stream = Counter()
        for streamer in self.streamers:
            stream.update(streamer.stats)
            for event in streamer.acked.values():
                moment = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
                hour = moment.replace(minute=0, second=0, microsecond=0)
                cell = expected[(streamer.slug, event["meter"], hour)]
                cell[0] += 1
                cell[1] += Decimal(event.get("quantity", "1"))
        self.expected_usage = expected
        distinct = sum(cell[0] for cell in expected.values())
        stored = UsageEvent.objects.filter(tenant_id__in=tenants.values()).count()
        aggregates = HourlyAggregate.objects.filter(tenant_id__in=tenants.values()).select_related("meter")
        slug_of = {pk: slug for slug, pk in tenants.items()}
        local = {(slug_of[a.tenant_id], a.meter.code, a.hour): a for a in aggregates}
        in_aggregates = sum(a.event_count for a in local.values())
        mismatched = []
        for key, (count, quantity) in expected.items():
            agg = local.get(key)
            value = Decimal(count) if METERS[key[1]][0] == "count" else quantity
            if agg is None or agg.event_count != count or agg.value != value:
                got = (agg.event_count, agg.value) if agg else None
                mismatched.append(
                    f"{key[0]}/{key[1]}/{key[2]:%d %H}h: expected ({count}, {value}), got {got}"
                )
        extra = [key for key in local if key not in expected]
        self.figures["events"] = {
            "requests": stream["requests"],
            "retried_requests": stream["retries"],
            "retried_by_cause": {k[8:]: v for k, v in stream.items() if k.startswith("retried_")},
            "accepted_distinct": distinct,
            "accepted_in_answers": stream["accepted"],
            "duplicates_in_answers": stream["duplicates"],
            "duplicates_sent": stream["duplicates_sent"],
            "late_events": stream["late_events"],
            "stored": stored,
            "in_hourly_aggregates": in_aggregates,
            "hourly_aggregates": len(local),
            "pending_hours": PendingHour.objects.count(),
        }
        if stored != distinct:
            self.failures.append(f"{stored} events stored, {distinct} distinct events accepted")
        if in_aggregates != distinct:
            self.failures.append(f"{in_aggregates} events in hourly aggregates, {distinct} accepted")
        if mismatched or extra:
            self.failures.append(f"aggregates differ from the accepted events: {(mismatched + extra)[:10]}")
        if stream["accepted"] > distinct:
            self.failures.append(f"answers accepted {stream['accepted']} events, only {distinct} distinct")

    def check_stripe_totals(self) -> None:
        from stripe_sync.models import ReportingBalance, UsageReport
        from tenants.models import Tenant

        customers = dict(
            Tenant.objects.filter(slug__in=USAGE_TENANTS).values_list("slug", "stripe_customer_id")
        )
        slug_of = {c: s for s, c in customers.items()}
        stripe_hours = defaultdict(Decimal)
        stripe_total = defaultdict(Decimal)
        for row in self.stripe.control("meter_totals", method="GET")["data"]:
            if row["customer"] in slug_of:
                key = (slug_of[row["customer"]], row["event_name"])
                stripe_total[key] += Decimal(row["value"])
                stripe_hours[(*key, datetime.fromtimestamp(row["hour"], tz=UTC))] += Decimal(row["value"])
        local_total = defaultdict(Decimal)
        for (slug, meter, _), (count, quantity) in self.expected_usage.items():
            local_total[(slug, meter)] += Decimal(count) if METERS[meter][0] == "count" else quantity
        balances = {
            (b.tenant.slug, b.meter.code): b.units
            for b in ReportingBalance.objects.select_related("tenant", "meter").filter(
                tenant__slug__in=USAGE_TENANTS
            )
        }
        rows, differences = [], []
        for slug in USAGE_TENANTS:
            for meter in METERS:
                local = local_total[(slug, meter)]
                units = int(local.to_integral_value(rounding=ROUND_FLOOR))
                at_stripe = stripe_total[(slug, meter)]
                rows.append(
                    {
                        "tenant": slug,
                        "meter": meter,
                        "local": str(local),
                        "units": units,
                        "stripe": str(at_stripe),
                    }
                )
                if at_stripe != units or balances.get((slug, meter), 0) != units:
                    differences.append(
                        f"{slug}/{meter}: local {local} -> {units} units, "
                        f"balance {balances.get((slug, meter))}, Stripe {at_stripe}"
                    )
        # Whole-number meters: every hour matches too (fractions carry across hours).
        for (slug, meter, hour), (count, quantity) in self.expected_usage.items():
            if meter in ("api_calls", "tokens"):
                value = Decimal(count) if meter == "api_calls" else quantity
                if stripe_hours.get((slug, meter, hour), Decimal(0)) != value:
                    differences.append(
                        f"{slug}/{meter} {hour:%H}h: local {value}, "
                        f"Stripe {stripe_hours.get((slug, meter, hour))}"
                    )
        requests = self.stripe.control("requests", method="GET")["data"]
        answers = Counter(r["status"] for r in requests if r["path"].startswith("/v"))
        reports = Counter(UsageReport.objects.values_list("status", flat=True))
        self.figures["stripe"] = {
            "totals": rows,
            "usage_reports": dict(reports),
            "late_revisions": UsageReport.objects.filter(revision__gt=1).count(),
            "api_answers": {str(k): v for k, v in sorted(answers.items())},
        }
        if differences:
            self.failures.append(f"Stripe's totals differ from local usage: {differences[:10]}")
        if answers.get(500, 0) == 0 or answers.get(429, 0) == 0:
            self.failures.append(f"the Stripe faults were never hit (answers {dict(answers)})")

    def check_webhooks(self) -> None:
        from stripe_sync.models import WebhookEvent
        from tenants.models import Tenant

        rows = Counter(WebhookEvent.objects.values_list("stripe_id", flat=True))
        statuses = Counter(WebhookEvent.objects.values_list("status", flat=True))
        delivered = self.hooks.delivered
        deliveries = Counter(delivered.values())
        plans = {}
        for slug, plan, customer in Tenant.objects.filter(stripe_customer__isnull=False).values_list(
            "slug", "plan", "stripe_customer_id"
        ):
            expected = "metered" if self.live_subscription(customer) else "free"
            plans[slug] = {"plan": plan, "stripe_says": expected}
            if plan != expected:
                self.failures.append(f"tenant {slug} is {plan}; Stripe's state says {expected}")
            story = PLAN_TENANTS.get(slug, "metered throughout: metered")
            intended = story.rsplit(": ", 1)[1]
            if expected != intended or plan != intended:
                self.failures.append(
                    f"tenant {slug} ({story}) ends {plan}, Stripe says {expected}: both should be {intended}"
                )
        self.figures["webhooks"] = {
            "stripe_events": len(self.hooks.events),
            "deliveries_2xx": sum(delivered.values()),
            "events_by_deliveries": {str(k): v for k, v in sorted(deliveries.items())},
            "delivery_attempts": self.hooks.stats["attempts"],
            "failed_deliveries_retried": self.hooks.stats["attempts"] - sum(delivered.values()),
            "out_of_order_first_deliveries": self.hooks.inversions(),
            "answered_duplicate": self.hooks.stats["duplicate_answers"],
            "stored_rows": sum(rows.values()),
            "stored_by_status": dict(statuses),
            "types": dict(Counter(e["type"] for e in self.hooks.events.values())),
            "plans": plans,
        }
        if set(rows) != set(self.hooks.events) or any(n != 1 for n in rows.values()):
            self.failures.append(
                f"{sum(rows.values())} webhook rows for {len(self.hooks.events)} Stripe events"
            )
        if any(n != 2 for n in delivered.values()) or len(delivered) != len(self.hooks.events):
            self.failures.append(f"not every event was delivered exactly twice: {dict(deliveries)}")
        bad = {
            s: n
            for s, n in statuses.items()
            if s not in (WebhookEvent.Status.PROCESSED, WebhookEvent.Status.IGNORED)
        }
        if bad:
            failed = WebhookEvent.objects.exclude(status__in=["processed", "ignored"]).first()
            self.failures.append(
                f"webhook events not processed: {bad}; first: {failed.stripe_id} {failed.type} "
                f"{failed.error.strip().splitlines()[-1] if failed.error.strip() else ''}"
            )
        if self.hooks.inversions() == 0:
            self.failures.append("no webhook was delivered out of order")

    def check_dashboard(self) -> None:
        from console.dashboard import billing_panel, dashboard

        billing = billing_panel()
        board = dashboard()
        stuck_words = ("aggregation", "usage report", "circuit breaker", "webhook", "stripe")
        stuck = [w for w in board.warnings if any(word in w.lower() for word in stuck_words)]
        self.figures["dashboard"] = {
            "reports_pending": billing.reports_pending,
            "reports_failed": billing.reports_failed,
            "breaker_open": billing.breaker_open,
            "webhooks_failed": billing.webhooks_failed,
            "webhooks_waiting": billing.webhooks_waiting,
            "stuck_warnings": stuck,
            "other_warnings": [w for w in board.warnings if w not in stuck],
        }
        if billing.reports_pending or billing.reports_failed or billing.breaker_open:
            self.failures.append(f"dashboard: outbox or breaker not clear: {self.figures['dashboard']}")
        if billing.webhooks_failed or billing.webhooks_waiting or billing.oldest_unprocessed is not None:
            self.failures.append(f"dashboard: webhooks not clear: {self.figures['dashboard']}")
        if stuck:
            self.failures.append(f"dashboard warns: {stuck}")

    # -- teardown --
    def cleanup(self) -> None:
        for child in reversed(self.children):
            child.stop()
        web = getattr(self, "web", None)
        if web is not None:
            web.stop()
        # Redis stays up for whoever comes next; only our own database in it is emptied.
        if getattr(self, "redis_port", None):
            with contextlib.suppress(Exception):
                subprocess.run(
                    ["bash", str(ROOT / "scripts" / "services.sh")], capture_output=True, check=False
                )
                self._redis("FLUSHDB")

    def report(self) -> int:
        self.figures["seconds"] = round(time.monotonic() - self.started, 1)
        self.figures["timeline"] = [f"{at}s {text}" for at, text in self.marks]
        self.figures["failures"] = self.failures
        self.figures["ok"] = not self.failures
        events = self.figures.get("events", {})
        hooks = self.figures.get("webhooks", {})
        print("\n== drill summary")
        for at, text in self.marks:
            print(f"  t={at:6.1f}s  {text}")
        if events:
            print(
                f"  events: {events['accepted_distinct']} accepted distinct ({events['requests']} requests, "
                f"{events['retried_requests']} retried, "
                f"{events['duplicates_in_answers']} answered duplicate, "
                f"{events['late_events']} late); stored {events['stored']}; in hourly aggregates "
                f"{events['in_hourly_aggregates']} over {events['hourly_aggregates']} aggregates; "
                f"pending hours {events['pending_hours']}"
            )
        for row in self.figures.get("stripe", {}).get("totals", []):
            print(
                f"  {row['tenant']:9} {row['meter']:9} local {row['local']:>12}  "
                f"units {row['units']:>7}  Stripe {row['stripe']:>7}"
            )
        if "stripe" in self.figures:
            print(
                f"  outbox: {self.figures['stripe']['usage_reports']}; "
                f"Stripe answers {self.figures['stripe']['api_answers']}"
            )
        if hooks:
            print(
                f"  webhooks: {hooks['stripe_events']} Stripe events, {hooks['deliveries_2xx']} deliveries "
                f"({hooks['out_of_order_first_deliveries']} out of order, "
                f"{hooks['failed_deliveries_retried']} retried), "
                f"{hooks['stored_rows']} stored {hooks['stored_by_status']}"
            )
            for slug, plan in hooks["plans"].items():
                print(f"    {slug:12} plan {plan['plan']:8} Stripe says {plan['stripe_says']}")
        if "dashboard" in self.figures:
            print(f"  dashboard: {self.figures['dashboard']}")
        print(f"  {self.figures['seconds']} s; " + ("OK" if not self.failures else "FAILED:"))
        for failure in self.failures:
            print(f"  - {failure}")
        print(json.dumps(self.figures, default=str), flush=True)
        return 0 if not self.failures else 1


def main() -> int:
    drill = Drill()
    try:
        drill.setup()
        drill.run()
        drill.check()
    except DrillFailure as error:
        drill.failures.append(str(error))
    except Exception:  # noqa: BLE001 - any crash is a failed drill, reported with the counts so far
        drill.failures.append(f"the drill crashed: {traceback.format_exc()[-3000:]}")
    finally:
        drill.cleanup()
    return drill.report()


if __name__ == "__main__":
    sys.exit(main())
