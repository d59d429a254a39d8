"""Reads that may lag go to a read replica: the database router and its lag guard.

With DATABASE_REPLICA_URL set, settings add the database alias `replica` (a PostgreSQL streaming
standby). Reads go there only inside an explicit scope, `lagging_reads()` (a context manager and a
view decorator), which the pages and APIs that may show data a few seconds old enter: the operator
dashboard, `GET /api/v1/usage`, the daily report. Everything else reads the primary: writes, locks
(`select_for_update`, `get_or_create` read for writing), and the reads that must be exact (ingestion,
limits, entitlements, aggregation, the reporting outbox), which never enter the scope. Inside a
transaction on the primary, scoped reads stay on the primary too (they must see its writes).

The lag guard: before the replica serves a scope, its replay lag is measured on the standby (at most
once every CHECK_SECONDS per process); a replica more than REPLICA_MAX_LAG_SECONDS behind, one that
is not a standby streaming from its primary, or one that does not answer sends the reads to the
primary. A change of state is logged once per process (with the driver's error when the replica does
not answer: host and port, never the password); /metrics shows the lag and where lagging reads go
(`replica_gauges`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)

REPLICA = "replica"
# How long a process trusts its last measurement of the replica's lag.
CHECK_SECONDS = 3.0

# The replica's state; only OK lets it serve reads.
OK = "ok"
LAGGING = "lagging"  # replays more than REPLICA_MAX_LAG_SECONDS behind the primary
NOT_STREAMING = "not_streaming"  # a standby whose WAL receiver is not connected: may be any age
NOT_A_STANDBY = "not_a_standby"  # not in recovery (promoted, or not a replica at all)
UNREACHABLE = "unreachable"
STATES = (OK, LAGGING, NOT_STREAMING, NOT_A_STANDBY, UNREACHABLE)

# Seconds the standby's replay is behind: 0 when it has replayed all it received, else the age of
# the last transaction it replayed. Its WAL receiver must stream (a standby cut off from its primary
# has replayed all it received and would look current).
LAG_SQL = """
SELECT pg_is_in_recovery(),
       EXISTS (SELECT FROM pg_stat_wal_receiver),
       CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END
"""


@dataclass(frozen=True)
class ReplicaStatus:
    state: str
    lag_seconds: float | None  # None: not measured (no standby answered)
    checked_at: float  # time.monotonic()

    @property
    def serves_reads(self) -> bool:
        return self.state == OK


def replica_configured() -> bool:
    return REPLICA in connections.settings


def _measure() -> tuple[str, float | None, str]:
    """(state, lag, error) of the replica, from one query on its connection."""
    try:
        with connections[REPLICA].cursor() as cursor:
            cursor.execute(LAG_SQL)
            in_recovery, streaming, lag = cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 (any failure to ask means: do not read there)
        with suppress(Exception):
            connections[REPLICA].close()  # the next check connects afresh
        first_line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        return UNREACHABLE, None, f"{type(exc).__name__}: {first_line}"
    if not in_recovery:
        return NOT_A_STANDBY, None, ""
    lag = max(0.0, float(lag)) if lag is not None else math.inf
    if not streaming:
        return NOT_STREAMING, lag, ""
    if lag > settings.REPLICA_MAX_LAG_SECONDS:
        return LAGGING, lag, ""
    return OK, lag, ""


_lock = threading.Lock()
_status: ReplicaStatus | None = None
_logged_state: str | None = None


def replica_status(*, refresh: bool = False) -> ReplicaStatus | None:
    """The replica's state as this process last measured it, measured again when older than
    CHECK_SECONDS (or `refresh`); None without a replica."""
    global _status
    if not replica_configured():
        return None
    now = time.monotonic()
    status = _status
    if not refresh and status is not None and now - status.checked_at < CHECK_SECONDS:
        return status
    with _lock:
        status = _status
        if refresh or status is None or time.monotonic() - status.checked_at >= CHECK_SECONDS:
            state, lag, error = _measure()
            status = ReplicaStatus(state=state, lag_seconds=lag, checked_at=time.monotonic())
            _log_change(status, error)
            _status = status
    return status


def replica_status_reset() -> None:
    """Forget the last measurement (and the state last logged): tests, and a changed configuration."""
    global _status, _logged_state
    with _lock:
        _status = None
        _logged_state = None


def _log_change(status: ReplicaStatus, error: str) -> None:
    global _logged_state
    if status.state == _logged_state:
        return
    previous, _logged_state = _logged_state, status.state
    lag = "unknown" if status.lag_seconds is None else f"{status.lag_seconds:.1f} s"
    if status.serves_reads:
        logger.info(
            "read replica: lagging reads go to the replica (replay lag %s, limit %s s)",
            lag,
            settings.REPLICA_MAX_LAG_SECONDS,
            extra={"replica_state": status.state, "replica_previous_state": previous},
        )
    else:
        logger.warning(
            "read replica %s: lagging reads go to the primary (replay lag %s, limit %s s)%s",
            status.state.replace("_", " "),
            lag,
            settings.REPLICA_MAX_LAG_SECONDS,
            f"; {error}" if error else "",
            extra={"replica_state": status.state, "replica_previous_state": previous},
        )


# --- The scope --------------------------------------------------------------------------------------


class _Scope:
    """One `lagging_reads()` block: where its reads go, decided at its first read and kept, so that
    one page reads one database."""

    __slots__ = ("alias",)

    def __init__(self) -> None:
        self.alias: str | None = None


_scope: ContextVar[_Scope | None] = ContextVar("lagging_reads", default=None)


@contextmanager
def lagging_reads():
    """Reads inside may come from the read replica, up to REPLICA_MAX_LAG_SECONDS old.

    Also a decorator (`@lagging_reads()`). Only for reads whose answer may be seconds old: a page or
    an API that shows usage, never one that decides (limits, entitlements) or writes. Nested blocks
    share the outer block's choice.
    """
    if _scope.get() is not None:
        yield
        return
    token = _scope.set(_Scope())
    try:
        yield
    finally:
        _scope.reset(token)


def lagging_reads_alias() -> str:
    """Where a read in the current context goes: the replica only inside `lagging_reads()`, outside
    a transaction on the primary, with a replica whose lag guard lets it serve."""
    scope = _scope.get()
    if scope is None or connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return DEFAULT_DB_ALIAS
    if scope.alias is None:
        status = replica_status()
        scope.alias = REPLICA if status is not None and status.serves_reads else DEFAULT_DB_ALIAS
    return scope.alias


class ReplicaRouter:
    """settings.DATABASE_ROUTERS: scoped reads to the replica, everything else to the primary."""

    def db_for_read(self, model, **hints):
        return lagging_reads_alias()

    def db_for_write(self, model, **hints):
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints):
        # A row read from the replica is the primary's row.
        if {obj1._state.db, obj2._state.db} <= {DEFAULT_DB_ALIAS, REPLICA, None}:
            return True
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        # The replica replays the primary's schema; nothing is ever migrated on it.
        return db != REPLICA


# --- /metrics -----------------------------------------------------------------------------------------


def replica_gauges(now):
    """The replica's lag and where lagging reads go (business gauges, at each scrape); nothing
    without a replica."""
    status = replica_status()
    if status is None:
        return
    yield GaugeMetricFamily(
        "billing_replica_lag_seconds",
        "How far the read replica's replay is behind the primary (NaN: not measured: unreachable "
        "or not a standby); +Inf: nothing replayed yet.",
        value=math.nan if status.lag_seconds is None else status.lag_seconds,
    )
    yield GaugeMetricFamily(
        "billing_replica_reads",
        "1 when reads that may lag (dashboard, usage API, reports) go to the read replica; 0 when the "
        "lag guard sends them to the primary.",
        value=1 if status.serves_reads else 0,
    )
    family = GaugeMetricFamily(
        "billing_replica_state",
        "The read replica's state as the lag guard sees it (1 for the current one).",
        labels=["state"],
    )
    for state in STATES:
        family.add_metric([state], 1 if state == status.state else 0)
    yield family
