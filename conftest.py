"""Fixtures shared by every app's tests, and how test helpers are named.

- A row a test needs is made by its model's factory_boy factory, `<Model>Factory` in
  `<app>/tests/factories.py` (dj-stripe's mirror rows in stripe_sync's), given only the fields the
  test is about. `Model.objects.create` stays only where creating the row is what the test checks.
  No `make_*`, `create_*` or `build_*` helpers.
- A fixture is named by what it gives, a noun: `tenant`, `api_calls`, `local_stripe`,
  `cost_explorer`; one that gives the test a function to call is named by what the function does
  (`run_on_commit`, `deliver_event`). Autouse fixtures that give nothing start with `_`.
- A plain helper is named by what it returns, a noun (`page`, `elements`, `month_days`), or by what it
  does, a verb (`issue_key`, `run_command`, `link_customer`, `ingest`). Helpers that serve several
  test modules live in `<app>/tests/support.py` (console's page parser in `page_support.py`);
  fixtures that serve several modules, in the nearest conftest.py.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection
from rest_framework.test import APIClient

from metering.tests.factories import MeterFactory
from tenants.tests.factories import TenantFactory
from tenants.tests.support import issue_key, issue_platform_key, key_client

ROOT = Path(__file__).resolve().parent
STRIPE_TEST_KEY = "sk_test_PlatformSuiteLocalStripeServer0001"  # dj-stripe wants 24+ characters
STRIPE_TEST_WEBHOOK_SECRET = "whsec_platform_suite"  # noqa: S105 (a test value)
AWS_TEST_REGION = "us-east-1"


def pytest_collection_modifyitems(config, items):
    on_postgres = connection.vendor == "postgresql"
    skip_pg = pytest.mark.skip(reason="needs PostgreSQL (DATABASE_URL)")
    for item in items:
        if "worker" in item.keywords and "postgres" not in item.keywords:
            item.add_marker(pytest.mark.postgres)  # a worker process cannot see an in-memory DB
        if not on_postgres and "postgres" in item.keywords:
            item.add_marker(skip_pg)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """`make test`'s SQLite pass runs on a database file scripts/test_databases.py built (as the demo
    builds its own) and pytest reuses, instead of an in-memory one migrated from scratch."""
    from django.conf import settings

    prebuilt = os.environ.get("TEST_SQLITE_DATABASE")
    default = settings.DATABASES["default"]
    if prebuilt and default["ENGINE"] == "django.db.backends.sqlite3":
        default.setdefault("TEST", {})["NAME"] = prebuilt


@pytest.fixture(autouse=True)
def _fresh_key_cache():
    from tenants.key_cache import api_key_cache_clear

    api_key_cache_clear()
    yield
    api_key_cache_clear()


@pytest.fixture(autouse=True)
def _isolated_cache(settings, request):
    """Each test gets an empty cache of its own (rate-limit counters must not leak across tests
    or runs); tests that want Redis set it themselves with a key prefix of their own."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": request.node.nodeid,
        }
    }


@pytest.fixture(autouse=True)
def _fresh_meter_cache():
    """Meters are recreated (with new ids) in every test; the ingestion cache must not outlive them."""
    from metering.ingest import meter_cache

    meter_cache.clear()
    yield
    meter_cache.clear()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test databases, then the raw-event partitions around today (a reused test
    database may be days old): what the hourly upkeep does in production. Only when a test asks
    for the database."""
    from django.utils import timezone

    from metering.eventstore import event_store

    with django_db_blocker.unblock():
        event_store().maintain(now=timezone.now())


@pytest.fixture(autouse=True)
def _fresh_partition_cache():
    """A raw-event partition a test created inside its transaction is gone after the rollback: the
    event store must not remember it (metering/eventstore/postgresql.py caches what exists)."""
    from metering.eventstore import _stores

    yield
    for store in _stores.values():
        store.forget_partitions()


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def tenant(db):
    return TenantFactory(slug="tenant-a", name="Tenant A")


@pytest.fixture
def other_tenant(db):
    return TenantFactory(slug="tenant-b", name="Tenant B")


@pytest.fixture
def api_calls(db):
    return MeterFactory(code="api_calls", name="API calls", unit="call", aggregation="count")


@pytest.fixture
def storage(db):
    return MeterFactory(code="storage_gb", name="Storage", unit="GB", aggregation="sum")


@pytest.fixture
def tenant_key(tenant):
    return issue_key(tenant)


@pytest.fixture
def tenant_client(tenant_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {tenant_key}")
    return client


@pytest.fixture
def platform_key(db):
    """A platform key (the SaaS's backend) with every scope."""
    return issue_platform_key()


@pytest.fixture
def platform_client(platform_key):
    return key_client(platform_key)


@pytest.fixture
def client_with_scopes(db):
    """Gives a function: an API client holding a new platform key with only the given scopes."""
    return lambda *scopes: key_client(issue_platform_key(*scopes, name="scoped"))


def beat_task(task: str):
    """The PeriodicTask of Celery task `task`, as `migrate` leaves it: synced from the declaration in
    settings.PERIODIC_TASKS (core/schedules.py).

    The sync runs again first (it is idempotent and edits nothing that exists), because a
    transactional test may have flushed the rows migrate wrote into a reused test database.
    """
    from django_celery_beat.models import PeriodicTask

    from core.schedules import periodic_tasks_sync

    periodic_tasks_sync()
    return PeriodicTask.objects.select_related("crontab", "interval").get(task=task)


def run_at_once(target, count: int) -> list:
    """Run `target()` in `count` threads released together; return their results.

    Each thread has its own database connection, closed when it ends.
    """
    results, barrier = [], threading.Barrier(count)

    def run():
        barrier.wait()
        try:
            results.append(target())
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _database_url_for_subprocess() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


@pytest.fixture(scope="session")
def redis_url():
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("needs the test Redis server (REDIS_URL; scripts/services.sh starts one)")
    return url


@pytest.fixture(scope="session")
def stripe_server():
    """The suite's local Stripe server (tests/stripe_server), one per test session."""
    from tests.stripe_server import StripeServer

    with StripeServer() as server:
        yield server


@pytest.fixture
def local_stripe(stripe_server, settings, monkeypatch):
    """The platform configured to reach a fresh local Stripe server, as production reaches Stripe."""
    import stripe

    stripe_server.reset()
    settings.STRIPE_API_KEY = STRIPE_TEST_KEY
    settings.STRIPE_TEST_SECRET_KEY = STRIPE_TEST_KEY
    settings.STRIPE_API_BASE = stripe_server.url
    settings.STRIPE_METER_EVENTS_API_BASE = stripe_server.url
    settings.STRIPE_WEBHOOK_SECRET = STRIPE_TEST_WEBHOOK_SECRET
    settings.DJSTRIPE_WEBHOOK_SECRET = STRIPE_TEST_WEBHOOK_SECRET
    monkeypatch.setattr(stripe, "api_base", stripe_server.url)
    monkeypatch.setattr(stripe, "meter_events_api_base", stripe_server.url)
    monkeypatch.setattr(stripe, "max_network_retries", 0)
    return stripe_server


@pytest.fixture(scope="session")
def moto_server():
    """A moto server (AWS over HTTP) for the session; tests reach it through AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    _sign_a_certificate_with_real_time()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _sign_a_certificate_with_real_time() -> None:
    """cryptography's x509 code keeps the datetime class it first sees. moto's SNS signs a certificate for
    every message delivered to a subscription; were the first one signed under freezegun (a Costwatch alert
    test), every later publish outside frozen time would fail with a 500. Sign one now, unfrozen."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "warm-up")])
    now = datetime.now(UTC)
    x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(
        1
    ).not_valid_before(now).not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256())


@pytest.fixture(scope="session")
def aws_proxy(moto_server):
    """tests/aws_proxy.py in front of the moto server: what moto cannot answer (Cost Explorer's forecast,
    API Gateway's GetUsage) and AWS's errors on demand. A test points AWS_ENDPOINT_URL at `.url`."""
    from tests.aws_proxy import AwsProxy

    proxy = AwsProxy(moto_server).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def aws(moto_server, monkeypatch):
    """boto3 configured for the moto server with fake credentials, its state reset for this test."""
    import urllib.request

    reset = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")  # noqa: S310
    urllib.request.urlopen(reset, timeout=10)  # noqa: S310 (the local moto server)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", AWS_TEST_REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_server


def start_celery_worker(*, env: dict, log: Path, name: str, queues: str | None = None) -> subprocess.Popen:
    """Start a real `celery worker` process and wait until it answers a ping."""
    from billing_platform.celery import app

    node = f"{name}-{os.getpid()}@%h"
    command = [sys.executable, "-m", "celery", "-A", "billing_platform", "worker", "--pool", "solo"]
    command += ["--without-gossip", "--without-mingle", "--loglevel", "INFO", "-n", node]
    command += ["--logfile", str(log)]
    if queues:
        command += ["-Q", queues]
    proc = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, start_new_session=True)
    deadline = time.monotonic() + 60
    hostname = node.replace("%h", socket.gethostname())
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited with {proc.returncode}: {log.read_text()[-2000:]}")
        if app.control.ping(destination=[hostname], timeout=0.5):
            return proc
    proc.kill()
    raise RuntimeError(f"celery worker did not answer a ping in 60s: {log.read_text()[-2000:]}")


def stop_celery_worker(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def worker_env(django_db_setup, django_db_blocker, redis_url, stripe_server) -> dict:
    """The environment of a worker process: the test database and Redis, the local Stripe server."""
    with django_db_blocker.unblock():
        database_url = _database_url_for_subprocess()
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "STRIPE_API_KEY": STRIPE_TEST_KEY,
        "STRIPE_API_BASE": stripe_server.url,
        "STRIPE_WEBHOOK_SECRET": STRIPE_TEST_WEBHOOK_SECRET,
    }


@pytest.fixture(scope="session")
def celery_worker_process(worker_env, tmp_path_factory):
    """A real `celery worker` process on the test Redis, the test database and the local Stripe."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    proc = start_celery_worker(env=worker_env, log=log, name="test")
    yield proc
    stop_celery_worker(proc)
