"""Cart rules, free of I/O: unit conversion, what a cart in each state may do."""

from dataclasses import dataclass

from libs.contracts.base import Rejection
from libs.contracts.cart import MAX_BASE_QUANTITY


@dataclass(frozen=True)
class Converted:
    order_uom: str
    order_quantity: int
    factor: int
    base_uom: str
    base_quantity: int


def to_base_units(base_uom: str, units: dict[str, int], *, quantity: int | None = None,
                  order_uom: str | None = None, order_quantity: int | None = None) -> Converted:
    """`quantity` is in base units; or `order_quantity` of `order_uom`, converted by the product's factor."""
    if quantity is not None:
        param, uom, qty, factor = "quantity", base_uom, quantity, 1
    else:
        param, uom, qty = "order_quantity", order_uom or base_uom, order_quantity
        if qty is None:
            raise Rejection("parameter_missing", "give quantity, or order_uom and order_quantity", "quantity")
        if uom == base_uom:
            factor = 1
        elif uom in units:
            factor = units[uom]
        else:
            known = ", ".join([base_uom, *sorted(units)])
            raise Rejection("uom_unknown", f"unit {uom!r} is not sold for this product (units: {known})", "order_uom")
    if qty < 1:
        raise Rejection("quantity_invalid", "quantity must be at least 1", param)
    base = qty * factor
    if base > MAX_BASE_QUANTITY:
        raise Rejection("quantity_invalid", f"at most {MAX_BASE_QUANTITY} base units per line", param)
    return Converted(uom, qty, factor, base_uom, base)


def ensure_open(status: str, order_id: str | None) -> None:
    """Only an open cart takes changes."""
    if status == "checked_out":
        raise Rejection("cart_checked_out", "this cart was checked out", "cart_id", order_id=order_id)
    if status == "frozen":
        raise Rejection("cart_frozen", "this cart is being checked out; try again shortly", "cart_id")


def ensure_version(current: int, expected: int | None) -> None:
    if expected is not None and expected != current:
        raise Rejection("cart_version_conflict", f"the cart is at version {current}, not {expected}", "version")
