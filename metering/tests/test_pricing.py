import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.allowances import allowance_resolve
from metering.models import Price
from metering.pricing import (
    PricingError,
    Tier,
    billable_quantity,
    price_charge,
    price_charge_for,
    price_tiers_validate,
)
from tenants.models import Tenant

D = Decimal

# No deadline: a slow CI machine must not fail an arithmetic test. (Hypothesis keeps its examples in
# .hypothesis/, which it git-ignores itself.)
property_test = settings(deadline=None, max_examples=200)

# 0-1000 at 1 cent plus a 100-cent flat fee; above 1000 at half a cent plus a 200-cent flat fee.
GRADUATED = [
    {"up_to": 1000, "unit_amount": "1.0", "flat_amount": "100"},
    {"up_to": None, "unit_amount": "0.5", "flat_amount": "200"},
]
VOLUME = [
    {"up_to": 1000, "unit_amount": "1", "flat_amount": "0"},
    {"up_to": 5000, "unit_amount": "0.5", "flat_amount": "300"},
    {"up_to": None, "unit_amount": "0.25", "flat_amount": "0"},
]


def charge(model: str, quantity, *, unit_amount="0", package_size: int = 1, tiers=()):
    return price_charge(
        model=model,
        unit_amount=unit_amount,
        package_size=package_size,
        tiers=list(tiers),
        quantity=quantity,
    )


# --- Exact examples ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "minor"),
    [(D(0), 0), (D(1), 50), (D("0.5"), 50), (D(999), 50), (D(1000), 50), (D(1001), 100), (D(3000), 150)],
)
def test_package_rounds_up_to_whole_packages(quantity, minor):
    result = charge("package", quantity, unit_amount="50", package_size=1000)
    assert result.amount_minor == minor
    assert result.amount_exact == minor
    assert result.lines[0].units == minor // 50


def test_per_unit_multiplies():
    result = charge("per_unit", D(12), unit_amount="5")
    assert result.amount_minor == 60
    assert result.lines[0].subtotal == 60


@pytest.mark.parametrize(
    ("quantity", "exact", "minor"),
    [
        (D(30), D("1.5"), 2),  # Stripe's own example: 0.05 cents x 30 = 1.5, "rounded up to 2 cents"
        (D(29), D("1.45"), 1),
        (D(10), D("0.5"), 1),
        (D(9), D("0.45"), 0),
    ],
)
def test_fractional_unit_amount_rounds_half_up_once(quantity, exact, minor):
    result = charge("per_unit", quantity, unit_amount="0.05")
    assert result.amount_exact == exact
    assert result.amount_minor == minor


@pytest.mark.parametrize(
    ("quantity", "exact", "minor"),
    [(D(1), D("0.0035"), 0), (D(999), D("3.4965"), 3), (D(1000), D("3.5"), 4), (D(1_000_000), D(3500), 3500)],
)
def test_sub_cent_unit_amount(quantity, exact, minor):
    result = charge("per_unit", quantity, unit_amount=D("0.0035"))
    assert result.amount_exact == exact
    assert result.amount_minor == minor


@pytest.mark.parametrize(
    ("quantity", "exact"),
    [
        (D(0), D(100)),  # the first tier holds quantity 0: its flat amount is due
        (D(1), D(101)),
        (D(1000), D(1100)),
        (D(1001), D("1300.5")),  # 1000 x 1 + 100 + 1 x 0.5 + 200
        (D(2000), D(1800)),
        (D("1000.5"), D("1300.25")),
    ],
)
def test_graduated_charges_each_tier_its_own_rate(quantity, exact):
    assert charge("graduated", quantity, tiers=GRADUATED).amount_exact == exact


def test_graduated_lines_show_each_reached_tier():
    result = charge("graduated", D(1001), tiers=GRADUATED)
    assert result.amount_minor == 1301  # 1300.5 rounds half up
    assert [(line.tier, line.units, line.subtotal) for line in result.lines] == [
        (0, D(1000), D(1100)),
        (1, D(1), D("200.5")),
    ]


@pytest.mark.parametrize(
    ("quantity", "exact", "tier"),
    [
        (D(0), D(0), 0),
        (D(1000), D(1000), 0),  # up_to is inclusive
        (D(1001), D("800.5"), 1),  # all 1001 units at 0.5, plus tier 1's flat 300
        (D(5000), D(2800), 1),
        (D(5001), D("1250.25"), 2),  # the total drops: volume pricing does that
    ],
)
def test_volume_prices_all_units_at_the_tier_of_the_total(quantity, exact, tier):
    result = charge("volume", quantity, tiers=VOLUME)
    assert result.amount_exact == exact
    assert [line.tier for line in result.lines] == [tier]
    assert result.lines[0].units == quantity


def test_large_quantities_stay_exact():
    # 38 significant digits times a 12-place rate: the default 28-digit context would round this.
    quantity = D("12345678901234567890123456.123456789012")
    result = charge("per_unit", quantity, unit_amount=D("0.000000000003"))
    assert Fraction(result.amount_exact) == Fraction(quantity) * Fraction(3, 10**12)
    assert result.amount_exact == D("37037036703703.703670370368370370367036")
    assert result.amount_exact != quantity * D("0.000000000003")  # what the default context gives
    assert result.amount_minor == 37037036703704


def test_charge_for_a_price_instance():
    price = Price(model=Price.Model.PACKAGE, unit_amount=D("50"), package_size=1000, tiers=[])
    assert price_charge_for(price=price, quantity=D(1001)).amount_minor == 100


@pytest.mark.parametrize("quantity", [D(-1), D("-0.001"), D("NaN"), D("Infinity"), 1.5, "3", True])
def test_bad_quantities_are_refused(quantity):
    with pytest.raises(PricingError, match="quantity"):
        charge("per_unit", quantity, unit_amount="1")


@pytest.mark.parametrize("unit_amount", ["-1", "abc", "Infinity", 0.5, "0.0000000000001"])
def test_bad_unit_amounts_are_refused(unit_amount):
    with pytest.raises(PricingError, match=r"^unit_amount: "):
        charge("per_unit", D(1), unit_amount=unit_amount)


# --- Validation ----------------------------------------------------------------------------------


def test_valid_tiers_are_parsed():
    assert price_tiers_validate(model="graduated", tiers=GRADUATED, package_size=1) == [
        Tier(up_to=1000, unit_amount=D("1.0"), flat_amount=D(100)),
        Tier(up_to=None, unit_amount=D("0.5"), flat_amount=D(200)),
    ]


def test_missing_amounts_default_to_zero():
    assert price_tiers_validate(model="volume", tiers=[{"up_to": None}], package_size=1) == [
        Tier(up_to=None, unit_amount=D(0), flat_amount=D(0))
    ]


def test_untiered_models_need_no_tiers():
    assert price_tiers_validate(model="per_unit", tiers=[], package_size=1) == []


TAIL = {"up_to": None, "unit_amount": "1"}


@pytest.mark.parametrize(
    ("model", "tiers", "package_size", "message"),
    [
        ("tiered", [], 1, "^model: unknown pricing model 'tiered'"),
        ("package", [], 0, "^package_size: "),
        ("package", [], True, "^package_size: "),
        ("per_unit", [TAIL], 1, "^tiers: only graduated and volume prices have tiers"),
        ("graduated", [], 1, "^tiers: a graduated price needs at least one tier"),
        ("volume", {"up_to": None}, 1, "^tiers: must be a list"),
        ("graduated", ["1000"], 1, r"^tiers\[0\]: must be an object"),
        ("graduated", [{"upto": None}], 1, r"^tiers\[0\]: unknown field 'upto'"),
        ("graduated", [{"unit_amount": "1"}], 1, r"^tiers\[0\]\.up_to: required"),
        ("graduated", [{"up_to": 10}], 1, r"^tiers\[0\]\.up_to: the last tier must have up_to null"),
        ("graduated", [{"up_to": None}, TAIL], 1, r"^tiers\[0\]\.up_to: only the last tier"),
        ("graduated", [{"up_to": "10"}, TAIL], 1, r"^tiers\[0\]\.up_to: must be a whole number"),
        ("graduated", [{"up_to": 10.0}, TAIL], 1, r"^tiers\[0\]\.up_to: must be a whole number"),
        ("graduated", [{"up_to": True}, TAIL], 1, r"^tiers\[0\]\.up_to: must be a whole number"),
        ("graduated", [{"up_to": 0}, TAIL], 1, r"^tiers\[0\]\.up_to: tiers must ascend"),
        ("volume", [{"up_to": 10}, {"up_to": 10}, TAIL], 1, r"^tiers\[1\]\.up_to: tiers must ascend"),
        ("volume", [{"up_to": 10}, {"up_to": 5}, TAIL], 1, r"^tiers\[1\]\.up_to: tiers must ascend"),
        (
            "graduated",
            [{"up_to": None, "unit_amount": "-1"}],
            1,
            r"^tiers\[0\]\.unit_amount: must not be neg",
        ),
        (
            "graduated",
            [{"up_to": None, "flat_amount": "NaN"}],
            1,
            r"^tiers\[0\]\.flat_amount: must be a finite number",
        ),
        (
            "graduated",
            [{"up_to": None, "flat_amount": "1e400"}],
            1,
            r"^tiers\[0\]\.flat_amount: must be less",
        ),
        (
            "graduated",
            [{"up_to": None, "unit_amount": 0.5}],
            1,
            r"^tiers\[0\]\.unit_amount: must be a decimal",
        ),
        (
            "graduated",
            [{"up_to": None, "unit_amount": "½"}],
            1,
            r"^tiers\[0\]\.unit_amount: '½' is not a dec",
        ),
        ("volume", [TAIL, TAIL], 1, r"^tiers\[0\]\.up_to: only the last tier"),
        (
            "volume",
            [{"up_to": 5}, {"up_to": None, "unit_amount": "0.0000000000001"}],
            1,
            r"^tiers\[1\]\.unit_amount: at most 12 decimal places",
        ),
    ],
)
def test_invalid_prices_name_the_bad_field(model, tiers, package_size, message):
    with pytest.raises(PricingError, match=message):
        price_tiers_validate(model=model, tiers=tiers, package_size=package_size)


def test_charging_validates_the_tiers_first():
    with pytest.raises(PricingError, match=r"^tiers\[0\]\.up_to"):
        charge("graduated", D(1), tiers=[{"up_to": 5}])


# --- Free allowance ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "usage", "billable"),
    [
        (Tenant.Plan.FREE, D(150), D(50)),
        (Tenant.Plan.FREE, D(100), D(0)),
        (Tenant.Plan.FREE, D(80), D(0)),
        (Tenant.Plan.FREE, D("100.000001"), D("0.000001")),
        (Tenant.Plan.METERED, D(150), D(150)),
        (Tenant.Plan.METERED, D(80), D(80)),
    ],
)
def test_billable_quantity_subtracts_the_allowance_on_the_free_plan_only(plan, usage, billable):
    tenant = Tenant(plan=plan, monthly_free_allowance=D(100))
    # No plan row for the meter: the free plan's own allowance, none on the metered plan.
    included = allowance_resolve(tenant=tenant, meter_id=1, rows={}).included
    assert billable_quantity(usage=usage, included=included) == billable


# --- Properties against naive definitions ---------------------------------------------------------

amounts = st.decimals(min_value=0, max_value=10_000, places=4, allow_nan=False, allow_infinity=False)
fine_amounts = st.decimals(min_value=0, max_value=1, places=12, allow_nan=False, allow_infinity=False)
quantities = st.one_of(
    st.integers(min_value=0, max_value=10**9).map(Decimal),
    st.decimals(min_value=0, max_value=10**7, places=6, allow_nan=False, allow_infinity=False),
)


@st.composite
def tier_lists(draw, max_bound: int = 10**6) -> list[dict]:
    bounds = sorted(draw(st.sets(st.integers(min_value=1, max_value=max_bound), max_size=5)))
    tiers = []
    for up_to in [*bounds, None]:
        rate = draw(st.one_of(amounts, fine_amounts))
        flat = draw(st.one_of(st.just(D(0)), amounts))
        tiers.append({"up_to": up_to, "unit_amount": str(rate), "flat_amount": str(flat)})
    return tiers


def naive_graduated(tiers: list[dict], quantity: Decimal) -> Fraction:
    """Sum over tiers of min(max(q - lower, 0), upper - lower) x rate, plus each reached tier's flat."""
    q = Fraction(quantity)
    total = Fraction(0)
    lower = Fraction(0)
    for index, tier in enumerate(tiers):
        upper = Fraction(tier["up_to"]) if tier["up_to"] is not None else max(q, lower)
        total += min(max(q - lower, 0), upper - lower) * Fraction(D(tier["unit_amount"]))
        if index == 0 or q > lower:
            total += Fraction(D(tier["flat_amount"]))
        lower = upper
    return total


def unit_by_unit_graduated(tiers: list[dict], quantity: int) -> Fraction:
    """Integer quantities the slow way: unit k costs the rate of the tier holding k."""
    total = Fraction(D(tiers[0]["flat_amount"]))
    for unit in range(1, quantity + 1):
        index = next(i for i, tier in enumerate(tiers) if tier["up_to"] is None or unit <= tier["up_to"])
        total += Fraction(D(tiers[index]["unit_amount"]))
        if index and unit == tiers[index - 1]["up_to"] + 1:
            total += Fraction(D(tiers[index]["flat_amount"]))
    return total


def naive_volume(tiers: list[dict], quantity: Decimal) -> Fraction:
    q = Fraction(quantity)
    tier = next(tier for tier in tiers if tier["up_to"] is None or q <= tier["up_to"])
    return q * Fraction(D(tier["unit_amount"])) + Fraction(D(tier["flat_amount"]))


def half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


@property_test
@given(tiers=tier_lists(), quantity=quantities)
def test_graduated_matches_the_naive_definition(tiers, quantity):
    result = charge("graduated", quantity, tiers=tiers)
    expected = naive_graduated(tiers, quantity)
    assert Fraction(result.amount_exact) == expected
    assert result.amount_minor == half_up(expected)
    assert sum(line.units for line in result.lines) == quantity


@settings(parent=property_test, max_examples=100)
@given(tiers=tier_lists(max_bound=2000), quantity=st.integers(min_value=0, max_value=2500))
def test_graduated_matches_unit_by_unit_pricing(tiers, quantity):
    result = charge("graduated", D(quantity), tiers=tiers)
    assert Fraction(result.amount_exact) == unit_by_unit_graduated(tiers, quantity)


@property_test
@given(tiers=tier_lists(), quantity=quantities, more=quantities)
def test_graduated_never_decreases_with_more_usage(tiers, quantity, more):
    assert (
        charge("graduated", quantity + more, tiers=tiers).amount_exact
        >= charge("graduated", quantity, tiers=tiers).amount_exact
    )


@property_test
@given(tiers=tier_lists(), quantity=quantities)
def test_volume_matches_the_naive_definition(tiers, quantity):
    result = charge("volume", quantity, tiers=tiers)
    expected = naive_volume(tiers, quantity)
    assert Fraction(result.amount_exact) == expected
    assert result.amount_minor == half_up(expected)


@property_test
@given(tier=tier_lists().map(lambda tiers: tiers[-1]), quantity=quantities)
def test_one_tier_is_the_same_for_graduated_and_volume(tier, quantity):
    assert (
        charge("graduated", quantity, tiers=[tier]).amount_exact
        == charge("volume", quantity, tiers=[tier]).amount_exact
    )


@property_test
@given(
    quantity=quantities,
    package_size=st.integers(min_value=1, max_value=10**6),
    unit_amount=st.one_of(amounts, fine_amounts),
)
def test_package_matches_ceil(quantity, package_size, unit_amount):
    result = charge("package", quantity, unit_amount=unit_amount, package_size=package_size)
    expected = math.ceil(Fraction(quantity) / package_size) * Fraction(unit_amount)
    assert Fraction(result.amount_exact) == expected
    assert result.amount_minor == half_up(expected)


@property_test
@given(quantity=quantities, unit_amount=st.one_of(amounts, fine_amounts))
def test_per_unit_is_rounded_once_to_the_nearest_minor_unit(quantity, unit_amount):
    result = charge("per_unit", quantity, unit_amount=unit_amount)
    assert Fraction(result.amount_exact) == Fraction(quantity) * Fraction(unit_amount)
    assert abs(result.amount_minor - result.amount_exact) <= D("0.5")
    assert result.amount_minor == half_up(Fraction(result.amount_exact))
