"""The services' databases beyond the embedded server: an existing PostgreSQL named by an admin DSN, and
bringing every service's database to its migrations' head."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
from alembic import command

from libs.runtime.migrations import alembic_config

from .embedded import EmbeddedPostgres

log = logging.getLogger("harmon.stack")


class ExternalPostgres(EmbeddedPostgres):
    """An existing server named by an admin DSN (HARMON_DATABASE_URL): roles and databases are made
    there with the same code as the embedded server's; nothing is started or stopped."""

    def __init__(self, admin_dsn: str) -> None:  # not super().__init__(): that prepares a local cluster
        for prefix in ("postgresql+asyncpg://", "postgres://"):
            if admin_dsn.startswith(prefix):
                admin_dsn = "postgresql://" + admin_dsn[len(prefix):]
        if not admin_dsn.startswith("postgresql://"):
            raise ValueError("HARMON_DATABASE_URL must be a postgresql:// URL")
        self._admin_dsn = admin_dsn
        parts = urlsplit(admin_dsn)
        self._host = parts.netloc.rsplit("@", 1)[-1]
        self.port = parts.port or 5432

    @property
    def pid(self) -> int | None:
        return None

    @property
    def admin_dsn(self) -> str:
        return self._admin_dsn

    def _dsn(self, user: str, password: str, database: str) -> str:
        parts = urlsplit(self._admin_dsn)
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{self._host}"
        return urlunsplit((parts.scheme, netloc, f"/{database}", parts.query, ""))

    async def start(self) -> str:
        try:
            await (await asyncpg.connect(self._admin_dsn, timeout=10)).close()
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
            raise RuntimeError(f"cannot connect to HARMON_DATABASE_URL (host {self._host}): {exc}") from exc
        return self._admin_dsn

    async def stop(self) -> None:
        return None


def migrations_dir(service: str) -> Path:
    """`services/<service>/migrations`, located without importing the service."""
    spec = importlib.util.find_spec(f"services.{service}")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"service package services.{service} is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "migrations"


# alembic's `context` and the loading of env.py are process-global: one migration at a time per
# process, even with two Stacks (two event loops' worth of callers) in it.
_MIGRATING = threading.Lock()


def _upgrade(migrations: Path, dsn: str) -> None:
    with _MIGRATING:
        command.upgrade(alembic_config(migrations, dsn), "head")


async def migrate(dsns: Mapping[str, str]) -> None:
    """Bring each service's database to its migrations' head, one after another."""
    for service, dsn in dsns.items():
        started = time.monotonic()
        try:
            await asyncio.to_thread(_upgrade, migrations_dir(service), dsn)
        except Exception as exc:
            raise RuntimeError(f"migrating the {service} database failed: {type(exc).__name__}: {exc}") from exc
        log.info("%s database migrated in %.2f s", service, time.monotonic() - started)
