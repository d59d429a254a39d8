"""Bounded parsing of dates, times, whole numbers and decimals: the one place that turns outside
text into values, for every endpoint, command and admin page.

Every parser either returns a value inside the platform's bounds or raises `ParseError` (a
ValueError) with a message a person can act on. No parser lets OverflowError, decimal.Overflow,
RecursionError or a value Python can build but the database or Stripe cannot hold escape: the edges
catch `ParseError` and answer 400 / one error line.

- Dates and times: years 2000 to 2100 (no usage, cost or report exists outside; arithmetic of a
  day or a month near year 9999 overflows Python's datetime).
- Whole numbers: a minimum and a maximum given by the caller.
- Decimals: finite, at most `max_digits` significant digits and `max_places` decimal places.

`date_argument`, `datetime_argument`, `int_argument(...)`, `decimal_argument(...)` are the same
parsers as argparse `type=`s (argparse turns their error into its one error line).
"""

from __future__ import annotations

from argparse import ArgumentTypeError
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Context, Decimal, InvalidOperation

MIN_YEAR = 2000
MAX_YEAR = 2100
MIN_DATE = date(MIN_YEAR, 1, 1)
MAX_DATE = date(MAX_YEAR, 12, 31)
MIN_DATETIME = datetime(MIN_YEAR, 1, 1, tzinfo=UTC)
MAX_DATETIME = datetime(MAX_YEAR, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)

# Parses text exactly, whatever its length, without trapping on huge exponents ("1e1000000").
_EXACT = Context(prec=1000, Emax=10**9, Emin=-(10**9))


def _message(what: str, message: str) -> str:
    return f"{what} {message}" if what else message


def _plain_text(value: str) -> bool:
    """Short printable ASCII: CPython's fromisoformat stops reading at a NUL ("2026-11-21T10:00:00\\x00Z"
    parses), so anything else is refused before it gets there."""
    return len(value) <= 64 and value.isascii() and value.isprintable()


class ParseError(ValueError):
    """Outside text that is not a value the platform accepts; str() is the message to show."""


def _bounded_date(value: date, what: str) -> None:
    if not MIN_DATE <= value <= MAX_DATE:
        raise ParseError(_message(what, f"must be between {MIN_DATE} and {MAX_DATE}"))


def parse_date(value, *, what: str = "date") -> date:
    """A YYYY-MM-DD day between 2000-01-01 and 2100-12-31."""
    if not isinstance(value, str):
        raise ParseError(_message(what, "must be a date such as 2026-11-20"))
    if not _plain_text(value):
        raise ParseError(_message(what, "must be a date such as 2026-11-20"))
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise ParseError(_message(what, f"must be a date such as 2026-11-20, got {value!r}")) from None
    _bounded_date(day, what)
    return day


def parse_month(value, *, what: str = "month") -> date:
    """A YYYY-MM month, returned as its first day."""
    if not isinstance(value, str):
        raise ParseError(_message(what, "must be a month such as 2026-11"))
    if not _plain_text(value):
        raise ParseError(_message(what, "must be a month such as 2026-11"))
    try:
        day = date.fromisoformat(f"{value.strip()}-01")
    except ValueError:
        raise ParseError(_message(what, f"must be a month such as 2026-11, got {value!r}")) from None
    _bounded_date(day, what)
    return day


def parse_datetime(value, *, what: str = "time", naive_is_utc: bool = True) -> datetime:
    """An ISO-8601 date or date-time ("Z" allowed), returned in UTC, between 2000 and 2100.

    Without an offset the value is UTC when `naive_is_utc`; otherwise it is refused.
    """
    if not isinstance(value, str):
        raise ParseError(_message(what, "must be an ISO-8601 string such as 2026-11-21T10:00:00Z"))
    text = value.strip()
    if not _plain_text(text):
        raise ParseError(_message(what, "must be an ISO-8601 string such as 2026-11-21T10:00:00Z"))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ParseError(_message(what, "must be an ISO-8601 string such as 2026-11-21T10:00:00Z")) from None
    if moment.tzinfo is None:
        if not naive_is_utc:
            raise ParseError(_message(what, "must include a time zone offset (e.g. Z or +00:00)"))
        moment = moment.replace(tzinfo=UTC)
    # A year-9999 time with a negative offset is past datetime.max in UTC: astimezone overflows.
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise ParseError(_message(what, f"must be between {MIN_DATE} and {MAX_DATE}"))
    moment = moment.astimezone(UTC)
    if not MIN_DATETIME <= moment <= MAX_DATETIME:
        raise ParseError(_message(what, f"must be between {MIN_DATE} and {MAX_DATE}"))
    return moment


def parse_int(value, *, minimum: int, maximum: int, what: str = "value") -> int:
    """A whole number between minimum and maximum (text of at most 30 characters)."""
    if isinstance(value, bool):
        raise ParseError(_message(what, "must be a whole number"))
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 30:
            raise ParseError(_message(what, f"must be between {minimum} and {maximum}"))
        try:
            value = int(text)
        except ValueError:
            raise ParseError(_message(what, f"must be a whole number, got {text!r}")) from None
    if not isinstance(value, int):
        raise ParseError(_message(what, "must be a whole number"))
    if not minimum <= value <= maximum:
        raise ParseError(_message(what, f"must be between {minimum} and {maximum}"))
    return value


def parse_decimal(
    value,
    *,
    max_digits: int,
    max_places: int,
    minimum: Decimal | int | None = None,
    maximum: Decimal | int | None = None,
    what: str = "value",
) -> Decimal:
    """A finite decimal of at most `max_digits` significant digits and `max_places` decimals.

    Accepts int, Decimal, float (by its shortest repr) or text; never bool. Trailing zeros do not
    count ("1.500" has 2 places), so the result is exact: nothing is rounded.
    """
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, str, float)):
        raise ParseError(_message(what, "must be a number"))
    if isinstance(value, str) and len(value) > 100:
        raise ParseError(_message(what, f"must be a number of at most {max_digits} digits"))
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else _EXACT.create_decimal(value)
    except (InvalidOperation, ValueError):
        raise ParseError(_message(what, "must be a decimal number")) from None
    if not number.is_finite():
        raise ParseError(_message(what, "must be a finite number"))
    if number.is_zero():
        number = Decimal(0)
    _, digits, exponent = number.normalize(_EXACT).as_tuple()
    places = max(0, -exponent)
    whole = max(0, len(digits) + exponent)
    if places > max_places:
        raise ParseError(_message(what, f"has more than {max_places} decimal places"))
    if whole + places > max_digits:
        raise ParseError(_message(what, f"has more than {max_digits} significant digits"))
    if minimum is not None and number < minimum:
        raise ParseError(_message(what, f"must be at least {minimum}"))
    if maximum is not None and number > maximum:
        raise ParseError(_message(what, f"must be at most {maximum}"))
    return number


def _argument(parse: Callable) -> Callable:
    def argument(value: str):
        try:
            return parse(value)
        except ParseError as exc:
            raise ArgumentTypeError(str(exc)) from None

    argument.__name__ = getattr(parse, "__name__", "argument")
    return argument


# argparse `type=`s: argparse prints "error: argument --date: the date must be ..." and exits 2.
date_argument = _argument(lambda v: parse_date(v, what=""))
datetime_argument = _argument(lambda v: parse_datetime(v, what=""))


def int_argument(*, minimum: int, maximum: int) -> Callable[[str], int]:
    """argparse `type=` for a whole number between minimum and maximum."""
    return _argument(lambda v: parse_int(v, minimum=minimum, maximum=maximum, what=""))


def decimal_argument(*, max_digits: int, max_places: int, minimum=None, maximum=None) -> Callable:
    """argparse `type=` for a bounded decimal."""
    return _argument(
        lambda v: parse_decimal(
            v, max_digits=max_digits, max_places=max_places, minimum=minimum, maximum=maximum, what=""
        )
    )
