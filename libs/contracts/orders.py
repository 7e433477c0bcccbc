"""Orders commands, replies and events (`orders.commands.v1`, `orders.events.v1`)."""

from typing import Literal

from pydantic import AwareDatetime, Field

from .base import Currency, Message, Minor, Sku, Uom
from .money import TaxCategory
from .pricing import PriceSource


class PlaceOrder(Message):
    type: Literal["PlaceOrder"] = "PlaceOrder"
    cart_id: str
    customer_id: str
    idempotency_key: str | None = Field(default=None, max_length=255)
    notes: str | None = Field(default=None, max_length=2000)
    po_number: str | None = Field(default=None, max_length=100)


class OrderLine(Message):
    line_id: str
    sku: Sku
    order_uom: Uom
    order_quantity: int
    factor: int
    base_uom: Uom
    base_quantity: int
    unit_price: Minor
    price_source: PriceSource
    subtotal: Minor
    tax_category: TaxCategory
    tax_rate_bp: int
    tax: Minor
    total: Minor


class OrderView(Message):
    type: Literal["OrderView"] = "OrderView"
    order_id: str
    cart_id: str
    customer_id: str
    bill_to_id: str
    status: Literal["confirmed", "fulfilled", "delivered", "cancelled"]
    channel: Literal["ECOMMERCE"] = "ECOMMERCE"
    terms: str
    currency: Currency
    subtotal: Minor
    tax: Minor
    total: Minor
    notes: str | None
    po_number: str | None
    lines: list[OrderLine]
    created_at: AwareDatetime


class OverCreditLimit(Message):
    """Checkout's answer when credit refused: a state the storefront shows, not a crash."""

    type: Literal["OverCreditLimit"] = "OverCreditLimit"
    cart_id: str
    limit: Minor
    exposure: Minor
    available: int
    order_total: Minor
    shortfall: Minor
    currency: Currency


class GetOrder(Message):
    type: Literal["GetOrder"] = "GetOrder"
    order_id: str
    customer_id: str | None = None


class ListOrders(Message):
    """A customer's orders, newest first, after `starting_after` (an order id) when given."""

    type: Literal["ListOrders"] = "ListOrders"
    customer_id: str
    limit: int = Field(default=10, ge=1, le=100)
    starting_after: str | None = None


class OrderList(Message):
    type: Literal["OrderList"] = "OrderList"
    orders: list[OrderView]
    has_more: bool


class OrderConfirmed(Message):
    type: Literal["OrderConfirmed"] = "OrderConfirmed"
    order: OrderView
