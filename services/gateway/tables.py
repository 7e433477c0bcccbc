"""Tables the gateway owns: tenants, hashed API keys, tenants' token signing keys, its copy of ERP customers,
idempotency records."""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from libs.runtime.db import runtime_tables


class Base(SQLModel, registry=registry()):
    pass


def _timestamp(nullable: bool = False) -> sa.Column:
    return sa.Column(sa.DateTime(timezone=True), nullable=nullable)


class Tenant(Base, table=True):
    __tablename__ = "tenants"
    id: str = Field(primary_key=True)
    name: str
    created_at: datetime = Field(sa_column=_timestamp())
    # this tenant's rate limits per API key (limits' notation, e.g. `500/second`); None: the deployment's
    rate_limit: str | None = None
    mint_rate_limit: str | None = None
    # the prefix of its order numbers (`ACME-000042`), sent with every PlaceOrder; None (a tenant made before
    # prefixes): orders uses "ORD"
    order_prefix: str | None = None


class ApiKey(Base, table=True):
    """Only the sha256 of a key is kept; `prefix` + `last4` are what people and logs see."""

    __tablename__ = "api_keys"
    id: str = Field(primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", index=True)
    livemode: bool
    kind: str  # secret | publishable
    key_hash: str = Field(unique=True)
    prefix: str  # hk_test_sec
    last4: str
    # a restricted secret key: what it may do (state.SCOPES); None = everything its kind may do
    scopes: list[str] | None = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    name: str | None = None  # the operator's label
    revoked_at: datetime | None = Field(default=None, sa_column=_timestamp(nullable=True))
    # set when the key is rotated: it keeps working until then, so clients can move to its successor
    expires_at: datetime | None = Field(default=None, sa_column=_timestamp(nullable=True))
    created_at: datetime = Field(sa_column=_timestamp())


class TenantSigningKey(Base, table=True):
    """A public key a tenant registered so its own backend signs shopper tokens; only public keys are kept."""

    __tablename__ = "tenant_signing_keys"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "livemode", "kid"),)
    id: str = Field(primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id")
    livemode: bool
    kid: str  # the JWT header's kid; never reused within a tenant and mode, even after revocation
    algorithm: str  # RS256 | ES256: the only algorithm its tokens may use
    public_key: str  # SubjectPublicKeyInfo PEM
    created_at: datetime = Field(sa_column=_timestamp())
    revoked_at: datetime | None = Field(default=None, sa_column=_timestamp(nullable=True))


class Customer(Base, table=True):
    """The gateway's copy of ERP customers (erp.customers.v1): who may be given a shopper token."""

    __tablename__ = "customers"
    tenant_id: str = Field(primary_key=True)
    livemode: bool = Field(primary_key=True)
    customer_id: str = Field(primary_key=True)
    name: str
    active: bool
    # occurred_at of the upsert applied, so an older record arriving late does not win
    updated_at: datetime = Field(sa_column=_timestamp())


class IdempotencyRecord(Base, table=True):
    """One `Idempotency-Key` of a tenant and mode: in progress under a lease, or done with its final answer."""

    __tablename__ = "idempotency_records"
    __table_args__ = (sa.Index("idempotency_records_by_key", "key"),)
    tenant_id: str = Field(primary_key=True)
    livemode: bool = Field(primary_key=True)
    key: str = Field(primary_key=True, max_length=255)
    request_hash: str
    method: str
    path: str
    status: str  # in_progress | done
    locked_until: datetime | None = Field(default=None, sa_column=_timestamp(nullable=True))
    # the gateway instance (HARMON_INSTANCE_ID) whose request holds the lease: restarted, it releases its own
    holder: str | None = None
    # the id this request creates (cart, line), the same on every execution so a retry cannot make two
    minted_id: str | None = None
    response_status: int | None = None
    response_body: dict | None = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    created_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False, index=True))


metadata = Base.metadata
runtime = runtime_tables(metadata)
