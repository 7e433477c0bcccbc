"""Orders commands, replies and events (`orders.commands.v1`, `orders.events.v1`)."""

from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, Field

from .base import Message
from .fields import (BaseQuantity, CartId, CartLineId, Currency, CustomerId, Minor, Notes, OrderId, PoNumber,
                     Shortfall, SignedMinor, Sku, Terms, Token, Uom)
from .money import TaxCategory
from .pricing import PriceSource


class OrderStatus(StrEnum):
    """An order's status; `OrderView.status` carries these values (a Literal, so the v1 schema is unchanged)."""

    CONFIRMED = "confirmed"
    FULFILLED = "fulfilled"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


class PlaceOrder(Message):
    type: Literal["PlaceOrder"] = "PlaceOrder"
    cart_id: CartId
    customer_id: CustomerId
    idempotency_key: Token | None = None
    notes: Notes | None = None
    po_number: PoNumber | None = None


class OrderLine(Message):
    line_id: CartLineId
    sku: Sku
    order_uom: Uom
    order_quantity: BaseQuantity
    factor: BaseQuantity
    base_uom: Uom
    base_quantity: BaseQuantity
    unit_price: Minor
    price_source: PriceSource
    subtotal: Minor
    tax_category: TaxCategory
    tax_rate_bp: int
    tax: Minor
    total: Minor


class OrderView(Message):
    type: Literal["OrderView"] = "OrderView"
    order_id: OrderId
    cart_id: CartId
    customer_id: CustomerId
    bill_to_id: CustomerId
    status: Literal["confirmed", "fulfilled", "delivered", "cancelled"]
    channel: Literal["ECOMMERCE"] = "ECOMMERCE"
    terms: Terms
    currency: Currency
    subtotal: Minor
    tax: Minor
    total: Minor
    notes: Notes | None
    po_number: PoNumber | None
    lines: list[OrderLine]
    created_at: AwareDatetime


class OverCreditLimit(Message):
    """Checkout's answer when credit refused: a state the storefront shows, not a crash."""

    type: Literal["OverCreditLimit"] = "OverCreditLimit"
    cart_id: CartId
    limit: Minor
    exposure: Minor
    available: SignedMinor
    order_total: Minor
    shortfall: Shortfall
    currency: Currency


class GetOrder(Message):
    type: Literal["GetOrder"] = "GetOrder"
    order_id: OrderId
    customer_id: CustomerId | None = None


class ListOrders(Message):
    """A customer's orders, newest first, after `starting_after` (an order id) when given."""

    type: Literal["ListOrders"] = "ListOrders"
    customer_id: CustomerId
    limit: int = Field(default=10, ge=1, le=100)
    starting_after: OrderId | None = None


class OrderList(Message):
    type: Literal["OrderList"] = "OrderList"
    orders: list[OrderView]
    has_more: bool


class OrderConfirmed(Message):
    type: Literal["OrderConfirmed"] = "OrderConfirmed"
    order: OrderView
