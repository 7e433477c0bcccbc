"""Invoices and payments (orders owns them): queries on `orders.commands.v1`, events on `invoices.events.v1`.

An invoice is issued per fulfilment, for what it shipped: each line's subtotal, tax and total are the order
line's in proportion to the quantity shipped, and the invoice that ships the last of a line takes the
remainder, so a line's invoices add up exactly to the order line (docs/credit.md). Every change of an invoice is
exactly one event on `invoices.events.v1` (key: invoice id) carrying the invoice as it is after the change,
with aggregate_version = the invoice's version (InvoiceIssued is 1). PaymentUnapplied is keyed by the bill-to
account and is not a version of any invoice (aggregate_id: the payment id, version 1).
"""

from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, Field

from .base import Message
from .fields import (BaseQuantity, CartLineId, Code, Currency, CustomerId, InvoiceId, InvoiceNumber, Minor, OrderId,
                     OrderNumber, PositiveMinor, ReservationId, Sku, Terms, Uom)
from .money import TaxCategory


class InvoiceStatus(StrEnum):
    OPEN = "open"
    PAID = "paid"
    VOID = "void"


class InvoiceLine(Message):
    line_id: CartLineId  # the order line's
    sku: Sku
    base_uom: Uom
    quantity: BaseQuantity  # base units shipped by this invoice's fulfilment
    unit_price: Minor
    subtotal: Minor
    tax_category: TaxCategory
    tax_rate_bp: int
    tax: Minor
    total: Minor


class InvoiceView(Message):
    type: Literal["InvoiceView"] = "InvoiceView"
    invoice_id: InvoiceId
    invoice_number: InvoiceNumber
    order_id: OrderId
    order_number: OrderNumber | None = None
    customer_id: CustomerId  # the buyer whose order it is
    bill_to_id: CustomerId  # the account that pays
    fulfilment_id: Code
    status: Literal["open", "paid", "void"]
    terms: Terms
    currency: Currency
    subtotal: Minor
    tax: Minor
    total: Minor
    amount_paid: Minor
    amount_due: Minor  # total − amount_paid; 0 once paid or void
    overdue: bool = False  # past due_at and unpaid (set by orders' sweep, with InvoiceOverdue)
    lines: list[InvoiceLine]
    issued_at: AwareDatetime  # the fulfilment's shipped_at
    due_at: AwareDatetime | None = None  # net_<days>: issue + days; cod: the delivery's time, once recorded
    paid_at: AwareDatetime | None = None
    voided_at: AwareDatetime | None = None


class GetInvoice(Message):
    type: Literal["GetInvoice"] = "GetInvoice"
    invoice_id: InvoiceId
    customer_id: CustomerId | None = None  # the token's customer: another's invoice is not found


class ListInvoices(Message):
    """A customer's invoices (those of its own orders), newest first, after `starting_after` when given."""

    type: Literal["ListInvoices"] = "ListInvoices"
    customer_id: CustomerId
    limit: int = Field(default=10, ge=1, le=100)
    starting_after: InvoiceId | None = None
    status: Literal["open", "paid", "void"] | None = None
    order_id: OrderId | None = None


class InvoiceList(Message):
    type: Literal["InvoiceList"] = "InvoiceList"
    invoices: list[InvoiceView]
    has_more: bool


# ---- events on invoices.events.v1 ------------------------------------------------------------------------

class InvoiceIssued(Message):
    """A fulfilment issued this invoice. Credit captures `invoice.total` of the order's reservation with it: the
    reservation's share becomes a receivable (docs/credit.md, "Capture")."""

    type: Literal["InvoiceIssued"] = "InvoiceIssued"
    invoice: InvoiceView
    reservation_id: ReservationId | None = None


class InvoiceDueDateSet(Message):
    """A cod invoice's delivery was recorded: it is due now (`invoice.due_at`)."""

    type: Literal["InvoiceDueDateSet"] = "InvoiceDueDateSet"
    invoice: InvoiceView


class PaymentApplied(Message):
    """`amount` of payment `payment_id` went to this invoice; `source` says whether it came from the payment when
    it was recorded, or later from the account's unapplied credit (what PaymentUnapplied left)."""

    type: Literal["PaymentApplied"] = "PaymentApplied"
    payment_id: Code
    invoice_id: InvoiceId
    amount: PositiveMinor
    bill_to_id: CustomerId
    source: Literal["payment", "unapplied"] = "payment"
    invoice: InvoiceView


class InvoicePaid(Message):
    type: Literal["InvoicePaid"] = "InvoicePaid"
    invoice: InvoiceView


class InvoiceVoided(Message):
    """The order was cancelled: the invoice stays, void, with nothing due."""

    type: Literal["InvoiceVoided"] = "InvoiceVoided"
    invoice: InvoiceView


class InvoiceOverdue(Message):
    type: Literal["InvoiceOverdue"] = "InvoiceOverdue"
    invoice: InvoiceView


class PaymentUnapplied(Message):
    """What a payment left after every invoice it could pay: the account's unapplied credit, used by the next
    invoice issued (as PaymentApplied with source `unapplied`)."""

    type: Literal["PaymentUnapplied"] = "PaymentUnapplied"
    payment_id: Code
    bill_to_id: CustomerId
    amount: PositiveMinor
    currency: Currency
