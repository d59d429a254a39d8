"""Reads that may lag against a real PostgreSQL streaming replica of the suite's database.

The replica is a hot standby of the suite's PostgreSQL made by `pg_basebackup -R`
(`scripts/services.sh replica`, started here when it is not running). Each test adds the alias
`replica` pointing at it (the test database has the same name there: the standby replays the whole
server) and turns the router on, as DATABASE_REPLICA_URL does. The tests commit (transactional), and
wait for the standby by WAL position, never by time.
"""

import copy
import fcntl
import json
import os
import re
import subprocess
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conftest import free_port
from core.db_routing import (
    LAGGING,
    NOT_A_STANDBY,
    OK,
    REPLICA,
    UNREACHABLE,
    replica_status,
    replica_status_reset,
)
from core.tests.test_metrics import TOKEN, scrape
from metering.tests.factories import HourlyAggregateFactory, MeterFactory
from tenants.models import Tenant
from tenants.tests.factories import TenantFactory
from tenants.tests.support import issue_key, key_client

pytestmark = [
    pytest.mark.postgres,
    # serialized_rollback: the flush after each test then leaves the content types and permissions
    # of the serialized test database (a plain flush recreates them with new ids, which breaks every
    # later serialized_rollback test of the session).
    pytest.mark.django_db(transaction=True, serialized_rollback=True, databases=[DEFAULT_DB_ALIAS, REPLICA]),
]

ROOT = Path(__file__).resolve().parents[2]
SERVICES_DIR = Path(os.environ.get("SERVICES_DIR", "/tmp/billing-platform-services"))  # noqa: S108 (services.sh's)
WAIT_SECONDS = 120


@pytest.fixture(scope="session")
def streaming_replica_port() -> int:
    """The port of the suite's streaming replica, started (or reused) by scripts/services.sh."""
    primary = django_settings.DATABASES["default"]
    done = subprocess.run(
        [str(ROOT / "scripts" / "services.sh"), "replica"],
        env={**os.environ, "TEST_PG_PORT": str(primary.get("PORT") or 5432)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/services.sh replica failed:\n{done.stderr[-3000:]}")
    return int(re.search(r"TEST_PG_REPLICA_PORT=(\d+)", done.stdout).group(1))


def point_replica_alias_at(port: int) -> None:
    """The alias `replica`: the test database on the server at `port`, as DATABASE_REPLICA_URL makes
    it (a mirror of default for the test machinery: never flushed, never migrated)."""
    if REPLICA in connections.settings:
        connections[REPLICA].close()
        del connections[REPLICA]
    alias = copy.deepcopy(connections[DEFAULT_DB_ALIAS].settings_dict)
    alias.update(PORT=port, CONN_MAX_AGE=0)
    alias["TEST"] = {**alias["TEST"], "MIRROR": DEFAULT_DB_ALIAS}
    connections.settings[REPLICA] = alias
    replica_status_reset()


@pytest.fixture(scope="module", autouse=True)
def _replica_alias(django_db_setup, streaming_replica_port):
    """The alias exists for this module's tests only (they list it in their databases); one that
    DATABASE_REPLICA_URL configured comes back after them."""
    configured = connections.settings.get(REPLICA)
    point_replica_alias_at(streaming_replica_port)
    yield
    connections[REPLICA].close()
    del connections[REPLICA]
    if configured is None:
        del connections.settings[REPLICA]
    else:
        connections.settings[REPLICA] = configured
    replica_status_reset()


def standby(port: int) -> psycopg.Connection:
    """A plain connection to the standby's server, to resume its replay whatever the test did."""
    primary = connections[DEFAULT_DB_ALIAS].settings_dict
    return psycopg.connect(
        host=primary["HOST"] or "127.0.0.1",
        port=port,
        user=primary["USER"],
        password=primary["PASSWORD"],
        dbname="postgres",
        autocommit=True,
    )


@pytest.fixture
def replica(streaming_replica_port, settings):
    """The alias `replica` on the streaming replica, the router on; replay resumed at the end.

    Checkouts sharing the replica take turns (a test pauses its replay)."""
    SERVICES_DIR.mkdir(parents=True, exist_ok=True)
    with open(SERVICES_DIR / "pg-replica-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        settings.DATABASE_ROUTERS = ["core.db_routing.ReplicaRouter"]
        settings.REPLICA_MAX_LAG_SECONDS = 3600
        settings.METRICS_TOKEN = TOKEN
        point_replica_alias_at(streaming_replica_port)
        try:
            yield connections[REPLICA]
        finally:
            with standby(streaming_replica_port) as server:
                server.execute("SELECT pg_wal_replay_resume()")
            point_replica_alias_at(streaming_replica_port)


def primary_lsn() -> str:
    """The end of the WAL the primary has made so far. Not pg_current_wal_lsn(): the test server
    commits asynchronously (synchronous_commit off), so the last commits may not be written yet."""
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_insert_lsn()::text")
        return cursor.fetchone()[0]


def wait_for(replica, what: str, lsn: str) -> None:
    """Until the standby has `what` ('replayed' or 'received') the primary's WAL up to `lsn`."""
    function = {"replayed": "pg_last_wal_replay_lsn", "received": "pg_last_wal_receive_lsn"}[what]
    with replica.cursor() as cursor:
        for _ in range(WAIT_SECONDS * 20):
            cursor.execute(f"SELECT {function}() >= %s::pg_lsn", [lsn])
            if cursor.fetchone()[0]:
                return
            cursor.execute("SELECT pg_sleep(0.05)")
    pytest.fail(f"the replica has not {what} the primary's WAL up to {lsn} in {WAIT_SECONDS} s")


def pause_replay(replica) -> None:
    with replica.cursor() as cursor:
        cursor.execute("SELECT pg_wal_replay_pause()")
        for _ in range(WAIT_SECONDS * 20):
            cursor.execute("SELECT pg_get_wal_replay_pause_state()")
            if cursor.fetchone()[0] == "paused":
                return
            cursor.execute("SELECT pg_sleep(0.05)")
    pytest.fail("the replica's replay did not pause")


@contextmanager
def queries_on(alias: str):
    """The SQL run on `alias` inside the block, without the lag guard's own question."""
    statements = []
    with CaptureQueriesContext(connections[alias]) as captured:
        yield statements
    statements.extend(q["sql"] for q in captured.captured_queries if "pg_is_in_recovery" not in q["sql"])


def on_table(statements, table: str) -> list[str]:
    return [sql for sql in statements if f'"{table}"' in sql]


@pytest.fixture
def usage(replica):
    """A tenant's client and the range holding two hours of its usage, the first one recorded."""
    tenant = TenantFactory(slug="replica-co")
    client = key_client(issue_key(tenant), scheme="Api-Key")
    meter = MeterFactory(code="api_calls")
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    first, second = now - timedelta(hours=2), now - timedelta(hours=1)
    HourlyAggregateFactory(tenant=tenant, meter=meter, hour=first, value=5, event_count=5)
    query = {"meter": "api_calls", "start": first.isoformat(), "end": (now + timedelta(hours=1)).isoformat()}

    def read() -> dict:
        response = client.get("/api/v1/usage", query)
        assert response.status_code == 200, response.content
        return {point["start"]: point["value"] for point in response.json()["data"]}

    return {"tenant": tenant, "meter": meter, "read": read, "first": first, "second": second}


def iso(moment) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_usage_is_read_from_the_replica_and_from_the_primary_once_the_replica_lags(
    replica, usage, client, settings
):
    read = usage["read"]
    wait_for(replica, "replayed", primary_lsn())
    assert replica_status(refresh=True).state == OK

    with queries_on(REPLICA) as on_replica, queries_on(DEFAULT_DB_ALIAS) as on_primary:
        assert read() == {iso(usage["first"]): "5"}
    assert on_table(on_replica, "metering_hourlyaggregate")
    assert not on_table(on_primary, "metering_hourlyaggregate")
    # The key was checked on the primary (authentication runs before the scope).
    assert not on_table(on_replica, "tenants_tenantapikey")

    # Outside the scope, reads stay on the primary.
    with queries_on(REPLICA) as on_replica:
        assert Tenant.objects.filter(slug="replica-co").exists()
    assert on_replica == []

    # Replay paused: the next hour reaches the standby but is not applied.
    pause_replay(replica)
    HourlyAggregateFactory(tenant=usage["tenant"], meter=usage["meter"], hour=usage["second"], value=7)
    wait_for(replica, "received", primary_lsn())

    # Within the limit (an hour here), the replica serves: the answer is its older one.
    status = replica_status(refresh=True)
    assert (status.state, status.lag_seconds > 0) == (OK, True)
    assert read() == {iso(usage["first"]): "5"}

    # Over the limit, the primary serves, with the new hour; /metrics says so.
    settings.REPLICA_MAX_LAG_SECONDS = 0
    assert replica_status(refresh=True).state == LAGGING
    with queries_on(REPLICA) as on_replica, queries_on(DEFAULT_DB_ALIAS) as on_primary:
        assert read() == {iso(usage["first"]): "5", iso(usage["second"]): "7"}
    assert on_replica == []
    assert on_table(on_primary, "metering_hourlyaggregate")
    samples = scrape(client)
    assert samples[("billing_replica_reads", ())] == 0
    assert samples[("billing_replica_state", (("state", "lagging"),))] == 1
    assert samples[("billing_replica_lag_seconds", ())] > 0

    # Replay resumed and caught up: the replica serves again, now with the new hour.
    with replica.cursor() as cursor:
        cursor.execute("SELECT pg_wal_replay_resume()")
    wait_for(replica, "replayed", primary_lsn())
    settings.REPLICA_MAX_LAG_SECONDS = 3600
    assert replica_status(refresh=True).state == OK
    with queries_on(REPLICA) as on_replica:
        assert read() == {iso(usage["first"]): "5", iso(usage["second"]): "7"}
    assert on_table(on_replica, "metering_hourlyaggregate")
    assert scrape(client)[("billing_replica_reads", ())] == 1


def test_dashboard_and_reports_read_the_replica_entitlements_and_ingestion_the_primary(
    replica, usage, admin_client
):
    tenant_client = key_client(issue_key(usage["tenant"]), scheme="Api-Key")
    wait_for(replica, "replayed", primary_lsn())
    assert replica_status(refresh=True).state == OK
    month = usage["first"].strftime("%Y-%m")
    day = usage["first"].date().isoformat()

    for url in [
        "/admin/",
        f"/admin/reports/daily/?date={day}",
        f"/admin/reports/daily.csv?date={day}",
        f"/admin/costwatch/tenantmargin/?month={month}",
        f"/admin/costwatch/tenantmargin/csv/?month={month}",
    ]:
        with queries_on(REPLICA) as on_replica, queries_on(DEFAULT_DB_ALIAS) as on_primary:
            assert admin_client.get(url).status_code == 200, url
        assert on_replica, url
        # The operator's session and permissions are read on the primary.
        assert on_table(on_primary, "django_session"), url
        assert not on_table(on_replica, "django_session"), url
        assert not on_table(on_replica, "auth_user"), url

    with queries_on(REPLICA) as on_replica:
        assert tenant_client.get("/api/v1/entitlements").status_code == 200
        ingested = tenant_client.post(
            "/api/v1/events",
            json.dumps({"id": "replica-1", "meter": "api_calls"}),
            content_type="application/json",
        )
        assert ingested.status_code == 202, ingested.content
    assert on_replica == []


def test_a_replica_that_is_down_or_not_a_standby_leaves_reads_on_the_primary(replica, usage, caplog):
    read = usage["read"]
    # Nothing listens on the port: a replica that is down.
    point_replica_alias_at(free_port())
    with queries_on(DEFAULT_DB_ALIAS) as on_primary:
        assert read() == {iso(usage["first"]): "5"}
        assert read() == {iso(usage["first"]): "5"}
    assert on_table(on_primary, "metering_hourlyaggregate")
    assert replica_status().state == UNREACHABLE
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "core.db_routing" and r.levelname == "WARNING"
    ]
    assert len(warnings) == 1  # once per change of state, not per read
    assert warnings[0].startswith("read replica unreachable: lagging reads go to the primary")
    assert connections[DEFAULT_DB_ALIAS].settings_dict["PASSWORD"] not in warnings[0].split("; ", 1)[1]

    # The primary itself under the replica's name (a promoted or misconfigured replica).
    point_replica_alias_at(int(connections[DEFAULT_DB_ALIAS].settings_dict["PORT"]))
    with queries_on(REPLICA) as on_replica:
        assert read() == {iso(usage["first"]): "5"}
    assert on_replica == []
    assert replica_status().state == NOT_A_STANDBY
