"""The schema of the orders service's tables (Alembic compares migrations with it); every row carries tenant_id
and livemode, scoped by row-level security (libs/runtime/database.py). Handlers use the repositories."""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from libs.runtime.db import runtime_tables


class Base(SQLModel, registry=registry()):
    pass


def _ts(nullable: bool = False) -> sa.Column:
    return sa.Column(sa.DateTime(timezone=True), nullable=nullable)


def _bigint() -> sa.Column:
    """Money and the quantities that multiply into it: up to 10**15 minor units (libs/contracts/fields.py)."""
    return sa.Column(sa.BigInteger, nullable=False)


class Customer(Base, table=True):
    """Orders' copy of the customer: who is billed and on what terms (from erp.customers.v1)."""

    __tablename__ = "customers"
    __table_args__ = (sa.Index("customers_by_customer", "customer_id"),)
    tenant_id: str = Field(primary_key=True)
    livemode: bool = Field(primary_key=True)
    customer_id: str = Field(primary_key=True)
    bill_to_id: str
    terms: str


class Checkout(Base, table=True):
    """One checkout saga, persisted so that a restart resumes or compensates it."""

    __tablename__ = "checkouts"
    __table_args__ = (
        sa.Index("checkouts_idempotency", "tenant_id", "livemode", "idempotency_key", unique=True,
                 postgresql_where=sa.text("idempotency_key IS NOT NULL")),
        # one saga at a time may hold a cart; scoped, so another tenant naming the same cart id cannot block it
        sa.Index("checkouts_active_cart", "tenant_id", "livemode", "cart_id", unique=True,
                 postgresql_where=sa.text("state IN ('freezing', 'pricing', 'reserving')")),
        sa.Index("checkouts_deadline", "step_deadline",
                 postgresql_where=sa.text("state IN ('freezing', 'pricing', 'reserving')")),
        # lookups by business key (the scope is not in the SQL: row-level security adds it)
        sa.Index("checkouts_by_key", "idempotency_key", postgresql_where=sa.text("idempotency_key IS NOT NULL")),
        sa.Index("checkouts_active_by_cart", "cart_id",
                 postgresql_where=sa.text("state IN ('freezing', 'pricing', 'reserving')")),
    )
    id: str = Field(primary_key=True)
    tenant_id: str
    livemode: bool
    cart_id: str
    customer_id: str
    idempotency_key: str | None = None
    notes: str | None = None
    po_number: str | None = None
    # services/orders/domain.py CheckoutState: freezing (awaiting CheckoutPriced and credit) → reserving (priced,
    # awaiting credit) | pricing (credit reserved, awaiting priced) → confirmed | rejected | failed; expired
    # (timed out, compensated) may start again
    state: str
    attempt: int = 1
    bill_to_id: str  # orders' copy of the customer's bill-to, fixed at PlaceOrder: the reservation is asked on it
    terms: str
    reservation_id: str  # this attempt's
    # CheckoutPriced, once received: the frozen lines and LinesPriced
    frozen_lines: list | None = Field(default=None, sa_column=sa.Column(sa.JSON))
    priced: dict | None = Field(default=None, sa_column=sa.Column(sa.JSON))
    # CreditReserved, once received: the account credit charged, and the amount
    reserved_bill_to_id: str | None = None
    reserved_amount: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    order_id: str | None = None
    result: dict | None = Field(default=None, sa_column=sa.Column(sa.JSON))  # the final reply payload
    reply_to: str | None = None
    reply_correlation_id: str | None = None
    request_id: str | None = None
    step_deadline: datetime = Field(sa_column=_ts())
    created_at: datetime = Field(sa_column=_ts())
    updated_at: datetime = Field(sa_column=_ts())


class Order(Base, table=True):
    __tablename__ = "orders"
    __table_args__ = (
        sa.Index("orders_cart", "tenant_id", "livemode", "cart_id", unique=True),  # one cart, at most one order
        sa.Index("orders_by_cart", "cart_id"),
        sa.Index("orders_by_customer", "customer_id", "id"),
    )
    id: str = Field(primary_key=True)
    tenant_id: str
    livemode: bool
    cart_id: str
    checkout_id: str
    customer_id: str
    bill_to_id: str
    terms: str
    status: str = "confirmed"
    channel: str = "ECOMMERCE"
    currency: str
    subtotal: int = Field(sa_column=_bigint())
    tax: int = Field(sa_column=_bigint())
    total: int = Field(sa_column=_bigint())
    notes: str | None = None
    po_number: str | None = None
    version: int = 1
    created_at: datetime = Field(sa_column=_ts())


class OrderLine(Base, table=True):
    """What was asked and what was settled, kept as it was at checkout."""

    __tablename__ = "order_lines"
    id: str = Field(primary_key=True)
    order_id: str = Field(foreign_key="orders.id", index=True)
    tenant_id: str
    livemode: bool
    position: int
    line_id: str
    sku: str
    order_uom: str
    order_quantity: int = Field(sa_column=_bigint())
    factor: int = Field(sa_column=_bigint())
    base_uom: str
    base_quantity: int = Field(sa_column=_bigint())
    unit_price: int = Field(sa_column=_bigint())
    price_source: str
    subtotal: int = Field(sa_column=_bigint())
    tax_category: str
    tax_rate_bp: int
    tax: int = Field(sa_column=_bigint())
    total: int = Field(sa_column=_bigint())


metadata = Base.metadata
runtime = runtime_tables(metadata)
