"""The operator console's admin site: `admin.site` everywhere (console.apps.ConsoleAdminConfig).

Its index is the operator dashboard, built in `index()` (console/dashboard.py, a fixed number of
queries) rather than by a template tag, and its own pages (the daily report and its CSV) are routes of
the site, so `urls.py` has nothing ahead of `admin/`. Pattern: HackSoft's Django-Styleguide-Example,
styleguide_example/custom_admin/sites.py.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models.base import ModelBase
from django.urls import path


class ConsoleAdminSite(admin.AdminSite):
    site_header = "Billing platform"
    site_title = "Billing platform"
    index_title = "Operator console"
    # No public site: `/` redirects here (billing_platform/urls.py), so no "View site" link.
    site_url = None
    # The index lists every model already; the sidebar copy of it took 300 px from every list, whose
    # tables then scrolled sideways at 1280 px.
    enable_nav_sidebar = False
    # Third-party apps under the names an operator knows them by.
    APP_NAMES = {"djstripe": "Stripe mirror (dj-stripe)", "django_celery_beat": "Periodic tasks"}

    def register(self, model_or_iterable, admin_class=None, **options):
        """Every app's and package's `register` comes here: third-party admins get their guards
        (console/admin_guards.py) and models the console does not show are left out."""
        from console.admin_guards import guarded, shown

        models = [model_or_iterable] if isinstance(model_or_iterable, ModelBase) else model_or_iterable
        for model in models:
            if shown(model):
                super().register(model, guarded(model, admin_class or admin.ModelAdmin), **options)

    def get_urls(self):
        from console import report_views

        return [
            path("reports/daily/", self.admin_view(report_views.daily_report_page), name="daily-report"),
            path(
                "reports/daily.csv",
                self.admin_view(report_views.daily_report_csv_download),
                name="daily-report-csv",
            ),
            *super().get_urls(),
        ]

    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)
        for app in apps:
            app["name"] = self.APP_NAMES.get(app["app_label"], app["name"])
        return apps

    def index(self, request, extra_context=None):
        from console.dashboard import dashboard
        from core.db_routing import lagging_reads
        from core.permissions import can_see_revenue

        money = can_see_revenue(request.user)
        with lagging_reads():  # the read replica when configured (docs/operations.md, "Read replica")
            dash = dashboard(money=money)
        extra_context = {**(extra_context or {}), "dash": dash}
        return super().index(request, extra_context)
