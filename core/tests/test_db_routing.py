"""The database router and its lag guard (core/db_routing.py) without a replica server: which alias
each read and write goes to, the scope, the guard's caching and logging, the settings and the gauges.
The same against a real streaming replica: test_replica_streaming.py."""

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import DEFAULT_DB_ALIAS

from core import db_routing
from core.db_routing import (
    LAGGING,
    NOT_A_STANDBY,
    OK,
    REPLICA,
    UNREACHABLE,
    ReplicaRouter,
    ReplicaStatus,
    lagging_reads,
    lagging_reads_alias,
    replica_status,
    replica_status_reset,
)
from core.tests.test_metrics import TOKEN, scrape
from tenants.models import Tenant

ROOT = Path(__file__).resolve().parents[2]
router = ReplicaRouter()


@pytest.fixture(autouse=True)
def _fresh_guard():
    replica_status_reset()
    yield
    replica_status_reset()


@pytest.fixture
def guard(monkeypatch):
    """A replica alias that the guard finds in the state the test sets (`guard.state`, `guard.lag`),
    counting its measurements; the guard's own caching and logging run as they are."""

    class Guard:
        state, lag, measured = OK, 0.5, 0

        def measure(self):
            self.measured += 1
            return (
                self.state,
                self.lag,
                "OperationalError: connection refused" if self.state == UNREACHABLE else "",
            )

    fake = Guard()
    monkeypatch.setattr(db_routing, "replica_configured", lambda: True)
    monkeypatch.setattr(db_routing, "_measure", fake.measure)
    return fake


def test_writes_and_migrations_stay_on_the_primary(guard):
    with lagging_reads():
        assert router.db_for_write(Tenant) == DEFAULT_DB_ALIAS
    assert router.db_for_write(Tenant) == DEFAULT_DB_ALIAS
    assert router.allow_migrate(REPLICA, "tenants") is False
    assert router.allow_migrate(DEFAULT_DB_ALIAS, "tenants") is True


def test_reads_go_to_the_replica_only_inside_the_scope(guard):
    assert router.db_for_read(Tenant) == DEFAULT_DB_ALIAS
    with lagging_reads():
        assert router.db_for_read(Tenant) == REPLICA
    assert router.db_for_read(Tenant) == DEFAULT_DB_ALIAS
    assert guard.measured == 1  # outside the scope the guard is not even asked


@pytest.mark.parametrize("state", [LAGGING, NOT_A_STANDBY, UNREACHABLE, db_routing.NOT_STREAMING])
def test_a_replica_the_guard_refuses_leaves_reads_on_the_primary(guard, state):
    guard.state = state
    with lagging_reads():
        assert router.db_for_read(Tenant) == DEFAULT_DB_ALIAS


def test_without_a_replica_scoped_reads_stay_on_the_primary(monkeypatch):
    monkeypatch.setattr(db_routing, "replica_configured", lambda: False)  # no DATABASE_REPLICA_URL
    assert replica_status() is None
    with lagging_reads():
        assert lagging_reads_alias() == DEFAULT_DB_ALIAS


@pytest.mark.django_db
def test_inside_a_transaction_on_the_primary_scoped_reads_stay_there(guard):
    # The test runs inside a transaction (pytest-django's `db`): reads must see its writes.
    with lagging_reads():
        assert router.db_for_read(Tenant) == DEFAULT_DB_ALIAS
    assert guard.measured == 0


def test_a_scope_keeps_its_first_choice_and_nested_scopes_share_it(guard):
    with lagging_reads():
        assert router.db_for_read(Tenant) == REPLICA
        guard.state = LAGGING
        replica_status(refresh=True)
        with lagging_reads():
            assert router.db_for_read(Tenant) == REPLICA  # one page reads one database
        assert router.db_for_read(Tenant) == REPLICA
    with lagging_reads():
        assert router.db_for_read(Tenant) == DEFAULT_DB_ALIAS


def test_the_scope_is_also_a_view_decorator(guard):
    @lagging_reads()
    def view():
        return router.db_for_read(Tenant)

    assert view() == REPLICA
    assert view() == REPLICA  # a decorator enters a new scope on each call
    assert router.db_for_read(Tenant) == DEFAULT_DB_ALIAS


def test_the_guard_measures_once_per_interval_and_logs_once_per_change(guard, caplog):
    caplog.set_level(logging.INFO, logger="core.db_routing")
    guard.state, guard.lag = UNREACHABLE, None
    for _ in range(3):
        assert replica_status().state == UNREACHABLE
    assert guard.measured == 1  # cached for CHECK_SECONDS
    replica_status(refresh=True)
    guard.state, guard.lag = LAGGING, 42.0
    replica_status(refresh=True)
    guard.state, guard.lag = OK, 0.2
    replica_status(refresh=True)
    replica_status(refresh=True)
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "core.db_routing"]
    assert lines == [
        (
            "WARNING",
            "read replica unreachable: lagging reads go to the primary (replay lag unknown, limit 10.0 s); "
            "OperationalError: connection refused",
        ),
        (
            "WARNING",
            "read replica lagging: lagging reads go to the primary (replay lag 42.0 s, limit 10.0 s)",
        ),
        ("INFO", "read replica: lagging reads go to the replica (replay lag 0.2 s, limit 10.0 s)"),
    ]


@pytest.mark.django_db
def test_metrics_show_the_lag_and_where_lagging_reads_go(client, settings, guard):
    settings.METRICS_TOKEN = TOKEN
    guard.state, guard.lag = LAGGING, 12.5
    samples = scrape(client)
    assert samples[("billing_replica_lag_seconds", ())] == 12.5
    assert samples[("billing_replica_reads", ())] == 0
    assert samples[("billing_replica_state", (("state", "lagging"),))] == 1
    assert samples[("billing_replica_state", (("state", "ok"),))] == 0

    guard.state, guard.lag = UNREACHABLE, None
    replica_status(refresh=True)
    samples = scrape(client)
    assert math.isnan(samples[("billing_replica_lag_seconds", ())])
    assert samples[("billing_replica_state", (("state", "unreachable"),))] == 1

    guard.state, guard.lag = OK, 0.0
    replica_status(refresh=True)
    samples = scrape(client)
    assert samples[("billing_replica_reads", ())] == 1
    assert samples[("billing_replica_lag_seconds", ())] == 0


@pytest.mark.django_db
def test_metrics_have_no_replica_gauges_without_a_replica(client, settings, monkeypatch):
    monkeypatch.setattr(db_routing, "replica_configured", lambda: False)  # no DATABASE_REPLICA_URL
    settings.METRICS_TOKEN = TOKEN
    assert not [name for name, _ in scrape(client) if name.startswith("billing_replica")]


def test_the_replica_status_reads_as_the_guard_decides():
    assert ReplicaStatus(state=OK, lag_seconds=0.0, checked_at=0).serves_reads
    assert not ReplicaStatus(state=LAGGING, lag_seconds=11.0, checked_at=0).serves_reads


# --- Settings ------------------------------------------------------------------------------------


def settings_in_subprocess(**environ) -> subprocess.CompletedProcess:
    code = (
        "import json, django; from django.conf import settings; django.setup(); "
        "print(json.dumps({'databases': settings.DATABASES, 'routers': settings.DATABASE_ROUTERS, "
        "'max_lag': settings.REPLICA_MAX_LAG_SECONDS}, default=str))"
    )
    keep = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**keep, "DJANGO_SETTINGS_MODULE": "billing_platform.settings", **environ},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_settings_make_the_replica_alias_from_database_replica_url():
    done = settings_in_subprocess(
        DATABASE_URL="postgres://billing:pw@db.internal:5432/billing",
        DATABASE_REPLICA_URL="postgres://reader:pw2@replica.internal:5433/billing?sslmode=require",
        REPLICA_MAX_LAG_SECONDS="2.5",
        DATABASE_CONN_MAX_AGE="30",
    )
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    replica = config["databases"]["replica"]
    assert (replica["HOST"], replica["PORT"], replica["USER"], replica["NAME"]) == (
        "replica.internal",
        5433,
        "reader",
        "billing",
    )
    assert replica["ENGINE"] == config["databases"]["default"]["ENGINE"]
    assert replica["OPTIONS"] == {"sslmode": "require", "connect_timeout": 3}
    assert (replica["CONN_MAX_AGE"], replica["CONN_HEALTH_CHECKS"]) == (30, True)
    assert replica["TEST"]["MIRROR"] == "default"
    assert config["routers"] == ["core.db_routing.ReplicaRouter"]
    assert config["max_lag"] == 2.5


def test_settings_without_a_replica_add_no_alias_and_no_router():
    done = settings_in_subprocess(DATABASE_URL="postgres://billing:pw@db.internal:5432/billing")
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    assert list(config["databases"]) == ["default"]
    assert config["routers"] == []


def test_settings_refuse_a_replica_of_sqlite():
    done = settings_in_subprocess(
        DATABASE_URL="sqlite:///demo.sqlite3", DATABASE_REPLICA_URL="postgres://r:pw@replica:5432/billing"
    )
    assert done.returncode != 0
    assert "DATABASE_REPLICA_URL needs PostgreSQL, as DATABASE_URL" in done.stderr
