"""Cart rules, free of I/O: unit conversion, and what a cart in each state may do.

A `Cart` is loaded with its lines; each command is a method that decides (or raises a `Rejection`
in the catalogue's words) and returns what changed — a new `Cart` and, for a line, the line — so
the handler stores exactly that. The methods never mutate: a `Cart` is a value.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from libs.contracts.base import Rejection
from libs.contracts.cart import MAX_BASE_QUANTITY, CartStatus
from libs.contracts.errors import ErrorCode


@dataclass(frozen=True)
class Converted:
    order_uom: str
    order_quantity: int
    factor: int
    base_uom: str
    base_quantity: int


def to_base_units(base_uom: str, units: Mapping[str, int], *, quantity: int | None = None,
                  order_uom: str | None = None, order_quantity: int | None = None) -> Converted:
    """`quantity` is in base units; or `order_quantity` of `order_uom`, converted by the product's factor."""
    if quantity is not None:
        param, uom, qty, factor = "quantity", base_uom, quantity, 1
    else:
        param, uom, qty = "order_quantity", order_uom or base_uom, order_quantity
        if qty is None:
            raise Rejection(ErrorCode.PARAMETER_MISSING, "give quantity, or order_uom and order_quantity", "quantity")
        if uom == base_uom:
            factor = 1
        elif uom in units:
            factor = units[uom]
        else:
            known = ", ".join([base_uom, *sorted(units)])
            raise Rejection(ErrorCode.UOM_UNKNOWN, f"unit {uom!r} is not sold for this product (units: {known})",
                            "order_uom")
    if qty < 1:
        raise Rejection(ErrorCode.QUANTITY_INVALID, "quantity must be at least 1", param)
    base = qty * factor
    if base > MAX_BASE_QUANTITY:
        raise Rejection(ErrorCode.QUANTITY_INVALID, f"at most {MAX_BASE_QUANTITY} base units per line", param)
    return Converted(uom, qty, factor, base_uom, base)


def ensure_open(status: str, order_id: str | None) -> None:
    """Only an open cart takes changes."""
    if status == CartStatus.CHECKED_OUT:
        raise Rejection(ErrorCode.CART_CHECKED_OUT, "this cart was checked out", "cart_id", order_id=order_id)
    if status == CartStatus.FROZEN:
        raise Rejection(ErrorCode.CART_FROZEN, "this cart is being checked out; try again shortly", "cart_id")


def ensure_version(current: int, expected: int | None) -> None:
    if expected is not None and expected != current:
        raise Rejection(ErrorCode.CART_VERSION_CONFLICT, f"the cart is at version {current}, not {expected}",
                        "version")


@dataclass(frozen=True)
class Product:
    """The cart's copy of a catalogue product (erp.products.v1): just what unit conversion needs."""

    sku: str
    base_uom: str
    units: Mapping[str, int] = field(default_factory=dict)  # alternate unit → base units it holds
    active: bool = True


@dataclass(frozen=True)
class Line:
    line_id: str
    sku: str
    order_uom: str
    order_quantity: int
    factor: int
    base_uom: str
    base_quantity: int
    created_at: datetime

    @classmethod
    def of(cls, line_id: str, sku: str, conv: Converted, at: datetime) -> "Line":
        return cls(line_id, sku, conv.order_uom, conv.order_quantity, conv.factor, conv.base_uom, conv.base_quantity,
                   at)

    def requantified(self, *, quantity: int | None, order_quantity: int | None) -> "Line":
        """The line at a new quantity: `quantity` in base units (the line becomes a base-unit line), or
        `order_quantity` of the unit it was ordered in."""
        units = {self.order_uom: self.factor} if self.order_uom != self.base_uom else {}
        if quantity is not None:
            conv = to_base_units(self.base_uom, units, quantity=quantity)
        else:
            conv = to_base_units(self.base_uom, units, order_uom=self.order_uom, order_quantity=order_quantity)
        return replace(self, order_uom=conv.order_uom, order_quantity=conv.order_quantity, factor=conv.factor,
                       base_quantity=conv.base_quantity)


# -- what a command changed: each result carries the cart after it ----------------------------------

@dataclass(frozen=True)
class Unchanged:
    """Nothing to store: a resend answered again, or a command with nothing left to do."""

    cart: "Cart"


@dataclass(frozen=True)
class LineAdded:
    cart: "Cart"
    line: Line


@dataclass(frozen=True)
class LineChanged:
    cart: "Cart"
    line: Line


@dataclass(frozen=True)
class LineRemoved:
    cart: "Cart"
    line_id: str


@dataclass(frozen=True)
class StatusChanged:
    """The cart's status (and frozen_by / order_id with it) moved: frozen, released or completed."""

    cart: "Cart"


@dataclass(frozen=True)
class Cart:
    cart_id: str
    customer_id: str
    created_at: datetime
    updated_at: datetime
    status: CartStatus = CartStatus.OPEN
    version: int = 1
    lines: tuple[Line, ...] = ()  # in the order they were added
    frozen_by: str | None = None  # the checkout holding the cart
    order_id: str | None = None

    @classmethod
    def new(cls, cart_id: str, customer_id: str, at: datetime) -> "Cart":
        return cls(cart_id, customer_id, at, at)

    def line(self, line_id: str) -> Line | None:
        return next((x for x in self.lines if x.line_id == line_id), None)

    def created_again(self, customer_id: str) -> Unchanged:
        """A CreateCart naming a cart that exists: the gateway names the cart, so a resend finds it made."""
        if customer_id != self.customer_id:
            raise Rejection(ErrorCode.PARAMETER_INVALID, "cart id already in use", "cart_id")
        return Unchanged(self)

    def _touched(self, at: datetime, **changes) -> "Cart":
        return replace(self, version=self.version + 1, updated_at=at, **changes)

    def _changeable(self, expected_version: int | None) -> None:
        ensure_open(self.status, self.order_id)
        ensure_version(self.version, expected_version)

    def _line_to_change(self, line_id: str, expected_version: int | None) -> Line:
        self._changeable(expected_version)
        line = self.line(line_id)
        if line is None:
            raise Rejection(ErrorCode.RESOURCE_MISSING, f"no line {line_id} in this cart", "line_id")
        return line

    def add_line(self, line_id: str, sku: str, product: Product | None, *, quantity: int | None = None,
                 order_uom: str | None = None, order_quantity: int | None = None,
                 expected_version: int | None = None, at: datetime) -> LineAdded | Unchanged:
        """Add a line of `product` (None: no such product); the line id names it, so a resend finds it added."""
        if self.line(line_id) is not None:
            return Unchanged(self)
        self._changeable(expected_version)
        if product is None or not product.active:
            raise Rejection(ErrorCode.SKU_UNKNOWN, f"no product with sku {sku!r}", "sku")
        conv = to_base_units(product.base_uom, product.units, quantity=quantity, order_uom=order_uom,
                             order_quantity=order_quantity)
        line = Line.of(line_id, product.sku, conv, at)
        # the order the repository reads them in (normally last: another instance's clock may lag behind)
        lines = tuple(sorted((*self.lines, line), key=lambda x: (x.created_at, x.line_id)))
        return LineAdded(self._touched(at, lines=lines), line)

    def change_line(self, line_id: str, *, quantity: int | None = None, order_quantity: int | None = None,
                    expected_version: int | None = None, at: datetime) -> LineChanged:
        line = self._line_to_change(line_id, expected_version).requantified(quantity=quantity,
                                                                            order_quantity=order_quantity)
        lines = tuple(line if x.line_id == line_id else x for x in self.lines)
        return LineChanged(self._touched(at, lines=lines), line)

    def remove_line(self, line_id: str, *, expected_version: int | None = None, at: datetime) -> LineRemoved:
        self._line_to_change(line_id, expected_version)
        return LineRemoved(self._touched(at, lines=tuple(x for x in self.lines if x.line_id != line_id)), line_id)

    def freeze(self, checkout_id: str, at: datetime) -> StatusChanged | Unchanged:
        """Hold the cart, with the lines it has now, for one checkout; asking again for the same checkout
        answers the same (the saga may resend, or resume after a restart)."""
        if self.status == CartStatus.FROZEN and self.frozen_by == checkout_id:
            return Unchanged(self)
        ensure_open(self.status, self.order_id)  # frozen by another checkout: cart_frozen
        if not self.lines:
            raise Rejection(ErrorCode.PARAMETER_INVALID, "the cart has no lines to check out", "cart_id")
        return StatusChanged(self._touched(at, status=CartStatus.FROZEN, frozen_by=checkout_id))

    def release(self, checkout_id: str, at: datetime) -> StatusChanged | Unchanged:
        """Give the cart back to the shopper, if this checkout still holds it (otherwise there is nothing to do)."""
        if self.status == CartStatus.FROZEN and self.frozen_by == checkout_id:
            return StatusChanged(self._touched(at, status=CartStatus.OPEN, frozen_by=None))
        return Unchanged(self)

    def complete(self, checkout_id: str, order_id: str, at: datetime) -> StatusChanged | Unchanged:
        """The checkout became order `order_id`; a cart checked out already keeps the order it became."""
        if self.status == CartStatus.CHECKED_OUT:
            return Unchanged(self)
        return StatusChanged(self._touched(at, status=CartStatus.CHECKED_OUT, order_id=order_id, frozen_by=checkout_id))


def customer_cart(cart: Cart | None, cart_id: str, customer_id: str) -> Cart:
    """The customer's own cart: another customer's cart is as invisible as one that does not exist."""
    if cart is None or cart.customer_id != customer_id:
        raise Rejection(ErrorCode.RESOURCE_MISSING, f"no cart {cart_id}", "cart_id")
    return cart


def existing_cart(cart: Cart | None, cart_id: str) -> Cart:
    if cart is None:
        raise Rejection(ErrorCode.RESOURCE_MISSING, f"no cart {cart_id}", "cart_id")
    return cart
