"""Master data the ERP publishes on `erp.*.v1`. Upserts are idempotent: the newest record for an id wins.

Every field is one of `fields`' kinds; a record that breaks one, or has a field these models do not know,
goes to `<topic>.dlt` at once.
"""

from typing import Literal

from pydantic import Field

from .base import Record
from .fields import Code, Count, Currency, CustomerId, Minor, Name, Sku, Terms, Uom
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
