"""/compat/: the peers' wire formats (metering.compat). The paths after the prefix are the peers' own,
so their SDKs need only a different base URL."""

from django.urls import path

from metering import compat

urlpatterns = [
    path("lago/api/v1/events", compat.LagoEventCreate.as_view(), name="compat-lago-events"),
    path("lago/api/v1/events/batch", compat.LagoEventBatch.as_view(), name="compat-lago-events-batch"),
    path("openmeter/api/v1/events", compat.OpenMeterEvents.as_view(), name="compat-openmeter-events"),
]
