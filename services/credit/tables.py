"""The schema of the credit service's tables (Alembic compares migrations with it); every row carries tenant_id
and livemode, scoped by row-level security (libs/runtime/database.py). Handlers use the repositories."""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from libs.contracts.money import DEFAULT_CURRENCY
from libs.runtime.db import runtime_tables


class Base(SQLModel, registry=registry()):
    pass


class Account(Base, table=True):
    """Credit's copy of a customer (erp.customers.v1) and its limit (erp.credit_limits.v1), whichever came first."""

    __tablename__ = "accounts"
    __table_args__ = (sa.Index("accounts_by_customer", "customer_id"),)
    tenant_id: str = Field(primary_key=True)
    livemode: bool = Field(primary_key=True)
    customer_id: str = Field(primary_key=True)
    bill_to_id: str  # the account whose limit and exposure apply; itself when it bills itself
    terms: str = "cod"
    # None: no limit record has arrived, which counts as a limit of 0
    credit_limit: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    currency: str = DEFAULT_CURRENCY
    # False while only a limit record has arrived: bill_to_id is then a placeholder (itself)
    customer_known: bool = False
    # +1 per exposure change, = aggregate_version of its event on credit.events.v1 (docs/credit.md)
    version: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0"))


class Reservation(Base, table=True):
    """Credit held for one checkout; a released row with amount 0 is a tombstone that refuses a late reserve."""

    __tablename__ = "reservations"
    __table_args__ = (sa.Index("reservations_by_account", "tenant_id", "livemode", "bill_to_id", "status"),
                      sa.Index("reservations_holding_by_bill_to", "bill_to_id",
                               postgresql_where=sa.text("status = 'reserved' AND captured < amount")))
    reservation_id: str = Field(primary_key=True)
    tenant_id: str
    livemode: bool
    bill_to_id: str
    customer_id: str | None = None  # None only on a tombstone
    checkout_id: str | None = None  # None only on a tombstone
    amount: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    # what invoices of the order took (InvoiceIssued): held = amount − captured while reserved
    captured: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0"))
    currency: str | None = None  # None only on a tombstone
    status: str = "reserved"  # reserved | released
    created_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))
    released_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=True))


class InvoiceCopy(Base, table=True):
    """Credit's copy of one of orders' invoices (invoices.events.v1), as of its `version`; never read from orders."""

    __tablename__ = "invoice_copies"
    __table_args__ = (sa.Index("invoice_copies_by_id", "invoice_id"),
                      sa.Index("invoice_copies_open_by_bill_to", "bill_to_id", postgresql_where=sa.text("status = 'open'")))
    tenant_id: str = Field(primary_key=True)
    livemode: bool = Field(primary_key=True)
    invoice_id: str = Field(primary_key=True)
    bill_to_id: str
    invoice_number: str | None = None
    status: str  # open | paid | void
    total: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    amount_due: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    issued_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))
    due_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=True))
    overdue: bool = False
    version: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))  # the invoice's aggregate_version
    reservation_id: str | None = None
    # what its InvoiceIssued took from the reservation; NULL until that event is applied
    captured: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))


class UnappliedEntry(Base, table=True):
    """The unapplied-credit ledger: a payment's excess (+amount, invoice_id '') and each use of it by an invoice
    (−amount); one row per (payment, invoice), so a repeated event adds nothing."""

    __tablename__ = "unapplied_credit"
    __table_args__ = (sa.Index("unapplied_credit_by_bill_to", "bill_to_id", "payment_id"),)
    tenant_id: str = Field(primary_key=True)
    livemode: bool = Field(primary_key=True)
    payment_id: str = Field(primary_key=True)
    invoice_id: str = Field(primary_key=True)  # '' for the excess itself
    bill_to_id: str
    amount: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))  # + excess, − used by the invoice
    recorded_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))


metadata = Base.metadata
runtime = runtime_tables(metadata)
