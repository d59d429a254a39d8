from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class MeteringConfig(AppConfig):
    name = "metering"
    verbose_name = "Metering"

    def ready(self):
        from metering.ingest import meter_cache
        from metering.models import Meter

        # Ingestion caches meter codes for a few seconds; a change in this process drops it.
        def drop_meter_cache(**kwargs):
            meter_cache.clear()

        post_save.connect(drop_meter_cache, sender=Meter, weak=False, dispatch_uid="meter_cache_save")
        post_delete.connect(drop_meter_cache, sender=Meter, weak=False, dispatch_uid="meter_cache_delete")
