"""The raw-event store's interface: the one place that knows how raw usage events are kept.

Ingestion records batches through it, aggregation and the fresh usage read compute hours from it,
the usage API's group-by reads it, and retention prunes it. Everything else (pending hours,
aggregates, reporting) lives in ordinary tables and does not care where raw events are. Two
implementations share the ORM reads below: PostgreSQL (a table partitioned by day with a separate
idempotency key table; metering/eventstore/postgresql.py) and SQLite for the demo (one table, a
unique index; metering/eventstore/sqlite.py). docs/scaling.md says what a column store (ClickHouse)
implementation would need.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from django.db.models import Q, QuerySet

from metering.hourly import contiguous_ranges, hourly_values, meter_events
from metering.models import Meter

if TYPE_CHECKING:
    from metering.ingest import ValidEvent

# An inserted row as the limit check needs it: (id, tenant id, meter id, timestamp).
InsertedRow = tuple[int, int, int, datetime]


class EventStore(ABC):
    """Where raw usage events live. One instance per database vendor (see event_store())."""

    vendor: str

    # --- Writing --------------------------------------------------------------------------------

    @abstractmethod
    def record(
        self, tenant_ids: list[int], events: list[ValidEvent], now: datetime, *, returning: bool = False
    ) -> int | list[InsertedRow]:
        """Store the events whose (tenant, event id) was not stored before and mark their hours
        pending (metering.PendingHour), atomically. Returns how many were stored, or with
        `returning` the stored rows. Exactly once per (tenant, event id) for at least 36 days,
        whatever the timestamps and however batches race."""

    @abstractmethod
    def stored_keys(self, tenant_ids: list[int], events: list[ValidEvent]) -> set[tuple[int, str]]:
        """The (tenant id, event id) pairs of these events already stored (one query)."""

    def forget_partitions(self) -> None:
        """Drop what this process cached about the store's layout (PostgreSQL: partitions)."""
        return None

    def prepare_for(self, timestamps: Iterable[datetime], *, now: datetime | None = None) -> None:
        """Make sure rows with these timestamps can be stored (PostgreSQL: their partitions)."""
        return None

    # --- Reading --------------------------------------------------------------------------------

    def hour_values(
        self, meter: Meter, pairs: Iterable[tuple[int, datetime]]
    ) -> dict[tuple[int, datetime], tuple[Decimal, int]]:
        """{(tenant id, hour): (value, event count)} of `meter` for the given (tenant id, hour)
        pairs, computed from raw events with the meter's filters and aggregation; hours without
        events are absent. Aggregation of claimed hours and the fresh usage read use it."""
        pairs = set(pairs)
        if not pairs:
            return {}
        ranges = Q()
        for start, end in contiguous_ranges(sorted({hour for _, hour in pairs})):
            ranges |= Q(timestamp__gte=start, timestamp__lt=end)
        events = meter_events(meter).filter(tenant_id__in={t for t, _ in pairs}).filter(ranges)
        # The ranges cover every listed hour of every listed tenant: keep only the asked pairs.
        return {key: value for key, value in hourly_values(meter, events).items() if key in pairs}

    def rows_values(
        self, meter: Meter, rows: list[InsertedRow]
    ) -> dict[tuple[int, datetime], tuple[Decimal, int]]:
        """{(tenant id, hour): (value, count)} of just these stored rows (the limit check)."""
        if not rows:
            return {}
        stamps = [row[3] for row in rows]
        events = meter_events(meter).filter(
            tenant_id__in={row[1] for row in rows},
            timestamp__gte=min(stamps),
            timestamp__lte=max(stamps),
            id__in=[row[0] for row in rows],
        )
        return hourly_values(meter, events)

    def meter_events_between(
        self, meter: Meter, *, tenant_id: int, start: datetime, end: datetime
    ) -> QuerySet:
        """The tenant's events of `meter` in [start, end), filters applied: the group-by read."""
        return meter_events(meter).filter(tenant_id=tenant_id, timestamp__gte=start, timestamp__lt=end)

    def event_timestamps(self, event_id: str, *, tenant_id: int | None = None) -> list[datetime] | None:
        """Where events with this id sit in time, when the store can tell cheaply (None: unknown,
        search everything). The admin's exact-id search narrows its query with it."""
        return None

    # --- Retention ------------------------------------------------------------------------------

    @abstractmethod
    def effective_cutoff(self, cutoff: datetime) -> datetime:
        """What prune(cutoff) will actually remove up to (whole partitions only: a day boundary).
        Retention records it before anything is removed."""

    @abstractmethod
    def prune(self, *, cutoff: datetime, now: datetime) -> int:
        """Remove raw events timed before `cutoff`, an effective_cutoff() the caller has checked
        (every hour before it aggregated, reported and outside Stripe's window). Returns how many
        were removed (PostgreSQL: from the dropped partitions' statistics)."""

    def maintain(self, *, now: datetime) -> dict:
        """Periodic upkeep ahead of need (PostgreSQL: create the coming partitions)."""
        return {}
