from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CoreConfig(AppConfig):
    """The ground floor every app may import; it imports no app of the project."""

    name = "core"
    verbose_name = "Platform"

    def ready(self):
        from core.db_routing import replica_gauges
        from core.metrics import business_gauges
        from core.schedules import sync_after_migrate

        # The read replica's lag and where lagging reads go (nothing without DATABASE_REPLICA_URL).
        business_gauges.register(replica_gauges)

        # Once per migrate (sender: this app), after every app's migrations: the declared periodic
        # tasks exist in django-celery-beat (settings.PERIODIC_TASKS, core/schedules.py).
        post_migrate.connect(sync_after_migrate, sender=self, dispatch_uid="core.schedules.sync")
