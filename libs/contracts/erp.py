"""Records the ERP publishes on `erp.*.v1`: master data (upserts, idempotent: the newest record for an id wins)
and lifecycle facts (fulfilments, deliveries, cancellations, payments: each applied once; the same record again
changes nothing, the same id with other content goes to `<topic>.dlt` as `record_conflict`).

Every field is one of `fields`' kinds; a record that breaks one, or has a field these models do not know,
goes to `<topic>.dlt` at once.
"""

from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, Field

from .base import Record
from .fields import (BaseQuantity, CartLineId, Code, Count, Currency, CustomerId, InvoiceId, Minor, Name, Notes,
                     OrderId, PositiveMinor, Sku, Terms, Uom)
from .money import TaxCategory


class CustomerUpsert(Record):
    type: Literal["CustomerUpsert"] = "CustomerUpsert"
    customer_id: CustomerId
    name: Name
    active: bool = True
    bill_to_id: CustomerId | None = Field(default=None, description="parent account billed; None bills itself")
    terms: Terms = "cod"
    price_list_id: Code | None = None


class ProductUpsert(Record):
    type: Literal["ProductUpsert"] = "ProductUpsert"
    sku: Sku
    name: Name
    base_uom: Uom
    units: dict[Uom, Count] = Field(default_factory=dict, description="alternate unit → how many base units it holds")
    tax_category: TaxCategory = TaxCategory.STANDARD
    active: bool = True


class PriceUpsert(Record):
    """A price per base unit: customer-specific, a price list's, or (neither set) the list price."""

    type: Literal["PriceUpsert"] = "PriceUpsert"
    price_id: Code
    sku: Sku
    unit_amount: Minor
    currency: Currency = "JMD"
    customer_id: CustomerId | None = None
    price_list_id: Code | None = None
    min_quantity: Count = Field(default=1, description="quantity break, in base units")
    active: bool = True


class CreditLimitUpsert(Record):
    type: Literal["CreditLimitUpsert"] = "CreditLimitUpsert"
    customer_id: CustomerId = Field(description="the account the limit applies to (a bill-to account)")
    limit: Minor
    currency: Currency = "JMD"


# ---- lifecycle facts (orders applies them) ------------------------------------------------------------------

class FulfilmentLine(Record):
    line_id: CartLineId = Field(description="the order line's id (the cart line it came from)")
    quantity: BaseQuantity = Field(description="base units shipped")


class FulfilmentRecorded(Record):
    """`erp.fulfilments.v1` (key: order id): a shipment; it issues an invoice for what it shipped."""

    type: Literal["FulfilmentRecorded"] = "FulfilmentRecorded"
    fulfilment_id: Code
    order_id: OrderId
    lines: list[FulfilmentLine] = Field(min_length=1, max_length=500)
    shipped_at: AwareDatetime
    carrier: Name | None = None
    tracking_number: Code | None = None


class DeliveryRecorded(Record):
    """`erp.deliveries.v1` (key: order id): one fulfilment delivered, or (no fulfilment_id) all shipped so far."""

    type: Literal["DeliveryRecorded"] = "DeliveryRecorded"
    order_id: OrderId
    fulfilment_id: Code | None = None
    delivered_at: AwareDatetime


class OrderCancellationRecorded(Record):
    """`erp.order_cancellations.v1` (key: order id): the merchant's cancel."""

    type: Literal["OrderCancellationRecorded"] = "OrderCancellationRecorded"
    order_id: OrderId
    reason: Notes


class PaymentMethod(StrEnum):
    CASH = "cash"
    CHEQUE = "cheque"
    BANK_TRANSFER = "bank_transfer"
    CARD = "card"
    OTHER = "other"


class PaymentRecorded(Record):
    """`erp.payments.v1` (key: bill-to account id): money received, allocated once by orders."""

    type: Literal["PaymentRecorded"] = "PaymentRecorded"
    payment_id: Code
    customer_id: CustomerId = Field(description="the bill-to account that paid")
    amount: PositiveMinor
    currency: Currency
    invoice_id: InvoiceId | None = None
    received_at: AwareDatetime
    method: PaymentMethod
    reference: Code | None = None
