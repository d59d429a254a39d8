"""The daily usage report in admin: an HTML page with a date picker and the CSV download.

Plain functions routed by the console's admin site (console/sites.py, `get_urls`), which wraps them
in `admin_view`: staff-only with the admin's login redirect.
"""

from datetime import date, timedelta

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.template.response import TemplateResponse
from django.urls import reverse

from console.reports import (
    daily_report_build,
    daily_report_csv,
    daily_report_filename,
    daily_report_sent_record,
    yesterday,
)
from core.db_routing import lagging_reads
from core.parsing import parse_date
from core.permissions import can_see_revenue


def _day(request: HttpRequest) -> date:
    """The `date` query parameter (YYYY-MM-DD, 2000 to 2100), yesterday (UTC) when absent;
    ParseError (a ValueError) with a message."""
    raw = request.GET.get("date", "").strip()
    if not raw:
        return yesterday()
    return parse_date(raw, what="date:")


def daily_report_page(request: HttpRequest) -> HttpResponse:
    error = ""
    try:
        day = _day(request)
    except ValueError as exc:
        error, day = str(exc), yesterday()
    with lagging_reads():  # the read replica when configured; permissions stay on the primary
        report = daily_report_build(day=day)
    context = {
        **admin.site.each_context(request),
        "title": f"Daily usage report {day}",
        "report": report,
        "today": yesterday() + timedelta(days=1),
        "csv_url": f"{reverse('admin:daily-report-csv')}?date={day.isoformat()}",
        "sent": daily_report_sent_record(day=day),
        "error": error,
        # Revenue and AWS cost, and the CSV that carries them, only with the revenue permission.
        "hide_money": not can_see_revenue(request.user),
    }
    return TemplateResponse(request, "console/daily_report_admin.html", context, status=400 if error else 200)


def daily_report_csv_download(request: HttpRequest) -> HttpResponse:
    if not can_see_revenue(request.user):  # every section but failures carries revenue or cost
        raise PermissionDenied
    try:
        day = _day(request)
    except ValueError as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    with lagging_reads():
        report = daily_report_build(day=day)
    response = HttpResponse(daily_report_csv(report), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{daily_report_filename(day)}"'
    return response
