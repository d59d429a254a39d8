from django.urls import path

from metering import api, entitlements

urlpatterns = [
    path("events", api.events_ingest, name="events-ingest"),
    path("usage", api.usage_read, name="usage-read"),
    path("entitlements", entitlements.entitlements_read, name="entitlements-read"),
    path("entitlements/<str:meter>", entitlements.meter_entitlement_read, name="meter-entitlement-read"),
]
