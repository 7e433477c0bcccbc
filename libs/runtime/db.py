"""Each service's own database: engine, sessions, and the outbox and inbox tables every service has."""

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from .scoping import ScopedSession


def async_url(dsn: str) -> str:
    """`postgresql://…` (what operators write) → the asyncpg driver URL SQLAlchemy wants."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+asyncpg://" + dsn[len(prefix):]
    raise ValueError("database URL must start with postgresql://")


SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_TLS_PARAMS = ("sslmode", "sslrootcert", "sslcert", "sslkey")


def tls_option(sslmode: str = "prefer", sslrootcert: str | None = None, sslcert: str | None = None,
               sslkey: str | None = None) -> bool | str | ssl.SSLContext:
    """libpq's TLS parameters as asyncpg's `ssl` argument (asyncpg.connect has no `sslmode`).

    As libpq: verify-ca checks the chain against `sslrootcert` (`system`: the system's CAs; absent:
    ~/.postgresql/root.crt), verify-full also the host name; require with a root certificate is verify-ca.
    """
    if sslmode not in SSL_MODES:
        raise ValueError(f"sslmode must be one of {', '.join(SSL_MODES)}, not {sslmode!r}")
    if sslmode == "disable":
        return False
    if sslmode == "require" and sslrootcert:
        sslmode = "verify-ca"
    if sslmode in ("allow", "prefer") or (sslmode == "require" and not sslcert):
        return sslmode  # no verification to set up: asyncpg negotiates these itself
    if sslmode == "require":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    else:
        root = sslrootcert or str(Path.home() / ".postgresql" / "root.crt")
        if root != "system" and not Path(root).is_file():
            raise ValueError(f"sslmode={sslmode} needs the CA certificate: sslrootcert={root} is not a file")
        context = ssl.create_default_context(cafile=None if root == "system" else root)
        context.check_hostname = sslmode == "verify-full"
    if sslcert:
        context.load_cert_chain(sslcert, sslkey)
    return context


def engine_args(dsn: str) -> tuple[str, dict[str, Any]]:
    """The asyncpg URL of a DSN and its connect_args: libpq's `sslmode`, `sslrootcert`, `sslcert` and
    `sslkey` leave the URL (SQLAlchemy would pass them to asyncpg as keywords it refuses) for `ssl`."""
    url = make_url(async_url(dsn))
    tls = {k: url.query[k] for k in _TLS_PARAMS if k in url.query}
    if not tls:
        return async_url(dsn), {}
    if any(not isinstance(v, str) for v in tls.values()):
        raise ValueError(f"each of {', '.join(tls)} may appear once in the database URL")
    url = url.difference_update_query(_TLS_PARAMS)
    return url.render_as_string(hide_password=False), {"ssl": tls_option(**tls)}


def make_async_engine(dsn: str, **kw: Any) -> AsyncEngine:
    url, connect_args = engine_args(dsn)
    return create_async_engine(url, connect_args=connect_args, **kw)


def make_engine(dsn: str, pool_size: int = 10) -> AsyncEngine:
    # No pre-ping (a round trip per transaction): a connection that died is invalidated on first
    # use; the message is handled again once the database answers (libs/runtime/failures.py: DOWN).
    return make_async_engine(dsn, pool_size=pool_size, max_overflow=pool_size)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that scope every query to the tenant and mode they are bound to (see scoping.py)."""
    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=ScopedSession)


def make_lookup_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Scoped sessions in autocommit, for lookups whose statements need no common snapshot.

    Each statement is its own transaction: no BEGIN and no ROLLBACK round trip around them — two of
    the four round trips an authenticated request made. Never for writes or for reads that must agree.
    """
    return make_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))


@dataclass(frozen=True)
class RuntimeTables:
    outbox: sa.Table
    inbox: sa.Table
    parked: sa.Table


def runtime_tables(metadata: sa.MetaData) -> RuntimeTables:
    """Add the outbox (messages committed with the state change) and inbox (processed message ids) to a service's metadata."""
    outbox = sa.Table(
        "outbox",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("message_id", sa.Text, nullable=False, unique=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Index("outbox_unsent", "id", postgresql_where=sa.text("sent_at IS NULL")),
    )
    inbox = sa.Table(
        "inbox",
        metadata,
        sa.Column("message_id", sa.Text, primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("message_type", sa.Text, nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    # Messages that failed transiently past their quick retries, kept in key order until they succeed or
    # are dead-lettered (libs/runtime/parking.py). The runtime reads them by partition through a
    # connection, like the outbox relay; the tenant columns say whose they are.
    parked = sa.Table(
        "parked",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("key", sa.Text, nullable=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("message_id", sa.Text, nullable=False),
        sa.Column("message_type", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("topic", "partition", "offset", name="parked_record"),
        sa.Index("parked_key", "topic", "key", "id"),
    )
    return RuntimeTables(outbox=outbox, inbox=inbox, parked=parked)
