from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core import health, metrics


class SwaggerView(SpectacularSwaggerView):
    """Swagger UI. DRF answers OPTIONS with the view's metadata, which the UI's HTML template
    renderer cannot render (a 500 'No template names provided'): answer it with the allowed methods."""

    def options(self, request, *args, **kwargs):
        return HttpResponse(status=200, headers={"Allow": ", ".join(self.allowed_methods)})


urlpatterns = [
    # The platform has no public site: its front page is the operator console.
    path("", RedirectView.as_view(pattern_name="admin:index"), name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("tenants.urls")),
    path("api/v1/", include("metering.urls")),
    path("api/v1/", include("stripe_sync.urls")),
    path("api/v1/", include("outbound.urls")),
    # Lago- and OpenMeter-compatible ingestion, at the paths their SDKs call under a base URL.
    path("compat/", include("metering.compat_urls")),
    path(
        "api/schema/",
        SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]),
        name="schema",
    ),
    path(
        "api/docs/",
        SwaggerView.as_view(url_name="schema", authentication_classes=[], permission_classes=[]),
        name="api-docs",
    ),
]

handler404 = "core.api_errors.handler404"
handler500 = "core.api_errors.handler500"
