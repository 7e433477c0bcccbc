"""What the gateway remembers between requests, and how it forgets: API keys (with their tenant's rate
limits), tenants' signing keys and the active-customer check, held in memory and dropped on PostgreSQL's
NOTIFY (docs/operations.md, "What the gateway remembers").

Migration 0007 puts a statement trigger on api_keys, tenants, tenant_signing_keys and customers that sends
`NOTIFY harmon_gateway_changes, '<table>'` at commit. Each gateway instance keeps one dedicated asyncpg
connection LISTENing on that channel (application_name `harmon-gateway-listen:<instance id>`); a
notification drops everything remembered from that table.

The memory is used only while it can be trusted:
- **Listening.** Until the LISTEN connection is up, and from the moment it is lost, every lookup reads
  PostgreSQL as if there were no cache. Once it is back, everything is dropped first: notifications sent
  while it was down were missed.
- **Confirmed.** The listener sends `SELECT 1` every HEARTBEAT_S; PostgreSQL delivers every notification
  committed before that query was sent ahead of its answer. The memory is trusted only within FRESH_S of the
  last confirmed send, so a connection that died silently (no FIN, no error) is bypassed within a second too.
- **Generations.** A value read from PostgreSQL is kept only if nothing was dropped between the moment the
  read began and its answer, so a read that raced a change can never put the old row back.

Key expiry (rotation overlap) is not remembered as a verdict: callers compare `expires_at` with the clock on
every request.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

import asyncpg
from aiohttp import web
from prometheus_client import Counter, Gauge

from libs.runtime.db import engine_args
from libs.runtime.metrics import Metrics

log = logging.getLogger("harmon.gateway.cache")

T = TypeVar("T")
CHANNEL = "harmon_gateway_changes"  # migrations/versions/0007_notify_changes.py
HEARTBEAT_S = 0.3
FRESH_S = 1.0  # the longest a change can go unseen when the listener's connection dies without a word
HEARTBEAT_TIMEOUT_S = 2.0  # past it the connection is given up and made again
RECONNECT_S = (0.1, 5.0)  # first and longest wait between attempts to listen again
MAX_ENTRIES = 10_000  # per kind; the oldest entry goes first

API_KEYS, CUSTOMERS, SIGNING_KEYS = "api_keys", "customers", "signing_keys"
KINDS = (API_KEYS, CUSTOMERS, SIGNING_KEYS)
# which of the gateway's tables each kind is read from: a change to one drops these kinds
DROPS = {"api_keys": (API_KEYS,), "tenants": (API_KEYS,), "tenant_signing_keys": (SIGNING_KEYS,),
         "customers": (CUSTOMERS,)}


class Cache:
    """The maps, and whether they may be used now. `enabled=False` (HARMON_GATEWAY_CACHE=false): never used."""

    def __init__(self, *, enabled: bool = True, metrics: Metrics | None = None, max_entries: int = MAX_ENTRIES,
                 fresh_s: float = FRESH_S, clock: Callable[[], float] = time.monotonic):
        self.enabled = enabled
        self.max_entries = max_entries
        self.fresh_s = fresh_s
        self._clock = clock
        self._maps: dict[str, dict[Hashable, Any]] = {kind: {} for kind in KINDS}
        self.generation = 0  # moves on whenever anything is dropped
        self.listening = False
        self._confirmed_at = float("-inf")
        self._lookups = self._listening_gauge = self._changes = None
        if metrics is not None:
            self._lookups = Counter("harmon_gateway_cache_lookups", "lookups of keys, signing keys and customers",
                                    ["kind", "result"], registry=metrics.registry)
            for kind in KINDS:
                for result in ("hit", "miss", "bypass"):
                    self._lookups.labels(kind=kind, result=result)
            self._changes = Counter("harmon_gateway_cache_changes", "NOTIFYs received, by table", ["table"],
                                    registry=metrics.registry)
            self._listening_gauge = Gauge("harmon_gateway_cache_listening",
                                          "1 while the LISTEN connection is up and confirmed", registry=metrics.registry)

    # --- whether it may be used ------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return self.enabled and self.listening and self._clock() - self._confirmed_at <= self.fresh_s

    @property
    def status(self) -> str:
        """For /readyz: `on`, `off` (turned off), or `bypassed: …` (every lookup reads PostgreSQL)."""
        if not self.enabled:
            return "off"
        if not self.listening:
            return "bypassed: not listening"
        unconfirmed = self._clock() - self._confirmed_at
        if unconfirmed > self.fresh_s:
            return f"bypassed: listener unconfirmed for {unconfirmed:.1f} s"
        return "on"

    def _drop(self, kinds: tuple[str, ...] = KINDS) -> None:
        self.generation += 1
        for kind in kinds:
            self._maps[kind].clear()

    def started_listening(self, sent_at: float) -> None:
        """LISTEN is in place (sent at `sent_at`): forget everything, since changes made meanwhile were not heard."""
        self._drop()
        self.listening = True
        self._confirmed_at = sent_at
        if self._listening_gauge is not None:
            self._listening_gauge.set(1)

    def confirmed(self, sent_at: float) -> None:
        """A heartbeat sent at `sent_at` was answered: every change committed before then has been heard."""
        self._confirmed_at = max(self._confirmed_at, sent_at)

    def stopped_listening(self) -> None:
        self._drop()
        self.listening = False
        if self._listening_gauge is not None:
            self._listening_gauge.set(0)

    def changed(self, table: str) -> None:
        """A NOTIFY: drop what was read from `table` (everything, for a table this version does not know)."""
        self._drop(DROPS.get(table, KINDS))
        if self._changes is not None:
            self._changes.labels(table=table).inc()

    # --- lookups ---------------------------------------------------------------------------------

    def _count(self, kind: str, result: str) -> None:
        if self._lookups is not None:
            self._lookups.labels(kind=kind, result=result).inc()

    async def remember(self, kind: str, key: Hashable, load: Callable[[], Awaitable[T]], *,
                       keep_missing: bool = True) -> T:
        """The remembered value of `key`, else `load()`'s, kept if nothing was dropped meanwhile (and, unless
        `keep_missing`, only if it is not None). Bypassed entirely while the memory cannot be trusted."""
        if not self.usable:
            self._count(kind, "bypass")
            return await load()
        entries = self._maps[kind]
        if key in entries:
            self._count(kind, "hit")
            return entries[key]
        self._count(kind, "miss")
        generation = self.generation
        value = await load()
        if self.generation == generation and self.usable and (keep_missing or value is not None):
            if len(entries) >= self.max_entries:
                del entries[next(iter(entries))]
            entries[key] = value
        return value

    def size(self, kind: str) -> int:
        return len(self._maps[kind])


def listener_name(instance_id: str) -> str:
    """The LISTEN connection's application_name (PostgreSQL keeps 63 bytes of it)."""
    return f"harmon-gateway-listen:{instance_id}"[:63]


def asyncpg_connect_args(dsn: str) -> dict[str, Any]:
    """asyncpg.connect's arguments for an operator's DSN, with TLS as every engine of ours takes it."""
    url, extra = engine_args(dsn)
    return {"dsn": url.replace("postgresql+asyncpg://", "postgresql://", 1), **extra}


class Listener:
    """The one LISTEN connection of this gateway: tells `cache` when it may be used and what to drop."""

    def __init__(self, cache: Cache, dsn: str, application_name: str, *, heartbeat_s: float = HEARTBEAT_S,
                 clock: Callable[[], float] = time.monotonic):
        self._cache = cache
        self._connect = {**asyncpg_connect_args(dsn), "server_settings": {"application_name": application_name}}
        self.application_name = application_name
        self._heartbeat_s = heartbeat_s
        self._clock = clock
        self._task: asyncio.Task | None = None
        self._conn: asyncpg.Connection | None = None
        self.connections = 0  # how many times it started listening

    async def start(self) -> None:
        if self._cache.enabled:
            self._task = asyncio.create_task(self._run(), name="gateway cache listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._cache.stopped_listening()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._cache.changed(payload)

    def _terminated(self, conn: object) -> None:
        if conn is self._conn:
            self._cache.stopped_listening()  # at once, not when the next heartbeat fails

    async def _run(self) -> None:
        wait, down_since = RECONNECT_S[0], None
        while True:
            listened = self.connections
            try:
                await self._listen(down_since)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - whatever it was, this gateway is not listening now
                self._cache.stopped_listening()
                if self.connections > listened:  # it was listening: a loss, and the next try comes soon
                    wait, down_since = RECONNECT_S[0], self._clock()
                    log.warning("cache listener lost (%s): every lookup reads PostgreSQL until it listens again",
                                type(e).__name__)
                elif down_since is None:
                    down_since = self._clock()
                    log.warning("cache listener cannot connect (%s): every lookup reads PostgreSQL meanwhile",
                                type(e).__name__)
            finally:
                conn, self._conn = self._conn, None
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(wait)
            wait = min(wait * 2, RECONNECT_S[1])

    async def _listen(self, down_since: float | None) -> None:
        """Connect, LISTEN, then confirm with a heartbeat until the connection fails (raises)."""
        self._conn = conn = await asyncpg.connect(**self._connect, timeout=HEARTBEAT_TIMEOUT_S * 2)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda c: (self._terminated(c), lost.set()))
        sent = self._clock()
        await conn.add_listener(CHANNEL, self._notified)
        self._cache.started_listening(sent)
        self.connections += 1
        if down_since is None:
            log.info("cache on: listening on %s", CHANNEL)
        else:
            log.info("cache on again: listening on %s after %.1f s (everything remembered before was dropped)",
                     CHANNEL, self._clock() - down_since)
        while not lost.is_set():
            sent = self._clock()
            await conn.fetchval("SELECT 1", timeout=HEARTBEAT_TIMEOUT_S)
            self._cache.confirmed(sent)
            try:
                await asyncio.wait_for(lost.wait(), self._heartbeat_s)
            except TimeoutError:
                pass
        raise ConnectionError("the LISTEN connection was closed")


CACHE = web.AppKey("cache", Cache)
LISTENER = web.AppKey("cache_listener", Listener)
