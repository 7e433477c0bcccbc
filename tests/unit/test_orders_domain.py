"""Orders rules: correlation of saga replies and the order line snapshot."""

from typing import get_args

import pytest

from libs.contracts.base import Rejection
from libs.contracts.cart import CartLine
from libs.contracts.pricing import LinesPriced, PricedLine
from libs.contracts.orders import OrderStatus, OrderView
from services.orders.domain import ACTIVE, FINAL, CheckoutState, assemble_lines, correlation, parse_correlation


def test_correlation_round_trip():
    assert parse_correlation(correlation("chk_01ABC", 3)) == ("chk_01ABC", 3)
    assert parse_correlation(None) is None
    assert parse_correlation("chk_01ABC") is None
    assert parse_correlation("chk_01ABC:x") is None


def _frozen():
    return [
        CartLine(line_id="cli_1", sku="RICE", order_uom="CASE", order_quantity=2, factor=12, base_uom="EA", base_quantity=24),
        CartLine(line_id="cli_2", sku="OIL", order_uom="EA", order_quantity=3, factor=1, base_uom="EA", base_quantity=3),
    ]


def _priced(lines):
    return LinesPriced(cart_id="cart_1", currency="JMD", lines=lines, subtotal=sum(x.subtotal for x in lines),
                       tax=sum(x.tax for x in lines), total=sum(x.total for x in lines))


def _line(line_id, sku, qty, unit, rate_bp, category="standard"):
    sub = unit * qty
    tax = (sub * rate_bp + 5000) // 10000
    return PricedLine(line_id=line_id, sku=sku, base_quantity=qty, unit_price=unit, price_source="list",
                      subtotal=sub, tax_category=category, tax_rate_bp=rate_bp, tax=tax, total=sub + tax)


def test_snapshot_keeps_asked_and_settled():
    priced = _priced([_line("cli_1", "RICE", 24, 1250, 0, "zero_rated"), _line("cli_2", "OIL", 3, 899, 1500)])
    lines = assemble_lines(_frozen(), priced)
    assert [x["position"] for x in lines] == [1, 2]
    first = lines[0]
    assert (first["order_uom"], first["order_quantity"], first["factor"], first["base_quantity"]) == ("CASE", 2, 12, 24)
    assert (first["unit_price"], first["subtotal"], first["tax"], first["tax_category"]) == (1250, 30000, 0, "zero_rated")
    assert (lines[1]["subtotal"], lines[1]["tax"], lines[1]["total"]) == (2697, 405, 3102)


def test_a_line_priced_differently_from_frozen_is_refused():
    priced = _priced([_line("cli_1", "RICE", 12, 1250, 0), _line("cli_2", "OIL", 3, 899, 1500)])
    with pytest.raises(Rejection):
        assemble_lines(_frozen(), priced)


def test_missing_or_extra_priced_lines_are_refused():
    with pytest.raises(Rejection):
        assemble_lines(_frozen(), _priced([_line("cli_1", "RICE", 24, 1250, 0)]))
    extra = [_line("cli_1", "RICE", 24, 1250, 0), _line("cli_2", "OIL", 3, 899, 1500), _line("cli_3", "X", 1, 1, 0)]
    with pytest.raises(Rejection):
        assemble_lines(_frozen(), _priced(extra))


def test_order_status_is_the_views_literal():
    """OrderView.status stays a Literal (the v1 schema unchanged); the StrEnum names the same values."""
    assert set(get_args(OrderView.model_fields["status"].annotation)) == {s.value for s in OrderStatus}


def test_checkout_states_keep_the_stored_values():
    """Rows, the partial indexes and operators' queries name these values: `state IN ('freezing', 'pricing',
    'reserving')` is an active saga."""
    assert {s.value for s in ACTIVE} == {"freezing", "pricing", "reserving"}
    assert {s.value for s in FINAL} == {"confirmed", "rejected", "failed"}
    assert {s.value for s in CheckoutState} == {"freezing", "pricing", "reserving", "confirmed", "rejected", "failed",
                                                "expired"}
