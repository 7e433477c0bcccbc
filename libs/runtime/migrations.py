"""Alembic per service: each service's `migrations/` folder, its own database, one shared env runner."""

import asyncio
from pathlib import Path

import sqlalchemy as sa
from alembic import command, context
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .db import async_url, make_async_engine


def alembic_config(migrations_dir: Path, dsn: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    if dsn:
        cfg.set_main_option("sqlalchemy.url", async_url(dsn).replace("%", "%%"))
    return cfg


def head_revision(migrations_dir: Path) -> str | None:
    return ScriptDirectory.from_config(alembic_config(migrations_dir)).get_current_head()


def known_revisions(migrations_dir: Path) -> frozenset[str]:
    """Every revision this version ships: a database at one it does not know was migrated by a newer version."""
    return frozenset(r.revision for r in ScriptDirectory.from_config(alembic_config(migrations_dir)).walk_revisions())


def schema_state(current: str | None, head: str | None, known: frozenset[str] | None) -> tuple[str, bool]:
    """(what readiness says of the database's migrations, whether this version can run on it).

    Migrations only expand (a column added nullable or with a default, a table added), so a version keeps
    working on a schema a newer one migrated: during a rolling deploy `harmon migrate` runs first and the
    older instances stay ready beside the newer ones (docs/operations.md). An older schema is not ready."""
    if current == head:
        return "current", True
    if known is not None and current is not None and current not in known:
        return f"ahead: at {current}, a newer version's (this one's head is {head})", True
    return f"at {current}, head is {head}", False


async def upgrade(migrations_dir: Path, dsn: str) -> None:
    """Apply every migration of one service (alembic's API is synchronous: run it off the loop)."""
    await asyncio.to_thread(command.upgrade, alembic_config(migrations_dir, dsn), "head")


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        exists = await conn.scalar(sa.text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        if not exists:
            return None
        return await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))


def create_parked_table(op) -> None:
    """The runtime's `parked` table (libs/runtime/db.py) as first released; each service's migration calls it.

    Frozen: a later change to the table is a new migration, never an edit here.
    """
    op.create_table(
        "parked",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.Text(), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("message_type", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("parked_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("topic", "partition", "offset", name="parked_record"),
    )
    op.create_index("parked_key", "parked", ["topic", "key", "id"], unique=False)


def run_env(metadata: sa.MetaData) -> None:
    """The body of every service's migrations/env.py."""

    def do_run(conn: sa.Connection) -> None:
        context.configure(connection=conn, target_metadata=metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()

    async def run_online() -> None:
        engine = make_async_engine(context.config.get_main_option("sqlalchemy.url"))
        async with engine.connect() as conn:
            # a data migration sees every tenant's rows (row-level security, enable_row_scoping_v1)
            await conn.exec_driver_sql("SELECT set_config('harmon.scope', '*', false)")
            await conn.commit()
            await _run_sync(conn, do_run)
        await engine.dispose()

    asyncio.run(run_online())


async def _run_sync(conn: AsyncConnection, fn) -> None:
    await conn.run_sync(fn)
    await conn.commit()


# Row-level security (libs/runtime/database.py): `harmon.scope` is `<0|1>:<tenant id>` for one tenant and
# mode, or `*` for deliberately cross-tenant work; unset, the first statement on a scoped table fails.
# Frozen like every migration helper: a change is a new function and a new migration.
SCOPE_FUNCTIONS_V1 = [r"""
CREATE OR REPLACE FUNCTION harmon_scope() RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE s text := current_setting('harmon.scope', true);
BEGIN
    IF s IS NULL OR s = '' THEN
        RAISE EXCEPTION 'no tenant scope: this transaction is bound to no tenant and mode (libs/runtime/database.py)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN s;
END $$""", r"""
CREATE OR REPLACE FUNCTION harmon_scope_tenant() RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE s text := harmon_scope();
BEGIN
    IF s = '*' THEN
        RAISE EXCEPTION 'a cross-tenant transaction must name the tenant of each row it writes'
            USING ERRCODE = 'not_null_violation';
    END IF;
    RETURN substr(s, 3);
END $$""", r"""
CREATE OR REPLACE FUNCTION harmon_scope_livemode() RETURNS boolean LANGUAGE plpgsql STABLE AS $$
DECLARE s text := harmon_scope();
BEGIN
    IF s = '*' THEN
        RAISE EXCEPTION 'a cross-tenant transaction must name the mode of each row it writes'
            USING ERRCODE = 'not_null_violation';
    END IF;
    RETURN substr(s, 1, 1) = '1';
END $$"""]


def enable_row_scoping_v1(op, tables: list[str]) -> None:
    """Scope `tables` (each with tenant_id and livemode) to the transaction's `harmon.scope`, for their owner too.

    The policy's scope is an initplan (evaluated once per statement); the columns default to the scope,
    so repositories never write the tenant.
    """
    for function in SCOPE_FUNCTIONS_V1:
        op.execute(function)
    for table in tables:
        op.execute(f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY')
        op.execute(f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY')
        op.execute(f'ALTER TABLE "{table}" ALTER COLUMN tenant_id SET DEFAULT harmon_scope_tenant(), '
                   'ALTER COLUMN livemode SET DEFAULT harmon_scope_livemode()')
        rule = "(SELECT harmon_scope()) IN ('*', CASE WHEN livemode THEN '1:' ELSE '0:' END || tenant_id)"
        op.execute(f'CREATE POLICY harmon_scope ON "{table}" USING ({rule}) WITH CHECK ({rule})')


def disable_row_scoping_v1(op, tables: list[str]) -> None:
    for table in tables:
        op.execute(f'DROP POLICY IF EXISTS harmon_scope ON "{table}"')
        op.execute(f'ALTER TABLE "{table}" NO FORCE ROW LEVEL SECURITY')
        op.execute(f'ALTER TABLE "{table}" DISABLE ROW LEVEL SECURITY')
        op.execute(f'ALTER TABLE "{table}" ALTER COLUMN tenant_id DROP DEFAULT, ALTER COLUMN livemode DROP DEFAULT')
