"""Pricing arithmetic and contract-price resolution, checked against hand-computed cents."""

from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.contracts.base import Rejection
from libs.contracts.fields import MAX_AMOUNT
from libs.contracts.money import DEFAULT_GCT_RATES_BP, TaxCategory, tax_half_up
from libs.contracts.pricing import LineToPrice
from services.pricing.domain import PriceCandidate, ResolvedPrice, price_cart, price_line, resolve_unit_price

RATES = {str(k): v for k, v in DEFAULT_GCT_RATES_BP.items()}
CUSTOMER, OTHER, PRICE_LIST = "cus_A", "cus_B", "wholesale"

LIST = PriceCandidate(unit_amount=1_500, price_id="list")
LIST_BREAK_12 = PriceCandidate(unit_amount=1_400, min_quantity=12, price_id="list-12")
PRICE_LIST_PRICE = PriceCandidate(unit_amount=1_300, price_list_id=PRICE_LIST, price_id="pl")
PRICE_LIST_BREAK_24 = PriceCandidate(unit_amount=1_200, price_list_id=PRICE_LIST, min_quantity=24, price_id="pl-24")
CUSTOMER_BREAK_48 = PriceCandidate(unit_amount=1_000, customer_id=CUSTOMER, min_quantity=48, price_id="cus-48")
OTHERS_PRICE = PriceCandidate(unit_amount=1, customer_id=OTHER, price_id="other")
OTHER_LIST = PriceCandidate(unit_amount=2, price_list_id="retail", price_id="retail")
ALL = [LIST, LIST_BREAK_12, PRICE_LIST_PRICE, PRICE_LIST_BREAK_24, CUSTOMER_BREAK_48, OTHERS_PRICE, OTHER_LIST]


# --- which price applies -------------------------------------------------------------------


@pytest.mark.parametrize(
    "customer_id, price_list_id, quantity, expected",
    [
        # customer price, but only from its break: below it the price list applies, then its own break
        (CUSTOMER, PRICE_LIST, 48, (1_000, "customer")),
        (CUSTOMER, PRICE_LIST, 100, (1_000, "customer")),
        (CUSTOMER, PRICE_LIST, 47, (1_200, "price_list")),
        (CUSTOMER, PRICE_LIST, 24, (1_200, "price_list")),
        (CUSTOMER, PRICE_LIST, 23, (1_300, "price_list")),
        (CUSTOMER, PRICE_LIST, 1, (1_300, "price_list")),
        # a customer without a price list: customer price, else list price with its breaks
        (CUSTOMER, None, 48, (1_000, "customer")),
        (CUSTOMER, None, 47, (1_400, "list")),
        (CUSTOMER, None, 11, (1_500, "list")),
        # another customer never gets this customer's price, nor a price list that is not theirs
        (OTHER, "retail", 100, (1, "customer")),
        ("cus_C", None, 100, (1_400, "list")),
        ("cus_C", "unknown_list", 12, (1_400, "list")),
        # anonymous catalog: list price only
        (None, None, 1, (1_500, "list")),
        (None, None, 12, (1_400, "list")),
    ],
)
def test_precedence_and_quantity_breaks(customer_id, price_list_id, quantity, expected):
    resolved = resolve_unit_price(ALL, customer_id, price_list_id, quantity)
    assert resolved is not None
    assert (resolved.unit_amount, resolved.source) == expected
    assert resolved.currency == "JMD"


def test_a_cheaper_list_price_does_not_beat_a_contract_price():
    # precedence is by level, not by the lowest amount
    cheap_list = PriceCandidate(unit_amount=500, price_id="cheap")
    contract = PriceCandidate(unit_amount=900, customer_id=CUSTOMER, price_id="c")
    assert resolve_unit_price([cheap_list, contract], CUSTOMER, None, 1) == ResolvedPrice(900, "customer", "JMD")


def test_inactive_prices_do_not_apply():
    retired = PriceCandidate(unit_amount=900, customer_id=CUSTOMER, active=False, price_id="old")
    assert resolve_unit_price([LIST, retired], CUSTOMER, None, 5) == ResolvedPrice(1_500, "list", "JMD")
    assert resolve_unit_price([retired], CUSTOMER, None, 5) is None


def test_no_applicable_price_is_none():
    assert resolve_unit_price([], CUSTOMER, PRICE_LIST, 1) is None
    # only a break above the quantity
    assert resolve_unit_price([LIST_BREAK_12], None, None, 11) is None
    # only another customer's price
    assert resolve_unit_price([OTHERS_PRICE], CUSTOMER, None, 1) is None


def test_the_result_does_not_depend_on_candidate_order():
    forwards = resolve_unit_price(ALL, CUSTOMER, PRICE_LIST, 30)
    assert resolve_unit_price(list(reversed(ALL)), CUSTOMER, PRICE_LIST, 30) == forwards
    twins = [PriceCandidate(unit_amount=700, price_id="b"), PriceCandidate(unit_amount=650, price_id="a")]
    assert resolve_unit_price(twins, None, None, 1) == resolve_unit_price(twins[::-1], None, None, 1)


# --- money per line -------------------------------------------------------------------------


def _line(unit_amount: int, quantity: int, category=TaxCategory.STANDARD):
    return price_line("cli_1", "SKU", quantity, ResolvedPrice(unit_amount, "list", "JMD"), category, RATES)


def test_twelve_each_at_12_50_with_gct():
    line = _line(1_250, 12)
    assert (line.subtotal, line.tax_rate_bp, line.tax, line.total) == (15_000, 1_500, 2_250, 17_250)
    assert line.unit_price == 1_250 and line.price_source == "list"


@pytest.mark.parametrize(
    "unit_amount, quantity, tax",
    [
        (1_003, 1, 150),  # 150.45 → 150
        (1_010, 1, 152),  # 151.50 → 152, half-up
        (1_001, 1, 150),  # 150.15 → 150
        (1_030, 1, 155),  # 154.50 → 155
        (3, 1, 0),  # 0.45 → 0
        (10, 1, 2),  # 1.50 → 2
        (1, 1, 0),  # 0.15 → 0
    ],
)
def test_half_cent_cases_round_half_up(unit_amount, quantity, tax):
    line = _line(unit_amount, quantity)
    assert line.tax == tax
    assert line.total == line.subtotal + tax


@pytest.mark.parametrize("category", [TaxCategory.ZERO_RATED, TaxCategory.EXEMPT])
def test_zero_rated_and_exempt_carry_no_tax(category):
    line = _line(1_250, 12, category)
    assert (line.subtotal, line.tax_rate_bp, line.tax, line.total) == (15_000, 0, 0, 15_000)
    assert line.tax_category == category


def test_exempt_ignores_a_configured_rate():
    rates = {**RATES, "exempt": 1_500}
    line = price_line("cli_1", "SKU", 1, ResolvedPrice(1_000, "list", "JMD"), TaxCategory.EXEMPT, rates)
    assert line.tax == 0 and line.tax_rate_bp == 0


def test_a_tenant_rate_is_used():
    line = price_line("cli_1", "SKU", 1, ResolvedPrice(1_000, "list", "JMD"), TaxCategory.STANDARD,
                      {**RATES, "standard": 1_650})
    assert (line.tax_rate_bp, line.tax) == (1_650, 165)


# --- a whole cart -----------------------------------------------------------------------------


def _cart(lines, categories, candidates, customer_id=CUSTOMER, price_list_id=None):
    return price_cart("cart_1", lines, categories, candidates, customer_id, price_list_id, RATES)


def test_totals_are_sums_of_rounded_lines():
    # three lines of 10.10: GCT 1.515 → 1.52 each, 4.56 in all; GCT on the sum (30.30 → 4.545) would be 4.55
    lines = [LineToPrice(line_id=f"cli_{i}", sku="X", base_quantity=1) for i in range(3)]
    priced = _cart(lines, {"X": TaxCategory.STANDARD}, {"X": [PriceCandidate(unit_amount=1_010)]})
    assert [x.tax for x in priced.lines] == [152, 152, 152]
    assert (priced.subtotal, priced.tax, priced.total) == (3_030, 456, 3_486)
    assert tax_half_up(priced.subtotal, 1_500) == 455  # what rounding the sum would have said


def test_a_mixed_cart_hand_computed():
    categories = {"RICE": TaxCategory.ZERO_RATED, "SOAP": TaxCategory.STANDARD, "MEDS": TaxCategory.EXEMPT}
    candidates = {
        "RICE": [PriceCandidate(unit_amount=1_250), PriceCandidate(unit_amount=1_100, customer_id=CUSTOMER, min_quantity=24)],
        "SOAP": [PriceCandidate(unit_amount=1_003), PriceCandidate(unit_amount=950, price_list_id=PRICE_LIST)],
        "MEDS": [PriceCandidate(unit_amount=4_999)],
    }
    lines = [
        LineToPrice(line_id="cli_1", sku="RICE", base_quantity=24),  # 24 × 11.00 = 264.00, zero-rated
        LineToPrice(line_id="cli_2", sku="SOAP", base_quantity=3),  # 3 × 9.50 = 28.50, GCT 4.275 → 4.28
        LineToPrice(line_id="cli_3", sku="MEDS", base_quantity=2),  # 2 × 49.99 = 99.98, exempt
    ]
    priced = _cart(lines, categories, candidates, price_list_id=PRICE_LIST)
    assert [(x.unit_price, x.price_source, x.subtotal, x.tax, x.total) for x in priced.lines] == [
        (1_100, "customer", 26_400, 0, 26_400),
        (950, "price_list", 2_850, 428, 3_278),
        (4_999, "list", 9_998, 0, 9_998),
    ]
    assert (priced.currency, priced.subtotal, priced.tax, priced.total) == ("JMD", 39_248, 428, 39_676)


def test_unknown_or_unpriced_sku_is_sku_unknown():
    with pytest.raises(Rejection) as unknown:
        _cart([LineToPrice(line_id="cli_1", sku="NOPE", base_quantity=1)], {}, {})
    assert (unknown.value.code, unknown.value.param) == ("sku_unknown", "sku")
    with pytest.raises(Rejection) as unpriced:
        _cart([LineToPrice(line_id="cli_1", sku="X", base_quantity=1)], {"X": TaxCategory.STANDARD},
              {"X": [PriceCandidate(unit_amount=100, min_quantity=10)]})
    assert (unpriced.value.code, unpriced.value.param) == ("sku_unknown", "sku")


def test_mixed_currencies_are_refused():
    lines = [LineToPrice(line_id="cli_1", sku="A", base_quantity=1), LineToPrice(line_id="cli_2", sku="B", base_quantity=1)]
    categories = {"A": TaxCategory.STANDARD, "B": TaxCategory.STANDARD}
    candidates = {"A": [PriceCandidate(unit_amount=100)], "B": [PriceCandidate(unit_amount=100, currency="USD")]}
    with pytest.raises(Rejection) as refused:
        _cart(lines, categories, candidates)
    assert refused.value.code == "parameter_invalid"


def test_an_empty_cart_prices_to_zero():
    priced = _cart([], {}, {})
    assert (priced.subtotal, priced.tax, priced.total, priced.lines) == (0, 0, 0, [])


# --- the rounding rule itself -----------------------------------------------------------------


@given(subtotal=st.integers(min_value=0, max_value=10**15), rate_bp=st.integers(min_value=0, max_value=10_000))
def test_tax_half_up_matches_decimal_rounding(subtotal, rate_bp):
    exact = Decimal(subtotal * rate_bp) / Decimal(10_000)
    assert tax_half_up(subtotal, rate_bp) == int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


# --- the money bound ------------------------------------------------------------------------------


def test_an_order_past_two_to_the_31_prices_exactly():
    # 100,000 × 450.00 = 4,500,000,000 cents, + 15% GCT: far past a 32-bit column, far below the bound
    priced = _cart([LineToPrice(line_id="cli_1", sku="A", base_quantity=100_000)], {"A": TaxCategory.STANDARD},
                   {"A": [PriceCandidate(unit_amount=45_000)]})
    assert (priced.subtotal, priced.tax, priced.total) == (4_500_000_000, 675_000_000, 5_175_000_000)


def test_a_line_over_the_bound_is_amount_too_large():
    # the price itself is allowed (10**15), two of it are not; and 15% GCT may push a line over on its own
    for quantity, unit_amount in ((2, MAX_AMOUNT), (1, MAX_AMOUNT)):
        with pytest.raises(Rejection) as refused:
            _cart([LineToPrice(line_id="cli_1", sku="A", base_quantity=quantity)], {"A": TaxCategory.STANDARD},
                  {"A": [PriceCandidate(unit_amount=unit_amount)]})
        assert (refused.value.code, refused.value.param) == ("amount_too_large", "cart_id")


def test_lines_within_the_bound_whose_sum_is_not_are_amount_too_large():
    half = MAX_AMOUNT // 2
    lines = [LineToPrice(line_id="cli_1", sku="A", base_quantity=1), LineToPrice(line_id="cli_2", sku="B", base_quantity=1)]
    candidates = {"A": [PriceCandidate(unit_amount=half)], "B": [PriceCandidate(unit_amount=half + 1)]}
    with pytest.raises(Rejection) as refused:
        _cart(lines, {"A": TaxCategory.ZERO_RATED, "B": TaxCategory.ZERO_RATED}, candidates)
    assert refused.value.code == "amount_too_large"
    exact = _cart(lines, {"A": TaxCategory.ZERO_RATED, "B": TaxCategory.ZERO_RATED},
                  {"A": [PriceCandidate(unit_amount=half)], "B": [PriceCandidate(unit_amount=half)]})
    assert exact.total == MAX_AMOUNT
