"""Formatting filters of the console's templates."""

from django import template

from core.money import format_quantity

register = template.Library()


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


@register.filter
def quantity(value) -> str:
    """A Decimal quantity with its significant decimals only, grouped: 2.5, 1,500, 0."""
    return "" if value is None else format_quantity(value)
