"""`{% operator_dashboard as dashboard %}`: the admin index's dashboard, for staff only."""

from django import template

from billing_platform.dashboard import Dashboard, dashboard
from billing_platform.permissions import can_see_revenue

register = template.Library()


@register.simple_tag(takes_context=True)
def operator_dashboard(context) -> Dashboard | None:
    # The admin index already requires staff; checked again so the tag shows nothing anywhere else.
    request = context.get("request")
    if request is None or not request.user.is_active or not request.user.is_staff:
        return None
    return dashboard(money=can_see_revenue(request.user))


@register.filter
def duration(value) -> str:
    """A timedelta as "3 h 05 min" / "2 d 4 h" / "42 s"."""
    if value is None:
        return "-"
    seconds = int(value.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    minutes, _ = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"
