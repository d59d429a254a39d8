"""The product's URLs plus POST /bench/bare: a DRF view that authenticates nothing, parses
nothing and writes nothing, served by the same gunicorn and Django stack (the single-event
ingestion baseline of bench/ingest_single.py)."""

from django.urls import include, path
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.response import Response

from billing_platform.urls import handler404, handler500  # noqa: F401 - re-exported for Django


@api_view(["POST"])
@authentication_classes([])
@permission_classes([])
def bare(request):
    return Response({"ok": True}, status=202)


urlpatterns = [
    path("bench/bare", bare, name="bench-bare"),
    path("", include("billing_platform.urls")),
]
