"""Cart rules: unit conversion into base stock units, and what a cart in each state may do."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.contracts.base import Rejection
from services.cart.domain import ensure_open, ensure_version, to_base_units

UNITS = {"CASE": 12, "PALLET": 480}


def test_base_quantity_as_given():
    conv = to_base_units("EA", UNITS, quantity=5)
    assert (conv.order_uom, conv.order_quantity, conv.factor, conv.base_quantity) == ("EA", 5, 1, 5)


def test_alternate_unit_converts_by_factor():
    conv = to_base_units("EA", UNITS, order_uom="CASE", order_quantity=3)
    assert (conv.order_uom, conv.order_quantity, conv.factor, conv.base_uom, conv.base_quantity) == ("CASE", 3, 12, "EA", 36)


def test_base_unit_named_as_order_unit():
    assert to_base_units("EA", UNITS, order_uom="EA", order_quantity=7).base_quantity == 7


def test_unknown_unit():
    with pytest.raises(Rejection) as e:
        to_base_units("EA", UNITS, order_uom="BOX", order_quantity=1)
    assert (e.value.code, e.value.param) == ("uom_unknown", "order_uom")


@pytest.mark.parametrize("qty", [0, -1])
def test_quantity_must_be_positive(qty):
    with pytest.raises(Rejection) as e:
        to_base_units("EA", UNITS, quantity=qty)
    assert (e.value.code, e.value.param) == ("quantity_invalid", "quantity")


def test_absurd_quantity_after_conversion():
    to_base_units("EA", UNITS, order_uom="PALLET", order_quantity=2083)  # 999,840 base units: allowed
    with pytest.raises(Rejection) as e:
        to_base_units("EA", UNITS, order_uom="PALLET", order_quantity=2084)  # 1,000,320
    assert (e.value.code, e.value.param) == ("quantity_invalid", "order_quantity")


@given(st.integers(min_value=1, max_value=1000), st.sampled_from(sorted(UNITS)))
def test_conversion_is_exact(qty, uom):
    conv = to_base_units("EA", UNITS, order_uom=uom, order_quantity=qty)
    assert conv.base_quantity == qty * UNITS[uom]


def test_states():
    ensure_open("open", None)
    with pytest.raises(Rejection) as e:
        ensure_open("frozen", None)
    assert e.value.code == "cart_frozen"
    with pytest.raises(Rejection) as e:
        ensure_open("checked_out", "ord_1")
    assert (e.value.code, e.value.order_id) == ("cart_checked_out", "ord_1")


def test_version():
    ensure_version(3, None)
    ensure_version(3, 3)
    with pytest.raises(Rejection) as e:
        ensure_version(3, 2)
    assert e.value.code == "cart_version_conflict"
