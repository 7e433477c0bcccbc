"""A service's own PostgreSQL on plain asyncpg, every transaction scoped to one tenant and mode.

Scoping is PostgreSQL's row-level security (docs/architecture.md, "Tenant scoping"): every table with
`tenant_id` and `livemode` has FORCE ROW LEVEL SECURITY and one policy that admits a row only when it
matches the transaction's `harmon.scope` setting, and those columns default to it. So a repository
writes plain SQL by business keys, never the tenant, and a query of another tenant's rows — a
forgotten filter, a join, a subquery, raw SQL — finds nothing and cannot write one. A transaction
that sets no scope fails as soon as a statement reads or writes a row of such a table (fail closed: one that
finds no row at all returns nothing either way). Cross-tenant work
(relays, sweepers, operator tooling) says so with `Unscoped("why")`, the scope `*`.

The scope is set in the same round trip as BEGIN (one simple-protocol query), so it costs nothing
per transaction; statements are prepared once per connection (asyncpg's statement cache).
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from .db import engine_args

log = logging.getLogger("harmon.database")

ANY_TENANT = "*"


@dataclass(frozen=True)
class Scope:
    tenant_id: str
    livemode: bool

    @property
    def setting(self) -> str:
        return f"{int(self.livemode)}:{self.tenant_id}"


@dataclass(frozen=True)
class Unscoped:
    """Deliberately cross-tenant; `reason` says why (grep for `Unscoped(`)."""

    reason: str

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise ValueError("say why this transaction is cross-tenant")

    @property
    def setting(self) -> str:
        return ANY_TENANT


def _literal(value: str) -> str:
    """A SQL string literal (standard_conforming_strings is on in every supported PostgreSQL)."""
    if "\x00" in value:
        raise ValueError("a scope cannot hold a NUL byte")
    return "'" + value.replace("'", "''") + "'"


def scope_sql(scope: Scope | Unscoped) -> str:
    """The statement that sets `scope` for the rest of the current transaction."""
    if isinstance(scope, Scope) and (not scope.tenant_id or not isinstance(scope.livemode, bool)):
        raise ValueError("a scope needs a tenant id and a boolean livemode")
    return f"SELECT set_config('harmon.scope', {_literal(scope.setting)}, true)"


class Transaction:
    """One open transaction on one connection; `rescope` moves it to another tenant between messages."""

    def __init__(self, conn: asyncpg.Connection, scope: Scope | Unscoped):
        self.conn = conn
        self.scope = scope

    async def rescope(self, scope: Scope | Unscoped) -> None:
        if scope != self.scope:
            await self.conn.execute(scope_sql(scope))
            self.scope = scope


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Connections come back with no transaction open and no session state set (the scope is LOCAL):
    asyncpg's default reset (RESET ALL, UNLISTEN *, …) would be a round trip per transaction."""


class Database:
    def __init__(self, dsn: str, *, min_size: int = 0, max_size: int = 10):
        url, connect_args = engine_args(dsn)
        self._dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self._connect_args = connect_args
        self._min, self._max = min_size, max_size
        self._pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        """Make the pool; connections are opened on first use, so a database still down does not stop start-up."""
        if self._pool is None:
            self._pool = await asyncpg.create_pool(self._dsn, min_size=self._min, max_size=self._max,
                                                   reset=_no_reset, **self._connect_args)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await pool.close()
            except Exception:  # a server that is gone: nothing to close politely
                pool.terminate()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("Database.start() was not awaited")
        return self._pool

    @asynccontextmanager
    async def transaction(self, scope: Scope | Unscoped) -> AsyncIterator[Transaction]:
        """BEGIN (with the scope, one round trip) … COMMIT; ROLLBACK on any exception."""
        if self._pool is None:
            await self.start()
        begin = f"BEGIN; {scope_sql(scope)}"
        async with self.pool.acquire() as conn:
            tx = Transaction(conn, scope)
            try:
                await conn.execute(begin)
                yield tx
            except BaseException:
                if not conn.is_closed():
                    try:
                        await conn.execute("ROLLBACK")
                    except Exception:  # the connection is broken: the pool replaces it
                        conn.terminate()
                raise
            await conn.execute("COMMIT")

    async def answers(self) -> bool:
        try:
            async with self.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
            return True
        except Exception:
            return False

    async def revision(self) -> str | None:
        """The Alembic revision the database is at (alembic_version is not scoped)."""
        async with self.pool.acquire() as conn:
            if not await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL"):
                return None
            return await conn.fetchval("SELECT version_num FROM alembic_version")
