"""The schema of the pricing service's tables (Alembic compares migrations with it); every row carries tenant_id
and livemode, scoped by row-level security (libs/runtime/database.py). Handlers use the repositories."""

import sqlalchemy as sa
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from libs.runtime.db import runtime_tables


class Base(SQLModel, registry=registry()):
    pass


class Product(Base, table=True):
    """The catalog, as the ERP publishes it on erp.products.v1."""

    __tablename__ = "products"
    __table_args__ = (sa.Index("products_by_sku", "sku"),)
    tenant_id: str = Field(primary_key=True)
    livemode: bool = Field(primary_key=True)
    sku: str = Field(primary_key=True)
    name: str
    base_uom: str
    units: dict = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    tax_category: str
    active: bool = True


class Price(Base, table=True):
    """A price per base unit (erp.prices.v1): customer-specific, a price list's, or the list price (neither set)."""

    __tablename__ = "prices"
    __table_args__ = (sa.Index("prices_by_sku", "sku"),)
    tenant_id: str = Field(primary_key=True)
    livemode: bool = Field(primary_key=True)
    price_id: str = Field(primary_key=True)
    sku: str
    customer_id: str | None = None
    price_list_id: str | None = None
    unit_amount: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    currency: str
    min_quantity: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))  # compared with quantities
    active: bool = True


class Customer(Base, table=True):
    """Only what pricing needs of a customer (erp.customers.v1): which price list applies."""

    __tablename__ = "customers"
    __table_args__ = (sa.Index("customers_by_id", "customer_id"),)
    tenant_id: str = Field(primary_key=True)
    livemode: bool = Field(primary_key=True)
    customer_id: str = Field(primary_key=True)
    price_list_id: str | None = None


metadata = Base.metadata
runtime = runtime_tables(metadata)
