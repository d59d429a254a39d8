"""The raw-event store (metering/eventstore/base.py): event_store() answers the implementation for
the default database's engine."""

from django.db import connection

from metering.eventstore.base import EventStore

_stores: dict[str, EventStore] = {}


def event_store() -> EventStore:
    vendor = connection.vendor
    store = _stores.get(vendor)
    if store is None:
        if vendor == "postgresql":
            from metering.eventstore.postgresql import PostgreSQLEventStore

            store = PostgreSQLEventStore()
        else:
            from metering.eventstore.sqlite import SQLiteEventStore

            store = SQLiteEventStore()
        _stores[vendor] = store
    return store


__all__ = ["EventStore", "event_store"]
