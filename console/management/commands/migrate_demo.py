"""`migrate` for the embedded demo's new SQLite database, without replaying dj-stripe's history.

dj-stripe's migration 0002_2_10 removes 514 fields, one operation each, and Django re-renders every
related dj-stripe model after each of them: about a minute on SQLite (and minutes of CPU on
PostgreSQL). On an empty database the end of dj-stripe's three migrations is known: its current
models. So, on an empty demo database only, this command

1. applies what dj-stripe's migrations depend on (auth, contenttypes, ...),
2. creates dj-stripe's tables from its models (what `migrate --run-syncdb` does for an app without
   migrations) and records its migrations as applied, under their own names,
3. runs `migrate` for everything else, printing each migration.

A database with any migration applied gets a plain `migrate`, so later dj-stripe migrations apply as
usual. Production and the test suite never run this: it refuses anything but SQLite with DEBUG on.
"""

import time

from django.apps import apps
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from core.commands import BaseCommand

FAST_APP = "djstripe"


class Command(BaseCommand):
    help = (
        "The demo's migrate: on an empty SQLite database, dj-stripe's tables come from its models "
        "instead of its slow migration history; otherwise a plain migrate."
    )

    def handle(self, *args, **options):
        if connection.vendor != "sqlite" or not settings.DEBUG:
            raise CommandError("migrate_demo is for the embedded demo (SQLite, DJANGO_DEBUG=1); use migrate")
        started = time.monotonic()
        executor = MigrationExecutor(connection)
        if executor.loader.applied_migrations:
            self.stdout.write("  database exists: applying new migrations, if any")
            call_command("migrate", interactive=False, verbosity=1)
            return
        graph = executor.loader.graph
        full_plan = [
            migration for migration, _ in executor.migration_plan(graph.leaf_nodes(), clean_start=True)
        ]
        last = max(i for i, migration in enumerate(full_plan) if migration.app_label == FAST_APP)
        # Everything planned before dj-stripe's last migration (its dependencies among them), so that
        # step 3 starts after dj-stripe and never replays its operations on rendered models.
        before = [migration for migration in full_plan[:last] if migration.app_label != FAST_APP]
        self.stdout.write(f"  new database: {len(before)} migrations dj-stripe's tables depend on")
        executor.migrate(targets=None, plan=[(migration, False) for migration in before])

        models = [
            model
            for model in apps.get_app_config(FAST_APP).get_models()
            if model._meta.can_migrate(connection)
        ]
        with connection.schema_editor() as editor:
            for model in models:
                editor.create_model(model)
        names = sorted(name for app_label, name in graph.nodes if app_label == FAST_APP)
        for name in names:
            executor.recorder.record_applied(FAST_APP, name)
        self.stdout.write(
            f"  dj-stripe: {len(models)} tables created from its models; "
            f"{', '.join(names)} recorded as applied"
        )
        self.stdout.write("  the platform's migrations:")
        call_command("migrate", interactive=False, verbosity=1)
        self.stdout.write(f"  migrated in {time.monotonic() - started:.0f} s")
