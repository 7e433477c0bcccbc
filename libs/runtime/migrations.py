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
            await _run_sync(conn, do_run)
        await engine.dispose()

    asyncio.run(run_online())


async def _run_sync(conn: AsyncConnection, fn) -> None:
    await conn.run_sync(fn)
    await conn.commit()
