"""Raw events become a table partitioned by UTC day of `timestamp` on PostgreSQL, with idempotency
keys in their own table partitioned by generation (metering/eventstore/postgresql.py,
docs/scaling.md). Existing events are copied into the partitions and their keys written into the
current and previous generations.

SQLite (the demo) keeps its one table, its unique (tenant, event_id) index, its received_at index
and its foreign keys, which its event store relies on; it only gains the (unused) key table. The
model state drops the unique constraint, that index and the foreign key constraints, which the
PostgreSQL table no longer has. Not reversible on PostgreSQL (restore a backup instead).
"""

from datetime import UTC, datetime, time, timedelta

import django.db.models.deletion
from django.db import migrations, models

EVENTS = "metering_usageevent"
KEYS = "metering_eventkey"
GENERATION_SECONDS = 36 * 86400


def _midnight(day):
    return datetime.combine(day, time.min, tzinfo=UTC)


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.create_model(apps.get_model("metering", "EventKey"))
        return
    run = schema_editor.execute
    run(f"ALTER TABLE {EVENTS} RENAME TO {EVENTS}_unpartitioned")
    run(
        f"""CREATE TABLE {EVENTS} (
            id bigint NOT NULL,
            tenant_id bigint NOT NULL,
            meter_id bigint NOT NULL,
            event_id varchar(100) NOT NULL,
            "timestamp" timestamptz NOT NULL,
            quantity numeric(32, 12) NOT NULL,
            properties jsonb NOT NULL,
            received_at timestamptz NOT NULL
        ) PARTITION BY RANGE ("timestamp")"""
    )
    now = datetime.now(UTC)
    today = now.date()
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT (\"timestamp\" AT TIME ZONE 'UTC')::date FROM {EVENTS}_unpartitioned"  # noqa: S608
        )
        days = {row[0] for row in cursor.fetchall()}
    days |= {today + timedelta(days=n) for n in range(-36, 4)}
    for day in sorted(days):
        run(
            f"CREATE TABLE {EVENTS}_{day:%Y%m%d} PARTITION OF {EVENTS} "
            f"FOR VALUES FROM ('{_midnight(day).isoformat()}') TO ('{_midnight(day + timedelta(days=1)).isoformat()}')"
        )
    run(
        f'INSERT INTO {EVENTS} SELECT id, tenant_id, meter_id, event_id, "timestamp", quantity, properties, '  # noqa: S608
        f"received_at FROM {EVENTS}_unpartitioned"
    )
    run(
        f"""CREATE TABLE {KEYS} (
            tenant_id bigint NOT NULL,
            event_id varchar(100) NOT NULL,
            generation integer NOT NULL,
            "timestamp" timestamptz NOT NULL,
            CONSTRAINT {KEYS}_pkey PRIMARY KEY (tenant_id, event_id, generation)
        ) PARTITION BY LIST (generation)"""
    )
    current = int(now.timestamp() // GENERATION_SECONDS)
    for number in (current - 1, current, current + 1):
        run(f"CREATE TABLE {KEYS}_g{number} PARTITION OF {KEYS} FOR VALUES IN ({number})")
    run(
        f'INSERT INTO {KEYS} (tenant_id, event_id, generation, "timestamp") '  # noqa: S608
        f'SELECT e.tenant_id, e.event_id, g.generation, e."timestamp" FROM {EVENTS}_unpartitioned e '
        f"CROSS JOIN (VALUES ({current - 1}), ({current})) AS g(generation)"
    )
    run(f"CREATE SEQUENCE {EVENTS}_id_seq_partitioned")
    run(
        f"SELECT setval('{EVENTS}_id_seq_partitioned', "
        f"(SELECT coalesce(max(id), 0) + 1 FROM {EVENTS}_unpartitioned), false)"  # noqa: S608
    )
    run(f"DROP TABLE {EVENTS}_unpartitioned")
    run(f"ALTER SEQUENCE {EVENTS}_id_seq_partitioned RENAME TO {EVENTS}_id_seq")
    run(f"ALTER TABLE {EVENTS} ALTER COLUMN id SET DEFAULT nextval('{EVENTS}_id_seq')")
    run(f"ALTER SEQUENCE {EVENTS}_id_seq OWNED BY {EVENTS}.id")
    # The one B-tree: one tenant's events of one meter in a time range (aggregation, read-back,
    # group-by). A BRIN index on id (a few pages per partition) finds an event by id for the admin
    # and the limit check without another B-tree to maintain on every insert.
    run(f'CREATE INDEX usage_event_tmt ON {EVENTS} (tenant_id, meter_id, "timestamp")')
    run(f"CREATE INDEX usage_event_id_brin ON {EVENTS} USING brin (id)")


class Migration(migrations.Migration):
    dependencies = [
        ("metering", "0010_hourly_aggregate_covering_index"),
        ("tenants", "0005_apigateway_key_id"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="EventKey",
                    fields=[
                        (
                            "pk",
                            models.CompositePrimaryKey(
                                "tenant_id",
                                "event_id",
                                "generation",
                                blank=True,
                                editable=False,
                                primary_key=True,
                                serialize=False,
                            ),
                        ),
                        ("tenant_id", models.BigIntegerField()),
                        ("event_id", models.CharField(max_length=100)),
                        ("generation", models.IntegerField()),
                        (
                            "timestamp",
                            models.DateTimeField(
                                help_text="The first send's timestamp (where the event sits)."
                            ),
                        ),
                    ],
                ),
                migrations.RemoveConstraint(model_name="usageevent", name="usage_event_idempotency"),
                migrations.RemoveIndex(model_name="usageevent", name="usage_event_received"),
                migrations.AlterField(
                    model_name="usageevent",
                    name="meter",
                    field=models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="metering.meter",
                    ),
                ),
                migrations.AlterField(
                    model_name="usageevent",
                    name="tenant",
                    field=models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="tenants.tenant",
                    ),
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(forwards, elidable=False),
    ]
