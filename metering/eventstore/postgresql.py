"""Raw events on PostgreSQL: a table partitioned by UTC day of `timestamp`, and idempotency keys in
a second table partitioned by generation. docs/scaling.md explains the design; in short:

- metering_usageevent is PARTITION BY RANGE ("timestamp"), one partition per UTC day
  (metering_usageevent_YYYYMMDD). Aggregating an hour, the fresh usage read and the group-by read
  all name a time range, so PostgreSQL only opens the partitions of those days. Retention detaches
  and drops whole days (no DELETE, no bloat, no vacuum debt) once every hour in them is aggregated
  and reported and they are past Stripe's 35-day window (metering.aggregation.usage_events_prune).
  No unique index on the events: PostgreSQL can only enforce one that contains the partition key,
  and a resend of an event with a different timestamp would land in another partition.
- metering_eventkey (tenant_id, event_id, generation) is PARTITION BY LIST (generation), where a
  generation is a fixed 36-day slice of time (KEY_GENERATION) and its primary key is the arbiter.
  A batch inserts every key into the generation of `now` AND the one before it, ON CONFLICT DO
  NOTHING, and stores an event only when both inserts were new. Two sends of one key less than a
  generation apart fall in the same or in adjacent generations, so they always write the same
  key into at least one common partition, where the primary key serializes them (the later one
  waits for the earlier transaction and is then skipped). That holds whatever the timestamps, the
  partitions of the events, or the interleaving of concurrent batches: exactly once for at least
  36 days after the first send, with no read-then-write race and no lock of our own. Generations
  older than the previous one are dropped whole by maintain().
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable
from contextlib import nullcontext
from datetime import UTC, date, datetime, time, timedelta

from django.db import connection, transaction
from django.utils import timezone

from metering.eventstore.base import EventStore, InsertedRow

logger = logging.getLogger(__name__)

EVENTS = "metering_usageevent"
KEYS = "metering_eventkey"
DAY = timedelta(days=1)
KEY_GENERATION = timedelta(days=36)
# maintain() keeps the partitions of these days ready: ingestion accepts events 35 days back and
# 5 minutes ahead; a few days ahead so a stopped Beat is not felt at midnight.
DAYS_BACK = 36
DAYS_AHEAD = 3
# DDL waits at most this long for the parent's lock, instead of queueing every insert behind it.
DDL_LOCK_TIMEOUT = "5s"


def generation(moment: datetime) -> int:
    return int(moment.timestamp() // KEY_GENERATION.total_seconds())


def day_partition(day: date) -> str:
    return f"{EVENTS}_{day:%Y%m%d}"


def key_partition(number: int) -> str:
    return f"{KEYS}_g{number}"


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _advisory_key(name: str) -> int:
    digest = hashlib.blake2b(f"partitions:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


_INSERT = f"""
WITH input AS MATERIALIZED (
    SELECT *
    FROM unnest(%(tenant_ids)s::bigint[], %(meter_ids)s::bigint[], %(event_ids)s::varchar[],
                %(timestamps)s::timestamptz[], %(quantities)s::numeric[], %(properties)s::text[])
         AS u(tenant_id, meter_id, event_id, ts, quantity, properties)
), keys AS (
    INSERT INTO {KEYS} (generation, tenant_id, event_id, "timestamp")
    SELECT g.generation, i.tenant_id, i.event_id, i.ts
    FROM input i CROSS JOIN unnest(%(generations)s::integer[]) AS g(generation)
    ORDER BY i.tenant_id, i.event_id, g.generation
    ON CONFLICT (tenant_id, event_id, generation) DO NOTHING
    RETURNING tenant_id, event_id
), fresh AS (
    SELECT tenant_id, event_id FROM keys GROUP BY tenant_id, event_id HAVING count(*) = 2
), new AS (
    INSERT INTO {EVENTS} (tenant_id, meter_id, event_id, "timestamp", quantity, properties, received_at)
    SELECT DISTINCT ON (i.tenant_id, i.event_id)
           i.tenant_id, i.meter_id, i.event_id, i.ts, i.quantity, i.properties::jsonb, %(now)s
    FROM input i JOIN fresh f ON f.tenant_id = i.tenant_id AND f.event_id = i.event_id
    ORDER BY i.tenant_id, i.event_id
    RETURNING id, tenant_id, meter_id, "timestamp"
), pending AS (
    INSERT INTO metering_pendinghour (tenant_id, meter_id, hour, marked_at)
    SELECT DISTINCT tenant_id, meter_id, date_trunc('hour', "timestamp", 'UTC'), %(now)s::timestamptz
    FROM new
    ORDER BY 1, 2, 3
    -- An hour already pending is locked, not rewritten: "DO UPDATE ... WHERE false" takes the row
    -- lock that aggregation's claim (FOR UPDATE SKIP LOCKED) respects, without a new row version,
    -- its index entries and the dead tuple (marked_at stays when the hour became pending).
    ON CONFLICT (tenant_id, meter_id, hour) DO UPDATE SET marked_at = EXCLUDED.marked_at WHERE false
    RETURNING 1
)
"""  # noqa: S608 - table names are constants
INSERT_COUNTING = _INSERT + "SELECT (SELECT count(*) FROM new), (SELECT count(*) FROM pending)"  # noqa: S608
# A data-modifying CTE runs to completion whether or not the main query reads it.
INSERT_RETURNING = _INSERT + 'SELECT id, tenant_id, meter_id, "timestamp" FROM new'  # noqa: S608

_STORED = f"""
SELECT DISTINCT k.tenant_id, k.event_id
FROM unnest(%(tenant_ids)s::bigint[], %(event_ids)s::varchar[]) AS q(tenant_id, event_id)
JOIN {KEYS} k ON k.tenant_id = q.tenant_id AND k.event_id = q.event_id
WHERE k.generation = ANY(%(generations)s::integer[])
"""  # noqa: S608 - table names are constants

_CHILDREN = """
SELECT c.relname, c.reltuples::bigint
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
WHERE p.relname = %s
"""


def array_literal(values, *, quote: bool) -> str:
    """A PostgreSQL array literal: one parameter instead of a thousand adapted by psycopg."""
    if not quote:
        return "{" + ",".join(values) + "}"
    values = list(values)
    if not values:
        return "{}"
    # Escaped once for the whole array, not once per element: NUL never occurs in stored text
    # (PostgreSQL refuses it; validation refuses control characters in ids, JSON escapes them).
    joined = "\x00".join(values).replace("\\", "\\\\").replace('"', '\\"')
    return '{"' + joined.replace("\x00", '","') + '"}'


def _children(parent: str) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(_CHILDREN, [parent])
        return dict(cursor.fetchall())


def event_partition_days() -> dict[date, str]:
    """{day: partition name} of the events table's partitions."""
    days = {}
    for name in _children(EVENTS):
        try:
            days[datetime.strptime(name.rsplit("_", 1)[1], "%Y%m%d").date()] = name  # noqa: DTZ007 - a date
        except (IndexError, ValueError):
            continue
    return days


def key_generations() -> dict[int, str]:
    generations = {}
    for name in _children(KEYS):
        suffix = name.rsplit("_g", 1)[-1]
        if suffix.isdigit():
            generations[int(suffix)] = name
    return generations


class PostgreSQLEventStore(EventStore):
    vendor = "postgresql"

    def __init__(self):
        # Partitions known to exist, per process: a batch whose days are all known creates nothing
        # and asks nothing. Partitions are only ever dropped far behind the ingest window.
        self._lock = threading.Lock()
        self._days: set[date] = set()
        self._generations: set[int] = set()

    def forget_partitions(self) -> None:
        with self._lock:
            self._days.clear()
            self._generations.clear()

    # --- Partitions -----------------------------------------------------------------------------

    def _create(self, statements: list[str]) -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'")
            for statement in statements:
                cursor.execute(statement)

    def _ensure(self, parent: str, known: set, wanted: Iterable, existing, name, bounds) -> list[str]:
        """Create the partitions of `parent` for the `wanted` keys (days, generations) that neither
        this process knows of nor exist; returns the names of those created."""
        wanted = set(wanted) - known
        if not wanted:
            return []
        present = existing()
        missing = sorted(wanted - present.keys())
        if missing:
            self._create(
                [f"SELECT pg_advisory_xact_lock({_advisory_key(parent)})"]
                + [
                    f"CREATE TABLE IF NOT EXISTS {name(key)} PARTITION OF {parent} FOR VALUES {bounds(key)}"
                    for key in missing
                ]
            )
            logger.info("created partitions %s", ", ".join(map(name, missing)))
        with self._lock:
            known |= present.keys() | set(missing)
        return [name(key) for key in missing]

    def ensure_days(self, days: Iterable[date]) -> list[str]:
        """Create the events partitions of these days that are missing; returns the new ones."""
        return self._ensure(
            EVENTS,
            self._days,
            days,
            event_partition_days,
            day_partition,
            lambda day: f"FROM ('{_midnight(day).isoformat()}') TO ('{_midnight(day + DAY).isoformat()}')",
        )

    def ensure_generations(self, numbers: Iterable[int]) -> list[str]:
        """Create the key partitions of these generations that are missing; returns the new ones."""
        return self._ensure(
            KEYS, self._generations, numbers, key_generations, key_partition, lambda number: f"IN ({number})"
        )

    def prepare_for(self, timestamps: Iterable[datetime], *, now: datetime | None = None) -> None:
        stamps = list(timestamps)
        if stamps:
            first, last = min(stamps).astimezone(UTC).date(), max(stamps).astimezone(UTC).date()
            self.ensure_days(first + timedelta(days=n) for n in range((last - first).days + 1))
        if now is not None:
            current = generation(now)
            self.ensure_generations((current - 1, current))

    def maintain(self, *, now: datetime) -> dict:
        """Create the coming days' and generations' partitions; drop key generations that no
        longer take part in any check (older than the previous one)."""
        today = now.astimezone(UTC).date()
        self.forget_partitions()
        created = self.ensure_days(today + timedelta(days=n) for n in range(-DAYS_BACK, DAYS_AHEAD + 1))
        current = generation(now)
        created += self.ensure_generations((current - 1, current, current + 1))
        dropped = []
        for number, name in sorted(key_generations().items()):
            if number < current - 1:
                self._detach_and_drop(KEYS, name)
                dropped.append(name)
        if dropped:
            self.forget_partitions()
        return {"created": created, "dropped_key_generations": dropped}

    def _detach_and_drop(self, parent: str, name: str) -> None:
        # DETACH ... CONCURRENTLY takes no lock that blocks inserts into the parent; it cannot run
        # inside a transaction block (the test suite runs inside one: then a plain DETACH).
        concurrently = "" if connection.in_atomic_block else " CONCURRENTLY"
        with connection.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = '{DDL_LOCK_TIMEOUT}'")
            try:
                cursor.execute(f"ALTER TABLE {parent} DETACH PARTITION {name}{concurrently}")
                cursor.execute(f"DROP TABLE {name}")
            finally:
                cursor.execute("SET lock_timeout = DEFAULT")
        logger.info("dropped partition %s", name)

    # --- Writing --------------------------------------------------------------------------------

    def record(self, tenant_ids, events, now, *, returning=False) -> int | list[InsertedRow]:
        # One statement: insert the keys (both generations, sorted, so two overlapping batches lock
        # in one order), the events whose keys were both new, and mark their hours pending. The
        # pending upsert takes a row lock that aggregation's claim respects (see aggregation.py).
        # The arrays travel as literals: adapting each element in Python cost a third of a request.
        self.prepare_for((e.timestamp for e in events), now=now)
        current = generation(now)
        params = {
            "now": now,
            "generations": f"{{{current - 1},{current}}}",
            "tenant_ids": array_literal(map(str, tenant_ids), quote=False),
            "meter_ids": array_literal((str(e.meter_id) for e in events), quote=False),
            "event_ids": array_literal((e.event_id for e in events), quote=True),
            "timestamps": array_literal((e.timestamp.isoformat() for e in events), quote=False),
            "quantities": array_literal((str(e.quantity) for e in events), quote=False),
            "properties": array_literal((e.properties_json for e in events), quote=True),
        }
        # Inside a caller's transaction, a savepoint: a failed statement (a partition gone since
        # it was cached) then leaves that transaction usable for the retry.
        savepoint = transaction.atomic() if connection.in_atomic_block else nullcontext()
        with savepoint, connection.cursor() as cursor:
            if returning:
                cursor.execute(INSERT_RETURNING, params)
                return cursor.fetchall()
            cursor.execute(INSERT_COUNTING, params)
            accepted, _ = cursor.fetchone()
        return accepted

    def stored_keys(self, tenant_ids, events) -> set[tuple[int, str]]:
        current = generation(timezone.now())
        params = {
            "generations": f"{{{current - 1},{current}}}",
            "tenant_ids": array_literal(map(str, tenant_ids), quote=False),
            "event_ids": array_literal((e.event_id for e in events), quote=True),
        }
        with connection.cursor() as cursor:
            cursor.execute(_STORED, params)
            return set(cursor.fetchall())

    # --- Reading --------------------------------------------------------------------------------

    def event_timestamps(self, event_id, *, tenant_id=None):
        if tenant_id is None:
            return None  # the key index leads with the tenant: no cheap answer
        with connection.cursor() as cursor:
            cursor.execute(
                f'SELECT DISTINCT "timestamp" FROM {KEYS} WHERE tenant_id = %s AND event_id = %s',  # noqa: S608
                [tenant_id, event_id],
            )
            return [row[0] for row in cursor.fetchall()]

    # --- Retention ------------------------------------------------------------------------------

    def effective_cutoff(self, cutoff: datetime) -> datetime:
        return _midnight(cutoff.astimezone(UTC).date())

    def prune(self, *, cutoff, now) -> int:
        removed = 0
        sizes = _children(EVENTS)
        for day, name in sorted(event_partition_days().items()):
            if _midnight(day + DAY) > cutoff:
                continue
            rows = sizes.get(name, -1)
            if rows < 0:  # never analyzed: count it (a small or young table)
                with connection.cursor() as cursor:
                    cursor.execute(f"SELECT count(*) FROM {name}")  # noqa: S608 - our partition name
                    rows = cursor.fetchone()[0]
            self._detach_and_drop(EVENTS, name)
            removed += rows
        self.forget_partitions()
        return removed
