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


class WebhookEndpoint(Base, table=True):
    """An endpoint (`we_…`, minted by the gateway); `leased_until`/`lease_owner`: the delivery worker that has an
    attempt to it in flight (one at a time per endpoint, across instances)."""

    __tablename__ = "webhook_endpoints"
    id: str = Field(primary_key=True)
    tenant_id: str = Field(index=True)
    livemode: bool
    url: str
    enabled_events: list[str] = Field(sa_column=sa.Column(sa.ARRAY(sa.Text), nullable=False))
    description: str | None = None
    status: str
    version: int
    created_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))
    failing_since: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True)))
    leased_until: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True)))
    lease_owner: str | None = None


class WebhookSecret(Base, table=True):
    """An endpoint's signing secret, sealed with AES-GCM (services/notifier/sealing.py): the database alone
    cannot sign. Rotation sets `expires_at` on the old ones."""

    __tablename__ = "webhook_secrets"
    id: str = Field(primary_key=True)
    tenant_id: str
    livemode: bool
    endpoint_id: str = Field(index=True)
    sealed: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    created_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True)))


class WebhookDelivery(Base, table=True):
    """One event owed to one endpoint: pending (due at next_attempt_at) until delivered, failed or cancelled."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "livemode", "endpoint_id", "event_id"),
                      sa.Index("webhook_deliveries_due", "endpoint_id", "next_attempt_at",
                               postgresql_where=sa.text("status = 'pending'")))
    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, sa.Identity(always=False),
                                                             primary_key=True))
    tenant_id: str
    livemode: bool
    endpoint_id: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    created_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))
    next_attempt_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True)))


class WebhookAttempt(Base, table=True):
    """One attempt (`wda_…`): what the endpoint answered, listed newest first per endpoint."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (sa.Index("webhook_attempts_endpoint", "endpoint_id", "id"),)
    id: str = Field(primary_key=True)
    tenant_id: str
    livemode: bool
    delivery_id: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    endpoint_id: str
    event_id: str
    event_type: str
    attempt: int
    attempted_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))
    outcome: str
    status_code: int | None = None
    error: str | None = None
    latency_ms: int
    response_body: str
    next_attempt_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True)))


metadata = Base.metadata
runtime = runtime_tables(metadata)
