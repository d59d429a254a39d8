"""Money and decimals as the platform computes and shows them, written once.

Amounts are Decimal in major units ("12.50" dollars) or int in minor units (1250 cents), as Stripe
counts them. A currency's minor unit is a hundredth, except Stripe's zero-decimal currencies, whose
minor unit is the major unit (1000 JPY is `amount=1000`). Rounding to a minor unit is half up (ties
away from zero), as Stripe rounds.

Decimals are shown without exponent notation ("0", never "0E-12") and with their significant
decimals only ("12.5", not the "12.500000000000" a 12-place column stores).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext

# Stripe's zero-decimal currencies: the minor unit is the major unit.
# https://docs.stripe.com/currencies#zero-decimal
ZERO_DECIMAL_CURRENCIES = frozenset(
    {
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    }
)

# Aggregated quantities have up to 38 digits: wider than the default 28-digit context, which would
# round them when normalizing or summing.
_WIDE = 100


def minor_places(currency: str) -> int:
    """Decimal places of the currency's minor unit: 0 for a zero-decimal currency, else 2."""
    return 0 if currency.lower() in ZERO_DECIMAL_CURRENCIES else 2


def to_major(amount_minor: int, currency: str) -> Decimal:
    """1250 cents -> Decimal("12.50"); 1000 JPY -> Decimal("1000")."""
    return Decimal(amount_minor).scaleb(-minor_places(currency))


def to_minor(amount: Decimal, currency: str) -> int:
    """Decimal("12.345") USD -> 1235: the nearest minor unit, halves away from zero."""
    return int(round_minor(amount, currency).scaleb(minor_places(currency)))


def round_minor(amount: Decimal, currency: str) -> Decimal:
    """The amount in major units rounded to the currency's minor unit, halves away from zero."""
    return Decimal(amount).quantize(Decimal(1).scaleb(-minor_places(currency)), rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Money:
    """A Decimal amount in major units of a currency; prints as "1,234.50 USD" (or "1,235 JPY")."""

    amount: Decimal
    currency: str

    @classmethod
    def from_minor(cls, amount_minor: int, currency: str) -> Money:
        return cls(to_major(amount_minor, currency), currency.upper())

    @property
    def rounded(self) -> Decimal:
        return round_minor(self.amount, self.currency)

    def __str__(self) -> str:
        return f"{self.rounded:,} {self.currency.upper()}"


def format_money(amount: Decimal, currency: str) -> str:
    """An amount in major units as text: "1,234.50 USD"."""
    return str(Money(Decimal(amount), currency))


def format_minor(amount_minor: int, currency: str) -> str:
    """An amount in minor units as text: 123450, "usd" -> "1,234.50 USD"."""
    return str(Money.from_minor(amount_minor, currency))


def percent(part: Decimal, whole: Decimal) -> Decimal | None:
    """part / whole in percent, one decimal, halves away from zero; None when whole is zero."""
    if not whole:
        return None
    return (Decimal(part) / Decimal(whole) * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


# --- Decimals as text -----------------------------------------------------------------------------


def format_quantity(value: Decimal | int) -> str:
    """A quantity with its significant decimals only, grouped, never in exponent notation:
    Decimal("12.500000000000") -> "12.5", Decimal("1500.000000000000") -> "1,500", Decimal("0E-12") -> "0".
    """
    with localcontext(prec=_WIDE):
        return f"{Decimal(value).normalize() + 0:,f}"  # + 0 turns -0 into 0


def plain_decimal(value: Decimal | int, places: int = 0) -> str:
    """A decimal as plain text for files and attributes: no grouping, no exponent, at least `places`
    decimals and no trailing zeros beyond them. Decimal("13.5"), 2 -> "13.50"; Decimal("0E-12") -> "0".
    """
    with localcontext(prec=_WIDE):
        value = Decimal(value).normalize() + 0
        if value.as_tuple().exponent > -places:
            value = value.quantize(Decimal(1).scaleb(-places))
        return f"{value:f}"


def sum_exact(values) -> Decimal:
    """The exact sum of decimals of up to 38 digits."""
    with localcontext(prec=_WIDE):
        return sum(values, Decimal(0))
