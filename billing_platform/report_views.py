"""The daily usage report in admin: an HTML page with a date picker and the CSV download.

The views are plain functions wrapped in `admin.site.admin_view` and routed in billing_platform/urls.py
ahead of `admin/`: staff-only with the admin's login redirect, no custom AdminSite and no model (a proxy
ModelAdmin would need a migration for a table-less model just to carry two URLs).
"""

from datetime import date, timedelta

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.template.response import TemplateResponse
from django.urls import reverse

from billing_platform.reports import (
    daily_report_build,
    daily_report_csv,
    daily_report_filename,
    daily_report_sent_record,
    yesterday,
)


def _day(request: HttpRequest) -> date:
    """The `date` query parameter (YYYY-MM-DD), yesterday (UTC) when absent; ValueError with a message."""
    raw = request.GET.get("date", "").strip()
    if not raw:
        return yesterday()
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"date: must be a day such as 2026-11-20, got {raw!r}") from None


def daily_report_page(request: HttpRequest) -> HttpResponse:
    error = ""
    try:
        day = _day(request)
    except ValueError as exc:
        error, day = str(exc), yesterday()
    context = {
        **admin.site.each_context(request),
        "title": f"Daily usage report {day}",
        "report": daily_report_build(day=day),
        "today": yesterday() + timedelta(days=1),
        "csv_url": f"{reverse('admin-daily-report-csv')}?date={day.isoformat()}",
        "sent": daily_report_sent_record(day=day),
        "error": error,
    }
    return TemplateResponse(
        request, "billing_platform/daily_report_admin.html", context, status=400 if error else 200
    )


def daily_report_csv_download(request: HttpRequest) -> HttpResponse:
    try:
        day = _day(request)
    except ValueError as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    response = HttpResponse(
        daily_report_csv(daily_report_build(day=day)), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{daily_report_filename(day)}"'
    return response
