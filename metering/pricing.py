"""The pricing preview: what a quantity of a meter costs under a `Price`, in exact arithmetic.

Pure functions of their arguments (no database access), with Stripe Billing's semantics:
https://docs.stripe.com/subscriptions/pricing-models/tiered-pricing

- per_unit: quantity x unit_amount;
- package: whole packages (rounded up) x unit_amount;
- graduated: each tier's unit rate applies to the units that fall in that tier, plus the flat amount
  of every tier reached;
- volume: the one tier that contains the whole quantity prices all units, plus its flat amount.

A tier's `up_to` is inclusive ("up to and including", as in Stripe), so a tier covers the quantities
above the previous tier's `up_to` up to its own; quantity 0 lies in the first tier, whose flat amount
is therefore charged even at zero usage, as Stripe does.
"""

import decimal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext

from metering.models import Price

# Quantities have up to 38 digits and amounts up to 24, so 100 digits hold every product and sum
# exactly; trapping Inexact turns any rounding the default 28-digit context would do silently into
# an error instead of a wrong bill.
_EXACT = decimal.Context(
    prec=100,
    rounding=ROUND_HALF_UP,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow, decimal.Inexact],
)
# Stripe's unit_amount_decimal and flat_amount_decimal: at most 12 decimal places; the model's
# unit_amount field (max_digits=24, decimal_places=12) also allows 12 digits before the point.
_AMOUNT_PLACES = 12
_AMOUNT_LIMIT = Decimal(10) ** 12
_TIER_FIELDS = frozenset({"up_to", "unit_amount", "flat_amount"})
_TIERED_MODELS = frozenset({Price.Model.GRADUATED, Price.Model.VOLUME})


class PricingError(ValueError):
    """A price or quantity that cannot be charged; the message names the bad field."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Tier:
    up_to: int | None  # inclusive upper bound; None only on the last tier (no upper bound)
    unit_amount: Decimal  # minor units per unit
    flat_amount: Decimal  # minor units once the tier is reached


@dataclass(frozen=True)
class ChargeLine:
    """One line of a charge, for display: `units` x `unit_amount` + `flat_amount` = `subtotal`.

    For the package model `units` counts packages and `unit_amount` is the price of one package.
    `tier` is the tier's index for the tiered models, None otherwise.
    """

    units: Decimal
    unit_amount: Decimal
    flat_amount: Decimal
    subtotal: Decimal
    tier: int | None = None


@dataclass(frozen=True)
class Charge:
    amount_minor: int  # amount_exact rounded once to whole minor units
    amount_exact: Decimal  # sum of the lines' subtotals, unrounded
    lines: tuple[ChargeLine, ...]


def _amount(value: object, *, field: str) -> Decimal:
    # Floats are refused rather than converted: 0.1 as a float is not 0.1, and money is never float.
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise PricingError(f'{field}: must be a decimal string in minor units, e.g. "0.5"')
    try:
        amount = Decimal(value)
    except decimal.InvalidOperation:
        raise PricingError(f"{field}: {value!r} is not a decimal number") from None
    if not amount.is_finite():
        raise PricingError(f"{field}: must be a finite number, not {value!r}")
    if amount < 0:
        raise PricingError(f"{field}: must not be negative (got {value!r})")
    if amount >= _AMOUNT_LIMIT:
        raise PricingError(f"{field}: must be less than {_AMOUNT_LIMIT:,} minor units")
    with localcontext(_EXACT):
        if amount.scaleb(_AMOUNT_PLACES) % 1:
            raise PricingError(f"{field}: at most {_AMOUNT_PLACES} decimal places (Stripe's limit)")
    return amount


def price_tiers_validate(*, model: str, tiers: Sequence[object], package_size: int) -> list[Tier]:
    """Check a price's model, tiers and package size; return the tiers parsed (empty if untiered).

    Raises PricingError naming the bad field, e.g. "tiers[1].up_to: ...".
    """
    if model not in Price.Model.values:
        raise PricingError(f"model: unknown pricing model {model!r}; one of {', '.join(Price.Model.values)}")
    if model == Price.Model.PACKAGE and (
        isinstance(package_size, bool) or not isinstance(package_size, int) or package_size < 1
    ):
        raise PricingError(
            f"package_size: must be a whole number of units, at least 1 (got {package_size!r})"
        )
    if not isinstance(tiers, Sequence) or isinstance(tiers, str):
        raise PricingError("tiers: must be a list of tiers")
    if model not in _TIERED_MODELS:
        if tiers:
            raise PricingError(f"tiers: only graduated and volume prices have tiers, not {model}")
        return []
    if not tiers:
        raise PricingError(f"tiers: a {model} price needs at least one tier")

    parsed: list[Tier] = []
    previous_up_to = 0
    last = len(tiers) - 1
    for index, raw in enumerate(tiers):
        where = f"tiers[{index}]"
        if not isinstance(raw, Mapping):
            raise PricingError(f"{where}: must be an object with up_to, unit_amount and flat_amount")
        unknown = sorted(str(key) for key in raw if key not in _TIER_FIELDS)
        if unknown:
            raise PricingError(
                f"{where}: unknown field {unknown[0]!r}; expected up_to, unit_amount, flat_amount"
            )
        if "up_to" not in raw:
            raise PricingError(f"{where}.up_to: required (a whole number, or null on the last tier)")
        up_to = raw["up_to"]
        if index == last:
            if up_to is not None:
                raise PricingError(
                    f"{where}.up_to: the last tier must have up_to null, so that every quantity has a tier"
                )
        elif up_to is None:
            raise PricingError(f"{where}.up_to: only the last tier may have up_to null")
        elif isinstance(up_to, bool) or not isinstance(up_to, int):
            raise PricingError(f"{where}.up_to: must be a whole number or null (got {up_to!r})")
        elif up_to <= previous_up_to:
            bound = "the previous tier's up_to" if index else "0"
            raise PricingError(
                f"{where}.up_to: tiers must ascend; {up_to} is not greater than {bound} ({previous_up_to})"
            )
        parsed.append(
            Tier(
                up_to=up_to,
                unit_amount=_amount(raw.get("unit_amount", "0"), field=f"{where}.unit_amount"),
                flat_amount=_amount(raw.get("flat_amount", "0"), field=f"{where}.flat_amount"),
            )
        )
        if up_to is not None:
            previous_up_to = up_to
    return parsed


def _quantity(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise PricingError(f"quantity: must be a Decimal or an int, not {type(value).__name__}")
    quantity = Decimal(value)
    if not quantity.is_finite():
        raise PricingError(f"quantity: must be a finite number, not {value!r}")
    if quantity < 0:
        raise PricingError(f"quantity: must not be negative (got {value})")
    return quantity


def _graduated_lines(tiers: list[Tier], quantity: Decimal) -> list[ChargeLine]:
    lines = []
    lower = Decimal(0)
    for index, tier in enumerate(tiers):
        # The first tier is always reached (it holds quantity 0); a later one once quantity exceeds
        # the previous tier's up_to. Tiers cover (lower, up_to], so fractional quantities fit too.
        if index and quantity <= lower:
            break
        upper = quantity if tier.up_to is None else min(quantity, Decimal(tier.up_to))
        units = upper - lower
        lines.append(
            ChargeLine(
                units=units,
                unit_amount=tier.unit_amount,
                flat_amount=tier.flat_amount,
                subtotal=units * tier.unit_amount + tier.flat_amount,
                tier=index,
            )
        )
        if tier.up_to is not None:
            lower = Decimal(tier.up_to)
    return lines


def _volume_line(tiers: list[Tier], quantity: Decimal) -> ChargeLine:
    # Validation guarantees the last tier is unbounded, so some tier always matches.
    index, tier = next(
        (index, tier) for index, tier in enumerate(tiers) if tier.up_to is None or quantity <= tier.up_to
    )
    return ChargeLine(
        units=quantity,
        unit_amount=tier.unit_amount,
        flat_amount=tier.flat_amount,
        subtotal=quantity * tier.unit_amount + tier.flat_amount,
        tier=index,
    )


def price_charge(
    *,
    model: str,
    unit_amount: Decimal | int | str,
    package_size: int,
    tiers: Sequence[object],
    quantity: Decimal | int,
) -> Charge:
    """The charge for `quantity` units under a price; amounts in minor units of its currency."""
    parsed_tiers = price_tiers_validate(model=model, tiers=tiers, package_size=package_size)
    quantity = _quantity(quantity)
    unit = _amount(unit_amount, field="unit_amount") if model not in _TIERED_MODELS else Decimal(0)

    try:
        with localcontext(_EXACT):
            if model == Price.Model.PER_UNIT:
                lines = [
                    ChargeLine(
                        units=quantity, unit_amount=unit, flat_amount=Decimal(0), subtotal=quantity * unit
                    )
                ]
            elif model == Price.Model.PACKAGE:
                # Whole packages, rounded up: 1 call of a 1,000-call package costs one package.
                packages, rest = divmod(quantity, package_size)
                if rest:
                    packages += 1
                lines = [
                    ChargeLine(
                        units=packages, unit_amount=unit, flat_amount=Decimal(0), subtotal=packages * unit
                    )
                ]
            elif model == Price.Model.GRADUATED:
                lines = _graduated_lines(parsed_tiers, quantity)
            else:
                lines = [_volume_line(parsed_tiers, quantity)]
            amount_exact = sum((line.subtotal for line in lines), Decimal(0))
    except decimal.DecimalException:
        raise PricingError(f"quantity: {quantity} is too large or too precise to price exactly") from None

    # Stripe rounds once per invoice line item, after multiplying the quantity by the decimal unit
    # amount, to the nearest minor unit, halves up: "0.05 * 30 = 1.5, which is then rounded up to
    # 2 cents" (https://docs.stripe.com/billing/subscriptions/decimal-amounts, "Rounding"). A meter's
    # price is one line item, so the charge is rounded here, once, never per tier. Amounts are never
    # negative, so ROUND_HALF_UP (ties away from zero) is "halves up".
    amount_minor = int(amount_exact.to_integral_value(rounding=ROUND_HALF_UP))
    return Charge(amount_minor=amount_minor, amount_exact=amount_exact, lines=tuple(lines))


def price_charge_for(*, price: Price, quantity: Decimal | int) -> Charge:
    return price_charge(
        model=price.model,
        unit_amount=price.unit_amount,
        package_size=price.package_size,
        tiers=price.tiers,
        quantity=quantity,
    )


def billable_quantity(*, usage: Decimal, included: Decimal | None) -> Decimal:
    """The usage a tenant pays for in a period: what its allowance of the meter does not cover
    (`included`, from metering.allowances.allowance_resolve; None: every unit is billed)."""
    if not included:
        return usage
    with localcontext(_EXACT):
        return max(usage - included, Decimal(0))
