"""Cart commands and replies (`cart.commands.v1`, keyed by cart id)."""

from typing import Literal

from pydantic import AwareDatetime, Field

from .base import Message, Sku, Uom

MAX_BASE_QUANTITY = 1_000_000


class CartLine(Message):
    line_id: str
    sku: Sku
    order_uom: Uom
    order_quantity: int
    factor: int = Field(description="base units per order unit")
    base_uom: Uom
    base_quantity: int


class CartView(Message):
    type: Literal["CartView"] = "CartView"
    cart_id: str
    customer_id: str
    status: Literal["open", "frozen", "checked_out"]
    version: int
    order_id: str | None = None
    lines: list[CartLine]
    created_at: AwareDatetime
    updated_at: AwareDatetime


class CreateCart(Message):
    type: Literal["CreateCart"] = "CreateCart"
    cart_id: str
    customer_id: str


class GetCart(Message):
    type: Literal["GetCart"] = "GetCart"
    cart_id: str
    customer_id: str


class AddLine(Message):
    """Either `quantity` in base units, or `order_uom` + `order_quantity` converted to base units."""

    type: Literal["AddLine"] = "AddLine"
    cart_id: str
    customer_id: str
    line_id: str
    sku: Sku
    quantity: int | None = None
    order_uom: Uom | None = None
    order_quantity: int | None = None
    expected_version: int | None = None


class ChangeLine(Message):
    type: Literal["ChangeLine"] = "ChangeLine"
    cart_id: str
    customer_id: str
    line_id: str
    quantity: int | None = None
    order_quantity: int | None = None
    expected_version: int | None = None


class RemoveLine(Message):
    type: Literal["RemoveLine"] = "RemoveLine"
    cart_id: str
    customer_id: str
    line_id: str
    expected_version: int | None = None


class FreezeCart(Message):
    type: Literal["FreezeCart"] = "FreezeCart"
    cart_id: str
    customer_id: str
    checkout_id: str


class CartFrozen(Message):
    type: Literal["CartFrozen"] = "CartFrozen"
    cart_id: str
    checkout_id: str
    customer_id: str
    version: int
    lines: list[CartLine]


class CompleteCart(Message):
    type: Literal["CompleteCart"] = "CompleteCart"
    cart_id: str
    checkout_id: str
    order_id: str


class CartCompleted(Message):
    type: Literal["CartCompleted"] = "CartCompleted"
    cart_id: str
    checkout_id: str
    order_id: str


class ReleaseCart(Message):
    type: Literal["ReleaseCart"] = "ReleaseCart"
    cart_id: str
    checkout_id: str


class CartReleased(Message):
    type: Literal["CartReleased"] = "CartReleased"
    cart_id: str
    checkout_id: str


