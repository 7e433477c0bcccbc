"""Cart commands and replies (`cart.commands.v1`, keyed by cart id)."""

from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, Field

from .base import Message
from .fields import (MAX_BASE_QUANTITY, BaseQuantity, CartId, CartLineId, CheckoutId, CustomerId, OrderId, ReservationId,
                     Sku, Uom)

__all__ = ["MAX_BASE_QUANTITY"]  # kept here too: the cart's rule, imported by the gateway and the cart service


class CartLine(Message):
    line_id: CartLineId
    sku: Sku
    order_uom: Uom
    order_quantity: BaseQuantity
    factor: BaseQuantity = Field(description="base units per order unit")
    base_uom: Uom
    base_quantity: BaseQuantity


class CartStatus(StrEnum):
    OPEN = "open"
    FROZEN = "frozen"  # held by one checkout
    CHECKED_OUT = "checked_out"


class CartView(Message):
    type: Literal["CartView"] = "CartView"
    cart_id: CartId
    customer_id: CustomerId
    status: Literal["open", "frozen", "checked_out"]
    version: int
    order_id: OrderId | None = None
    lines: list[CartLine]
    created_at: AwareDatetime
    updated_at: AwareDatetime


class CreateCart(Message):
    type: Literal["CreateCart"] = "CreateCart"
    cart_id: CartId
    customer_id: CustomerId


class GetCart(Message):
    """With `then_price`, the cart does not answer: it hands its view to pricing (`PriceCart`) on the asker's
    reply_to and correlation, and pricing answers with `CartPriced` — one hop fewer than asking both."""

    type: Literal["GetCart"] = "GetCart"
    cart_id: CartId
    customer_id: CustomerId
    then_price: bool = False


class AddLine(Message):
    """Either `quantity` in base units, or `order_uom` + `order_quantity` converted to base units."""

    type: Literal["AddLine"] = "AddLine"
    cart_id: CartId
    customer_id: CustomerId
    line_id: CartLineId
    sku: Sku
    quantity: BaseQuantity | None = None
    order_uom: Uom | None = None
    order_quantity: BaseQuantity | None = None
    expected_version: int | None = None


class ChangeLine(Message):
    type: Literal["ChangeLine"] = "ChangeLine"
    cart_id: CartId
    customer_id: CustomerId
    line_id: CartLineId
    quantity: BaseQuantity | None = None
    order_quantity: BaseQuantity | None = None
    expected_version: int | None = None


class RemoveLine(Message):
    type: Literal["RemoveLine"] = "RemoveLine"
    cart_id: CartId
    customer_id: CustomerId
    line_id: CartLineId
    expected_version: int | None = None


class CheckoutContinuation(Message):
    """What the steps after freezing need, so each step hands the checkout on instead of answering the saga
    (docs/architecture.md, "The checkout saga"): the reservation credit will hold and the account it bills."""

    reservation_id: ReservationId
    bill_to_id: CustomerId


class FreezeCart(Message):
    """Freeze the cart for one checkout. With `then`, the cart does not answer with `CartFrozen`: it sends
    `PriceCheckout` to pricing on the saga's reply_to and correlation (a failure is still answered)."""

    type: Literal["FreezeCart"] = "FreezeCart"
    cart_id: CartId
    customer_id: CustomerId
    checkout_id: CheckoutId
    then: CheckoutContinuation | None = None


class CartFrozen(Message):
    type: Literal["CartFrozen"] = "CartFrozen"
    cart_id: CartId
    checkout_id: CheckoutId
    customer_id: CustomerId
    version: int
    lines: list[CartLine]


class CompleteCart(Message):
    type: Literal["CompleteCart"] = "CompleteCart"
    cart_id: CartId
    checkout_id: CheckoutId
    order_id: OrderId


class CartCompleted(Message):
    type: Literal["CartCompleted"] = "CartCompleted"
    cart_id: CartId
    checkout_id: CheckoutId
    order_id: OrderId


class ReleaseCart(Message):
    type: Literal["ReleaseCart"] = "ReleaseCart"
    cart_id: CartId
    checkout_id: CheckoutId


class CartReleased(Message):
    type: Literal["CartReleased"] = "CartReleased"
    cart_id: CartId
    checkout_id: CheckoutId
