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
    order_prefix: str | None = None  # the latest PlaceOrder's (the tenant's), for the order number
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
        sa.Index("orders_number", "tenant_id", "livemode", "order_number", unique=True),
        sa.Index("orders_by_number", "order_number"),
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
    order_number: str | None = None  # `<prefix>-NNNNNN` (None: an order from before numbers)
    order_prefix: str | None = None  # its invoices are numbered `<prefix>-INV-NNNNNN`
    reservation_id: str | None = None  # the credit reservation it holds
    status_transitions: list | None = Field(default=None, sa_column=sa.Column(sa.JSON))
    # the fulfilments (FulfilmentView, each with the digest of the record that made it), oldest first
    fulfilments: list | None = Field(default=None, sa_column=sa.Column(sa.JSON))
    cancellation_reason: str | None = None
    cancelled_by: str | None = None  # customer | merchant


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
    quantity_fulfilled: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False,
                                                                   server_default="0"))
    # what the line's invoices bill so far: the invoice that completes the line takes the remainder
    invoiced_subtotal: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0"))
    invoiced_tax: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0"))


class Invoice(Base, table=True):
    """One invoice per fulfilment (services/orders/invoicing.py); never deleted (a cancelled order's is void)."""

    __tablename__ = "invoices"
    __table_args__ = (
        sa.Index("invoices_number", "tenant_id", "livemode", "invoice_number", unique=True),
        sa.Index("invoices_by_order", "order_id"),
        sa.Index("invoices_by_customer", "customer_id", "id"),
        sa.Index("invoices_open_by_bill_to", "bill_to_id", postgresql_where=sa.text("status = 'open'")),
        sa.Index("invoices_to_sweep", "due_at", postgresql_where=sa.text("status = 'open' AND NOT overdue")),
    )
    id: str = Field(primary_key=True)
    tenant_id: str
    livemode: bool
    invoice_number: str
    order_id: str
    order_number: str | None = None
    customer_id: str
    bill_to_id: str
    fulfilment_id: str
    reservation_id: str | None = None
    status: str  # open | paid | void
    terms: str
    currency: str
    subtotal: int = Field(sa_column=_bigint())
    tax: int = Field(sa_column=_bigint())
    total: int = Field(sa_column=_bigint())
    amount_paid: int = Field(sa_column=_bigint())
    amount_due: int = Field(sa_column=_bigint())
    overdue: bool = False
    lines: list = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    issued_at: datetime = Field(sa_column=_ts())
    due_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    paid_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    voided_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    version: int


class Payment(Base, table=True):
    """A payment the ERP recorded, allocated once; `remaining` is what it left unapplied (the account's credit)."""

    __tablename__ = "payments"
    __table_args__ = (
        sa.Index("payments_unapplied", "bill_to_id", "received_at", postgresql_where=sa.text("remaining > 0")),
    )
    tenant_id: str = Field(primary_key=True)
    livemode: bool = Field(primary_key=True)
    payment_id: str = Field(primary_key=True)
    bill_to_id: str
    amount: int = Field(sa_column=_bigint())
    currency: str
    invoice_id: str | None = None
    received_at: datetime = Field(sa_column=_ts())
    method: str
    reference: str | None = None
    digest: str  # of the record: the same id with another digest is a conflict
    remaining: int = Field(sa_column=_bigint())
    created_at: datetime = Field(sa_column=_ts())


class Counter(Base, table=True):
    """Per tenant and mode, the next order or invoice number (gaps allowed: a rolled-back number is not reused)."""

    __tablename__ = "counters"
    tenant_id: str = Field(primary_key=True)
    livemode: bool = Field(primary_key=True)
    kind: str = Field(primary_key=True)  # order | invoice
    next: int = Field(sa_column=_bigint())


metadata = Base.metadata
runtime = runtime_tables(metadata)
