from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from billing_platform import health, metrics, report_views


class SwaggerView(SpectacularSwaggerView):
    """Swagger UI. DRF answers OPTIONS with the view's metadata, which the UI's HTML template
    renderer cannot render (a 500 'No template names provided'): answer it with the allowed methods."""

    def options(self, request, *args, **kwargs):
        return HttpResponse(status=200, headers={"Allow": ", ".join(self.allowed_methods)})


urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    # Admin pages of the project package, ahead of admin/ so that its catch-all does not take them;
    # admin_view makes them staff-only with the admin's login redirect (see report_views.py).
    path(
        "admin/reports/daily/",
        admin.site.admin_view(report_views.daily_report_page),
        name="admin-daily-report",
    ),
    path(
        "admin/reports/daily.csv",
        admin.site.admin_view(report_views.daily_report_csv_download),
        name="admin-daily-report-csv",
    ),
    path("admin/", admin.site.urls),
    path("api/v1/", include("tenants.urls")),
    path("api/v1/", include("metering.urls")),
    path("api/v1/", include("stripe_sync.urls")),
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

handler404 = "billing_platform.api_errors.handler404"
handler500 = "billing_platform.api_errors.handler500"
