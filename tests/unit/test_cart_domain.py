"""Cart rules: unit conversion into base stock units, and what a cart in each state may do."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.contracts.base import Rejection
from services.cart.domain import (Cart, LineAdded, LineChanged, LineRemoved, Product, StatusChanged, Unchanged,
                                  customer_cart, ensure_open, ensure_version, to_base_units)

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


# -- the Cart: each command decides and returns what changed, never mutating the cart it was asked ----------

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
RICE = Product("RICE-1KG", "EA", UNITS)


def test_a_cart_is_a_value_each_command_returns_the_next():
    cart = Cart.new("cart_1", "cus_1", T0)
    added = cart.add_line("cli_1", "RICE-1KG", RICE, order_uom="CASE", order_quantity=2, at=T0 + timedelta(seconds=1))
    assert isinstance(added, LineAdded) and cart.lines == () and cart.version == 1
    assert (added.cart.version, added.cart.updated_at, added.line.base_quantity) == (2, T0 + timedelta(seconds=1), 24)
    changed = added.cart.change_line("cli_1", quantity=5, at=T0 + timedelta(seconds=2))
    assert isinstance(changed, LineChanged) and added.cart.lines[0].base_quantity == 24
    assert (changed.line.order_uom, changed.line.factor, changed.line.base_quantity, changed.cart.version) == (
        "EA", 1, 5, 3)
    removed = changed.cart.remove_line("cli_1", at=T0 + timedelta(seconds=3))
    assert isinstance(removed, LineRemoved) and removed.cart.lines == () and removed.cart.version == 4


def test_lines_keep_the_order_they_were_added_in_even_from_a_lagging_clock():
    cart = Cart.new("cart_1", "cus_1", T0)
    cart = cart.add_line("cli_b", "RICE-1KG", RICE, quantity=1, at=T0 + timedelta(seconds=5)).cart
    cart = cart.add_line("cli_a", "RICE-1KG", RICE, quantity=1, at=T0 + timedelta(seconds=4)).cart
    assert [x.line_id for x in cart.lines] == ["cli_a", "cli_b"]  # as the repository reads them


def test_freeze_release_complete():
    cart = Cart.new("cart_1", "cus_1", T0).add_line("cli_1", "RICE-1KG", RICE, quantity=1, at=T0).cart
    frozen = cart.freeze("chk_1", T0)
    assert isinstance(frozen, StatusChanged) and (frozen.cart.status, frozen.cart.frozen_by) == ("frozen", "chk_1")
    assert frozen.cart.freeze("chk_1", T0) == Unchanged(frozen.cart)  # the same checkout again: the same answer
    with pytest.raises(Rejection) as e:
        frozen.cart.freeze("chk_2", T0)
    assert e.value.code == "cart_frozen"
    assert frozen.cart.release("chk_2", T0) == Unchanged(frozen.cart)  # not the holder: nothing to do
    released = frozen.cart.release("chk_1", T0).cart
    assert (released.status, released.frozen_by, released.version) == ("open", None, cart.version + 2)
    done = frozen.cart.complete("chk_1", "ord_1", T0).cart
    assert (done.status, done.order_id) == ("checked_out", "ord_1")
    assert done.complete("chk_1", "ord_2", T0) == Unchanged(done) and done.release("chk_1", T0) == Unchanged(done)
    with pytest.raises(Rejection) as e:
        Cart.new("cart_2", "cus_1", T0).freeze("chk_1", T0)
    assert (e.value.code, e.value.param) == ("parameter_invalid", "cart_id")


def test_another_customers_cart_is_missing():
    cart = Cart.new("cart_1", "cus_1", T0)
    assert customer_cart(cart, "cart_1", "cus_1") is cart
    for found, customer in ((cart, "cus_2"), (None, "cus_1")):
        with pytest.raises(Rejection) as e:
            customer_cart(found, "cart_1", customer)
        assert (e.value.code, e.value.param) == ("resource_missing", "cart_id")
