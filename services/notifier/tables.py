"""The schema of the notifier's tables (Alembic compares migrations with it); every row carries tenant_id and
livemode, scoped by row-level security (libs/runtime/database.py). Handlers use the repository."""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from libs.runtime.db import runtime_tables


class Base(SQLModel, registry=registry()):
    pass


class Event(Base, table=True):
    """An event as subscribers will see it (`evt_…`), kept for /v1/events and webhook deliveries."""

    __tablename__ = "events"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "livemode", "aggregate_id", "aggregate_version", "type"),)
    id: str = Field(primary_key=True)
    tenant_id: str = Field(index=True)
    livemode: bool
    type: str
    aggregate_id: str
    aggregate_version: int
    data: dict = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    occurred_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))
    received_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))


metadata = Base.metadata
runtime = runtime_tables(metadata)
