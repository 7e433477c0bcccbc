"""Master data the ERP publishes on `erp.*.v1`. Upserts are idempotent: the newest record for an id wins."""

import re
from typing import Literal

from pydantic import Field, field_validator

from .base import Currency, Message, Minor, Sku, Uom
from .money import TaxCategory

TERMS_PATTERN = re.compile(r"^(cod|net_[1-9][0-9]{0,2})$")


class CustomerUpsert(Message):
    type: Literal["CustomerUpsert"] = "CustomerUpsert"
    customer_id: str = Field(pattern=r"^cus_[0-9A-Za-z]+$")
    name: str = Field(min_length=1, max_length=200)
    active: bool = True
    bill_to_id: str | None = Field(default=None, pattern=r"^cus_[0-9A-Za-z]+$", description="parent account billed; None bills itself")
    terms: str = Field(default="cod", description="`cod` or `net_<days>`")
    price_list_id: str | None = Field(default=None, max_length=64)

    @field_validator("terms")
    @classmethod
    def _terms(cls, v: str) -> str:
        if not TERMS_PATTERN.match(v):
            raise ValueError("terms must be 'cod' or 'net_<days>'")
        return v


class ProductUpsert(Message):
    type: Literal["ProductUpsert"] = "ProductUpsert"
    sku: Sku
    name: str = Field(min_length=1, max_length=200)
    base_uom: Uom
    units: dict[Uom, int] = Field(default_factory=dict, description="alternate unit → how many base units it holds")
    tax_category: TaxCategory = TaxCategory.STANDARD
    active: bool = True

    @field_validator("units")
    @classmethod
    def _units(cls, v: dict[str, int]) -> dict[str, int]:
        for uom, factor in v.items():
            if factor < 1:
                raise ValueError(f"unit {uom} must hold at least one base unit")
        return v


class PriceUpsert(Message):
    """A price per base unit: customer-specific, a price list's, or (neither set) the list price."""

    type: Literal["PriceUpsert"] = "PriceUpsert"
    price_id: str = Field(min_length=1, max_length=64)
    sku: Sku
    unit_amount: Minor
    currency: Currency = "JMD"
    customer_id: str | None = Field(default=None, pattern=r"^cus_[0-9A-Za-z]+$")
    price_list_id: str | None = Field(default=None, max_length=64)
    min_quantity: int = Field(default=1, ge=1, description="quantity break, in base units")
    active: bool = True


class CreditLimitUpsert(Message):
    type: Literal["CreditLimitUpsert"] = "CreditLimitUpsert"
    customer_id: str = Field(pattern=r"^cus_[0-9A-Za-z]+$", description="the account the limit applies to (a bill-to account)")
    limit: Minor
    currency: Currency = "JMD"
