"""Orders commands, replies and events (`orders.commands.v1`, `orders.events.v1`)."""

from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, Field

from .base import Message
from .fields import (BaseQuantity, CartId, CartLineId, Code, Currency, CustomerId, InvoiceId, Minor, Name, Notes,
                     OrderId, OrderNumber, OrderPrefix, PoNumber, Quantity0, ReservationId, Shortfall, SignedMinor,
                     Sku, Terms, Token, Uom)
from .money import TaxCategory
from .pricing import PriceSource


class OrderStatus(StrEnum):
    """An order's status; `OrderView.status` carries these values (a Literal, so the v1 schema is unchanged)."""

    CONFIRMED = "confirmed"
    PARTIALLY_FULFILLED = "partially_fulfilled"
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
    # the tenant's order-number prefix (the gateway knows the tenant); orders uses "ORD" when absent
    order_prefix: OrderPrefix | None = None


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
    quantity_fulfilled: Quantity0 = Field(default=0, description="base units shipped so far")


_STATUS = Literal["confirmed", "partially_fulfilled", "fulfilled", "delivered", "cancelled"]


class StatusTransition(Message):
    status: _STATUS
    at: AwareDatetime


class FulfilmentLineView(Message):
    line_id: CartLineId
    quantity: BaseQuantity


class FulfilmentView(Message):
    """One shipment the ERP recorded, and the invoice it issued."""

    fulfilment_id: Code
    lines: list[FulfilmentLineView]
    shipped_at: AwareDatetime
    carrier: Name | None = None
    tracking_number: Code | None = None
    delivered_at: AwareDatetime | None = None
    invoice_id: InvoiceId | None = None


class OrderView(Message):
    type: Literal["OrderView"] = "OrderView"
    order_id: OrderId
    cart_id: CartId
    customer_id: CustomerId
    bill_to_id: CustomerId
    status: _STATUS
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
    order_number: OrderNumber | None = None  # None only on an order of a version before numbers
    status_transitions: list[StatusTransition] = Field(default_factory=list, description="oldest first")
    fulfilments: list[FulfilmentView] = Field(default_factory=list, description="oldest first")
    cancellation_reason: Notes | None = None
    cancelled_by: Literal["customer", "merchant"] | None = None
    reservation_id: ReservationId | None = None  # the credit reservation the order holds (for credit's capture)


class OpenInvoice(Message):
    """An unpaid invoice, as credit knows it: what the shopper may pay to free credit."""

    invoice_id: InvoiceId
    invoice_number: str | None = None
    amount_due: Minor
    due_at: AwareDatetime | None = None
    overdue: bool = False


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
    # remedies: the largest order that fits now, and the oldest-first run of open invoices whose payment covers
    # the shortfall (all of them when even that does not)
    largest_order_total_that_fits: Minor | None = None
    open_invoices_to_pay: list[OpenInvoice] = Field(default_factory=list)


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
    order_number: OrderNumber | None = None


class CancelOrder(Message):
    """The shopper's cancel (orders.commands.v1, key: order id): answered with the cancelled OrderView, or a
    Failure `order_not_cancellable` (with `status`) once anything was fulfilled."""

    type: Literal["CancelOrder"] = "CancelOrder"
    order_id: OrderId
    customer_id: CustomerId
    reason: Notes | None = None


class OrderList(Message):
    type: Literal["OrderList"] = "OrderList"
    orders: list[OrderView]
    has_more: bool


class OrderConfirmed(Message):
    type: Literal["OrderConfirmed"] = "OrderConfirmed"
    order: OrderView


# The order's lifecycle on orders.events.v1 (key: order id). Every change of an order is exactly one of these
# events, with aggregate_version = the order's version after it (OrderConfirmed is 1), so a reader sees gaps.

class OrderPartiallyFulfilled(Message):
    type: Literal["OrderPartiallyFulfilled"] = "OrderPartiallyFulfilled"
    order: OrderView
    fulfilment_id: Code


class OrderFulfilled(Message):
    """The fulfilment that shipped the last of the order (earlier ones were OrderPartiallyFulfilled)."""

    type: Literal["OrderFulfilled"] = "OrderFulfilled"
    order: OrderView
    fulfilment_id: Code


class FulfilmentDelivered(Message):
    """A delivery of one fulfilment while others are still on their way (or not shipped yet)."""

    type: Literal["FulfilmentDelivered"] = "FulfilmentDelivered"
    order: OrderView
    fulfilment_id: Code


class OrderDelivered(Message):
    """Every fulfilment of a fulfilled order is delivered."""

    type: Literal["OrderDelivered"] = "OrderDelivered"
    order: OrderView


class OrderCancelled(Message):
    type: Literal["OrderCancelled"] = "OrderCancelled"
    order: OrderView
