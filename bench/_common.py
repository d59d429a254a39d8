"""Shared helpers for the benchmark scripts in bench/ (not tests; see bench/README.md).

- bench_database_url(): PostgreSQL from scripts/services.sh, a database of the bench's own,
  created when missing and migrated;
- setup_django(): Django configured against that database, in this process;
- tenant_with_key() / meter_ensure(): a tenant, its API key and meters, through the services;
- Gunicorn: the real server on a free loopback port, stopped at exit;
- percentile(), rss helpers, timing and output.

Only loopback traffic: PostgreSQL on 127.0.0.1, gunicorn bound to 127.0.0.1.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DEFAULT_DB = "billing_bench"


def log(message: str) -> None:
    print(message, flush=True)


# --- Database --------------------------------------------------------------------------------


def services_env() -> dict[str, str]:
    """Start (or reuse) PostgreSQL and Redis with scripts/services.sh; its exported variables."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "services.sh")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"scripts/services.sh failed: {result.stderr.strip()[-2000:]}")
    env = {}
    for line in result.stdout.splitlines():
        match = re.match(r"export (\w+)=(.*)$", line.strip())
        if match:
            env[match.group(1)] = match.group(2)
    if "DATABASE_URL" not in env:
        sys.exit("scripts/services.sh printed no DATABASE_URL")
    return env


def with_db_name(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def libpq_url(url: str) -> str:
    """psycopg accepts postgresql:// and postgres:// alike; keep it as is."""
    return url


def bench_database_url(name: str = DEFAULT_DB, *, migrate: bool = True) -> str:
    """The bench database's URL: created if missing, migrated (about a minute the first time)."""
    import psycopg

    services = services_env()
    base = services["DATABASE_URL"]
    # Suffixed with the checkout's id (scripts/services.sh), so that two checkouts do not share it.
    name = f"{name}_{services['CHECKOUT_ID']}" if "CHECKOUT_ID" in services else name
    url = with_db_name(base, name)
    with psycopg.connect(with_db_name(base, "postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            log(f"creating database {name}")
            conn.execute(f'CREATE DATABASE "{name}"')
    if migrate:
        started = time.monotonic()
        env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "billing_platform.settings"}
        env.pop("REDIS_URL", None)
        result = subprocess.run(
            [PYTHON, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            sys.exit(f"manage.py migrate failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
        applied = result.stdout.count(" OK")
        log(f"database {name}: migrate done ({applied} applied, {time.monotonic() - started:.1f}s)")
    return url


def setup_django(database_url: str, settings_module: str = "billing_platform.settings") -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    os.environ["DATABASE_URL"] = database_url
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # As in production (and in the Celery worker): DEBUG off, so Django keeps no query log.
    os.environ["DJANGO_DEBUG"] = "0"
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(64))
    os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "127.0.0.1")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection
    from django.utils import timezone

    from metering.eventstore import event_store

    # The raw-event partitions of the last 36 days and the next 3 (the hourly upkeep's work), for
    # benches that load history with SQL; nothing to do on a database not yet migrated.
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('metering_eventkey') IS NOT NULL")
        migrated = cursor.fetchone()[0]
    if migrated:
        event_store().maintain(now=timezone.now())
    connection.close()


def psql_connect(database_url: str, **kwargs):
    import psycopg

    return psycopg.connect(database_url, **kwargs)


def truncate_usage(database_url: str, *, aggregates: bool = False) -> None:
    """Empty the events table, its idempotency keys and the pending-hours queue (and, if asked,
    aggregates)."""
    tables = ["metering_usageevent", "metering_eventkey", "metering_pendinghour"]
    if aggregates:
        tables += ["metering_hourlyaggregatechange", "metering_hourlyaggregate", "metering_aggregationrun"]
    with psql_connect(database_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(tables)}")


# --- Tenants, keys, meters (Django must be set up) -------------------------------------------


def tenant_with_key(prefix: str = "bench") -> tuple[int, str]:
    """A new tenant and API key through the services; returns (tenant id, full key)."""
    from tenants.services import api_key_issue, tenant_create

    slug = f"{prefix}-{secrets.token_hex(4)}"
    tenant = tenant_create(name=slug, slug=slug, plan="metered", source="bench")
    issued = api_key_issue(tenant=tenant, name="bench")
    return tenant.pk, issued.secret


def meter_ensure(code: str, aggregation: str) -> int:
    from metering.models import Meter
    from metering.services import meter_create

    meter = Meter.objects.filter(code=code).first()
    if meter is None:
        meter = meter_create(code=code, aggregation=aggregation)
    elif meter.aggregation != aggregation:
        sys.exit(f"meter {code} exists with aggregation {meter.aggregation}, expected {aggregation}")
    if meter.filters.exists():
        sys.exit(f"meter {code} has property filters; the bench needs an unfiltered meter")
    return meter.pk


# --- Gunicorn ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """gunicorn billing_platform.wsgi:application on 127.0.0.1:<free port>, production-like env."""

    def __init__(
        self,
        database_url: str,
        *,
        workers: int = 2,
        settings_module: str = "billing_platform.settings",
        app: str = "billing_platform.wsgi:application",
        extra_args: tuple[str, ...] = (),
        extra_env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ):
        self.port = free_port()
        self.host = "127.0.0.1"
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": settings_module,
                "DJANGO_DEBUG": "0",
                "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
                "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
                "DJANGO_SECURE_SSL_REDIRECT": "0",
                "INGEST_RATE_LIMIT": "0",
                "DATABASE_URL": database_url,
                "LOG_LEVEL": "WARNING",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")])),
            }
        )
        env.update(extra_env or {})
        gunicorn = Path(PYTHON).with_name("gunicorn")
        self.log_path = log_path or ROOT / "bench" / f".gunicorn-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                str(gunicorn),
                app,
                "--workers",
                str(workers),
                "--bind",
                f"{self.host}:{self.port}",
                "--log-level",
                "warning",
                *extra_args,
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        atexit.register(self.stop)
        self._wait_ready(workers)

    def _wait_ready(self, workers: int, timeout: float = 60.0) -> None:
        import http.client

        deadline = time.monotonic() + timeout
        ok = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.flush()
                sys.exit(
                    f"gunicorn exited ({self.proc.returncode}); log:\n{self.log_path.read_text()[-3000:]}"
                )
            try:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                response.read()
                conn.close()
                if response.status == 200:
                    ok += 1
                    # Touch every worker a few times so imports and first connections are done.
                    if ok >= 4 * workers:
                        return
                    continue
            except OSError:
                pass
            time.sleep(0.2)
        sys.exit(f"gunicorn did not answer /healthz in {timeout:.0f}s; log: {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
            try:
                text = self.log_path.read_text()
            except OSError:
                text = ""
            if "Traceback" not in text and "ERROR" not in text:
                self.log_path.unlink(missing_ok=True)

    def worker_pids(self) -> list[int]:
        try:
            out = subprocess.run(
                ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
            ).stdout
        except OSError:
            return []
        return [int(pid) for pid in out.split()]


# --- Figures ----------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Linear-interpolated percentile (pct in 0..100) of a non-empty list."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def rss_peak_mb_self() -> float:
    import resource

    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine_info() -> dict:
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0]}


def emit_json(figures: dict) -> None:
    """The last line of every bench: one JSON object with all figures."""
    print(json.dumps(figures, sort_keys=False, default=str), flush=True)


def goal_line(name: str, ok: bool, detail: str) -> str:
    return f"  goal {name}: {'MET' if ok else 'NOT MET'} ({detail})"


# --- CPU accounting (who is the bottleneck) --------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: state is fields[0]; utime and stime are the 14th and 15th fields.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def postgres_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as comm:
                if comm.read().strip() in {"postgres", "postmaster"}:
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


class CpuMeter:
    """CPU seconds used by groups of processes between start() and stop().

    Processes that exit in between are not counted; gunicorn workers and PostgreSQL backends
    of persistent connections live through a phase.
    """

    def __init__(self, groups: dict[str, callable]):
        self.groups = groups
        self._start: dict[str, dict[int, float]] = {}
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self._start = {name: {p: proc_cpu_seconds(p) for p in pids()} for name, pids in self.groups.items()}
        self._machine = machine_busy_seconds()

    def stop(self) -> dict[str, float]:
        self.used["machine"] = round(machine_busy_seconds() - self._machine, 2)
        for name, pids in self.groups.items():
            before = self._start.get(name, {})
            self.used[name] = round(sum(proc_cpu_seconds(p) - before.get(p, 0.0) for p in pids()), 2)
        return self.used


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + (fields[7] if len(fields) > 7 else 0)
    return busy / _CLK_TCK


def pg_array_literal(values) -> str:
    """A PostgreSQL array literal of the values' text forms: '{"a","b"}' (quoted, escaped)."""
    parts = []
    for value in values:
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        parts.append(f'"{text}"')
    return "{" + ",".join(parts) + "}"


def median(values: list[float]) -> float:
    return percentile(values, 50)


def background_cores(seconds: float = 2.0) -> float:
    """How many cores other programs keep busy right now (the bench should run on a quiet machine)."""
    before = machine_busy_seconds()
    time.sleep(seconds)
    return round((machine_busy_seconds() - before) / seconds, 2)


def warn_if_busy(cores: float) -> None:
    if cores > 0.25:
        log(
            f"WARNING: other processes keep {cores:.2f} of {os.cpu_count()} cores busy before the run; "
            "figures will be low and noisy"
        )
