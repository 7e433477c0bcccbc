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


class Reservation(Base, table=True):
    """Credit held for one checkout; a released row with amount 0 is a tombstone that refuses a late reserve."""

    __tablename__ = "reservations"
    __table_args__ = (sa.Index("reservations_by_account", "tenant_id", "livemode", "bill_to_id", "status"),
                      sa.Index("reservations_open_by_bill_to", "bill_to_id", postgresql_where=sa.text("status = 'reserved'")))
    reservation_id: str = Field(primary_key=True)
    tenant_id: str
    livemode: bool
    bill_to_id: str
    customer_id: str | None = None  # None only on a tombstone
    checkout_id: str | None = None  # None only on a tombstone
    amount: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    currency: str | None = None  # None only on a tombstone
    status: str = "reserved"  # reserved | released
    created_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))
    released_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=True))


metadata = Base.metadata
runtime = runtime_tables(metadata)
