"""The schema of the cart service's tables (Alembic compares migrations with it); every row carries tenant_id
and livemode, scoped by row-level security (libs/runtime/database.py). Handlers use the repositories."""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from libs.runtime.db import runtime_tables


class Base(SQLModel, registry=registry()):
    pass


def _bigint() -> sa.Column:
    """Quantities multiply into money, which is BIGINT everywhere (libs/contracts/fields.py)."""
    return sa.Column(sa.BigInteger, nullable=False)


class Product(Base, table=True):
    """The cart's copy of the catalog: just what unit conversion needs (from erp.products.v1)."""

    __tablename__ = "products"
    __table_args__ = (sa.Index("products_by_sku", "sku"),)  # the scope is not in the SQL: lookups by sku alone
    tenant_id: str = Field(primary_key=True)
    livemode: bool = Field(primary_key=True)
    sku: str = Field(primary_key=True)
    base_uom: str
    units: dict = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    active: bool = True


class Cart(Base, table=True):
    __tablename__ = "carts"
    id: str = Field(primary_key=True)
    tenant_id: str = Field(index=True)
    livemode: bool
    customer_id: str = Field(index=True)
    status: str = "open"  # open | frozen | checked_out
    version: int = 1
    frozen_by: str | None = None  # the checkout holding the cart
    order_id: str | None = None
    created_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))


class CartLine(Base, table=True):
    __tablename__ = "cart_lines"
    id: str = Field(primary_key=True)
    cart_id: str = Field(foreign_key="carts.id", index=True)
    tenant_id: str
    livemode: bool
    sku: str
    order_uom: str
    order_quantity: int = Field(sa_column=_bigint())
    factor: int = Field(sa_column=_bigint())
    base_uom: str
    base_quantity: int = Field(sa_column=_bigint())
    created_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))


metadata = Base.metadata
runtime = runtime_tables(metadata)
