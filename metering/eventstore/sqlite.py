"""The demo's raw-event store: one SQLite table with a unique (tenant, event id) index.

SQLite runs write transactions one at a time (BEGIN IMMEDIATE), so look-then-insert is exact, and
the events themselves are the idempotency keys: retention deletes an event only once it was both
timed and received before the cutoff, which is at least 35 days after it was received."""

from __future__ import annotations

import json
from datetime import datetime

from django.db import transaction
from django.db.models import Q

from metering.eventstore.base import EventStore, InsertedRow
from metering.hourly import hour_start
from metering.models import PendingHour, UsageEvent

PRUNE_BATCH = 10_000


class SQLiteEventStore(EventStore):
    vendor = "sqlite"

    def record(self, tenant_ids, events, now, *, returning=False) -> int | list[InsertedRow]:
        with transaction.atomic():
            seen = self.stored_keys(tenant_ids, events)
            new = []
            for tenant_id, event in zip(tenant_ids, events, strict=True):
                if (tenant_id, event.event_id) in seen:
                    continue
                seen.add((tenant_id, event.event_id))
                new.append((tenant_id, event))
            created = UsageEvent.objects.bulk_create(
                UsageEvent(
                    tenant_id=tenant_id,
                    meter_id=e.meter_id,
                    event_id=e.event_id,
                    timestamp=e.timestamp,
                    quantity=e.quantity,
                    properties=json.loads(e.properties_json),
                    received_at=now,
                )
                for tenant_id, e in new
            )
            hours = sorted({(tenant_id, e.meter_id, hour_start(e.timestamp)) for tenant_id, e in new})
            PendingHour.objects.bulk_create(
                [PendingHour(tenant_id=t, meter_id=m, hour=h, marked_at=now) for t, m, h in hours],
                update_conflicts=True,
                unique_fields=["tenant", "meter", "hour"],
                update_fields=["marked_at"],
            )
        if returning:
            return [(row.pk, row.tenant_id, row.meter_id, row.timestamp) for row in created]
        return len(new)

    def stored_keys(self, tenant_ids, events) -> set[tuple[int, str]]:
        by_tenant: dict[int, set[str]] = {}
        for tenant_id, event in zip(tenant_ids, events, strict=True):
            by_tenant.setdefault(tenant_id, set()).add(event.event_id)
        condition = Q()
        for tenant_id, event_ids in by_tenant.items():
            condition |= Q(tenant_id=tenant_id, event_id__in=event_ids)
        return set(UsageEvent.objects.filter(condition).values_list("tenant_id", "event_id"))

    def effective_cutoff(self, cutoff: datetime) -> datetime:
        return cutoff

    def prune(self, *, cutoff, now) -> int:
        deleted = 0
        while True:
            ids = list(
                UsageEvent.objects.filter(received_at__lt=cutoff, timestamp__lt=cutoff)
                .order_by("received_at")
                .values_list("id", flat=True)[:PRUNE_BATCH]
            )
            if not ids:
                return deleted
            with transaction.atomic():
                deleted += UsageEvent.objects.filter(id__in=ids).delete()[0]
