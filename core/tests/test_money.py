"""core.money: minor and major units, rounding, formatting, decimals without exponent notation."""

from decimal import Decimal

import pytest

from core.money import (
    ZERO_DECIMAL_CURRENCIES,
    Money,
    format_minor,
    format_money,
    format_quantity,
    minor_places,
    percent,
    plain_decimal,
    to_major,
    to_minor,
)


@pytest.mark.parametrize(
    ("amount_minor", "currency", "major"),
    [
        (1250, "usd", Decimal("12.50")),
        (1250, "USD", Decimal("12.50")),
        (1000, "jpy", Decimal("1000")),
        (1000, "JPY", Decimal("1000")),
        (-99, "eur", Decimal("-0.99")),
        (0, "krw", Decimal("0")),
    ],
)
def test_minor_to_major_and_back(amount_minor, currency, major):
    assert to_major(amount_minor, currency) == major
    assert to_minor(major, currency) == amount_minor


def test_zero_decimal_currencies_are_stripes():
    assert {"jpy", "krw", "vnd", "clp", "xof"} <= ZERO_DECIMAL_CURRENCIES
    assert minor_places("JPY") == 0
    assert minor_places("usd") == 2


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        (Decimal("12.345"), "usd", 1235),  # halves go up
        (Decimal("12.344999"), "usd", 1234),
        (Decimal("-12.345"), "usd", -1235),  # ... away from zero
        (Decimal("0.005"), "usd", 1),
        (Decimal("1000.5"), "jpy", 1001),
        (Decimal("1000.4"), "jpy", 1000),
    ],
)
def test_to_minor_rounds_half_up(amount, currency, minor):
    assert to_minor(amount, currency) == minor


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(Decimal("1234.5"), "usd"), "1,234.50 USD"),
        (Money(Decimal("0.6234567891"), "USD"), "0.62 USD"),
        (Money(Decimal("-30.105"), "USD"), "-30.11 USD"),
        (Money(Decimal("0E-12"), "USD"), "0.00 USD"),
        (Money(Decimal("123456.7"), "JPY"), "123,457 JPY"),
        (Money.from_minor(123450, "usd"), "1,234.50 USD"),
        (Money.from_minor(5000, "jpy"), "5,000 JPY"),
    ],
)
def test_money_prints_in_the_currencys_minor_unit(money, text):
    assert str(money) == text


def test_money_compares_by_amount_and_currency():
    assert Money.from_minor(1300, "usd") == Money(Decimal("13.00"), "USD")
    assert format_money(Decimal("2.5"), "usd") == "2.50 USD"
    assert format_minor(2000, "usd") == "20.00 USD"
    assert format_minor(2000, "jpy") == "2,000 JPY"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("12.500000000000"), "12.5"),
        (Decimal("1500.000000000000"), "1,500"),
        (Decimal("0E-12"), "0"),
        (Decimal("-0.000"), "0"),
        (Decimal("-2.50"), "-2.5"),
        (Decimal("0.000000000001"), "0.000000000001"),
        (
            Decimal("12345678901234567890123456.123456789012"),
            "12,345,678,901,234,567,890,123,456.123456789012",
        ),
        (7, "7"),
    ],
)
def test_quantities_show_their_significant_decimals_never_an_exponent(value, text):
    assert format_quantity(value) == text


@pytest.mark.parametrize(
    ("value", "places", "text"),
    [
        (Decimal("13"), 2, "13.00"),
        (Decimal("0.6234567891"), 2, "0.6234567891"),
        (Decimal("0E-12"), 0, "0"),
        (Decimal("1E+3"), 0, "1000"),
        (Decimal("2650.000000000000"), 0, "2650"),
        (Decimal("-1.5"), 2, "-1.50"),
    ],
)
def test_plain_decimals_have_no_grouping_and_no_exponent(value, places, text):
    assert plain_decimal(value, places) == text


def test_percent_rounds_to_a_tenth_half_up_and_is_none_of_nothing():
    assert percent(Decimal("100"), Decimal("150")) == Decimal("66.7")
    assert percent(Decimal("1"), Decimal("8")) == Decimal("12.5")
    assert percent(Decimal("-47.16"), Decimal("2.84")) == Decimal("-1660.6")
    assert percent(Decimal("5"), Decimal("0")) is None
