"""Parked messages: a transient failure waits in the service's own database, in key order, for its retry.

A message that still fails after its quick retries (libs/runtime/failures.py, TRANSIENT) is stored
in `parked` before its offset is committed, so the partition flows on; every later message with the
same key is parked behind it, so that key's order holds. A relay retries the oldest message of each
parked key with a growing backoff, and dead-letters it after `HARMON_MAX_ATTEMPTS`; then the next
one of that key has its turn. Rows are read through a connection by partition (like the outbox
relay), each row locked while it is retried, so two instances never retry the same message.
"""

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiokafka import TopicPartition

from .database import Database, Unscoped

log = logging.getLogger("harmon.parking")

Key = tuple[str, str | None]  # (topic, record key)

# The runtime keeps and retries every tenant's parked records by topic and key; each retried message is
# handled in its own scoped transaction by the dispatcher.
PARKING = Unscoped("parking: every tenant's parked records, by topic and key")


@dataclass(frozen=True)
class Record:
    """What the runtime keeps of a broker record: where it came from and its bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    @property
    def text_key(self) -> str | None:
        return self.key.decode(errors="replace") if self.key is not None else None


def backoff_s(attempts: int) -> float:
    """0.5 s, 1 s, 2 s … up to a minute, with jitter so parked keys do not retry in lockstep."""
    return min(60.0, 0.5 * 2 ** max(0, attempts - 1)) * random.uniform(0.8, 1.2)


# "done": handled (or dropped as a duplicate, or refused and dead-lettered); "again": failed once more;
# "down": a dependency is unreachable, stop the pass.
Retry = Callable[[Record, int], Awaitable[tuple[str, str]]]


class Parking:
    def __init__(self, db: Database, *, max_attempts: int,
                 dead_letter: Callable[[Record, str, str, int], Awaitable[None]],
                 on_change: Callable[[int, float], None] | None = None, interval_s: float = 0.5):
        self._db = db
        self.max_attempts = max_attempts
        self._dead_letter = dead_letter
        self._on_change = on_change  # (parked count, age of the oldest in s): metrics
        self.interval_s = interval_s
        self._blocked: dict[Key, int] = {}  # parked key → its partition, for the partitions we hold
        self._locks: dict[Key, asyncio.Lock] = {}
        self._assigned: set[TopicPartition] = set()
        self._retry: Retry | None = None
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    @property
    def count_blocked(self) -> int:
        return len(self._blocked)

    def blocked(self, rec: Record) -> bool:
        return (rec.topic, rec.text_key) in self._blocked

    def lock(self, rec: Record) -> asyncio.Lock:
        return self._locks.setdefault((rec.topic, rec.text_key), asyncio.Lock())

    async def assigned(self, partitions: set[TopicPartition]) -> None:
        """The consumer holds these partitions now: learn which of their keys wait behind a parked message."""
        self._assigned = set(partitions)
        if not partitions:
            self._blocked = {}
            return
        topics, numbers = _partition_arrays(partitions)
        async with self._db.transaction(PARKING) as tx:
            rows = await tx.conn.fetch(
                "SELECT DISTINCT topic, key, partition FROM parked"
                " WHERE (topic, partition) IN (SELECT * FROM unnest($1::text[], $2::int[]))", topics, numbers)
        self._blocked = {(r["topic"], r["key"]): r["partition"] for r in rows}
        if self._blocked:
            log.info("%d parked key(s) on the partitions just assigned", len(self._blocked))
            self._wake.set()
        await self._report()

    async def park(self, rec: Record, env_tenant: str, env_mode: bool, message_id: str, message_type: str,
                   error: str, *, failed: bool) -> None:
        """Keep `rec` for a later retry (call with `lock(rec)` held); a redelivered record is parked once.

        `failed`: it failed (its first retry waits a backoff); else it only waits behind its key.
        `attempts` counts the relay's retries, up to `HARMON_MAX_ATTEMPTS`.
        """
        now = datetime.now(UTC)
        delay = backoff_s(1) if failed else 0.0
        async with self._db.transaction(PARKING) as tx:
            await tx.conn.execute(
                'INSERT INTO parked (tenant_id, livemode, topic, partition, "offset", key, value, message_id,'
                ' message_type, attempts, last_error, next_attempt_at)'
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11) ON CONFLICT ON CONSTRAINT parked_record DO NOTHING",
                env_tenant, env_mode, rec.topic, rec.partition, rec.offset, rec.text_key, rec.value, message_id,
                message_type, error[:1000], now + timedelta(seconds=delay))
        self._blocked[(rec.topic, rec.text_key)] = rec.partition
        log.warning("%s[%d]@%d (%s, key %s) parked: %s", rec.topic, rec.partition, rec.offset,
                    message_type, rec.text_key, error[:200])
        self._wake.set()
        await self._report()

    def start(self, retry: Retry) -> None:
        self._retry = retry
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        next_report = 0.0
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                if self._blocked:
                    await self.relay_once()
                now = asyncio.get_running_loop().time()
                if self._blocked or now >= next_report:
                    next_report = now + 10.0
                    await self._report()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("parked-message relay failed (%r); trying again", e)
                await asyncio.sleep(1.0)

    async def relay_once(self) -> int:
        """Retry the due head of every parked key we hold; returns how many messages left the table."""
        assert self._retry is not None
        held = {tp for tp in self._assigned}
        if not held:
            return 0
        topics, numbers = _partition_arrays(held)
        async with self._db.transaction(PARKING) as tx:
            rows = await tx.conn.fetch(
                "SELECT topic, key, next_attempt_at FROM parked"
                " WHERE (topic, partition) IN (SELECT * FROM unnest($1::text[], $2::int[])) ORDER BY id", topics, numbers)
        heads = list({(r["topic"], r["key"]): r for r in reversed(rows)}.values())  # the oldest row of each key
        now = datetime.now(UTC)
        done = 0
        for head in heads:
            if head["next_attempt_at"] > now:
                continue
            key = (head["topic"], head["key"])
            async with self._locks.setdefault(key, asyncio.Lock()):
                while True:
                    outcome = await self._retry_head(key)
                    if outcome == "down":
                        return done
                    if outcome != "done":
                        break
                    done += 1
        return done

    async def _retry_head(self, key: Key) -> str:
        """Retry the oldest parked message of `key`: "done" (it left; the next may go), "wait", "down", "empty"."""
        assert self._retry is not None
        topic, k = key
        async with self._db.transaction(PARKING) as tx:
            conn = tx.conn
            row = await conn.fetchrow(
                "SELECT * FROM parked WHERE topic = $1 AND key IS NOT DISTINCT FROM $2"
                " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED", topic, k)
            if row is None:
                if not await _any_left(conn, topic, k):
                    self._release(key)
                return "empty"
            if row["next_attempt_at"] > datetime.now(UTC):
                return "wait"
            rec = Record(row["topic"], row["partition"], row["offset"], k.encode() if k is not None else None,
                         row["value"])
            attempts = row["attempts"] + 1
            outcome, error = await self._retry(rec, attempts)
            if outcome == "down":
                return "down"
            if outcome == "again":
                if attempts >= self.max_attempts:
                    await self._dead_letter(rec, "attempts_exhausted", f"failed {attempts} times: {error}", attempts)
                else:
                    await conn.execute(
                        "UPDATE parked SET attempts = $2, last_error = $3, next_attempt_at = $4 WHERE id = $1",
                        row["id"], attempts, error[:1000], datetime.now(UTC) + timedelta(seconds=backoff_s(attempts)))
                    log.info("%s (key %s) failed again (attempt %d): %s", row["message_type"], k, attempts, error[:200])
                    return "wait"
            await conn.execute("DELETE FROM parked WHERE id = $1", row["id"])
            if not await _any_left(conn, topic, k):
                self._release(key)
        await self._report()
        return "done"

    def _release(self, key: Key) -> None:
        if self._blocked.pop(key, None) is not None:
            log.info("key %s of %s flows again: nothing parked for it", key[1], key[0])
        lock = self._locks.get(key)
        if lock is not None and not lock.locked():
            self._locks.pop(key, None)

    async def _report(self) -> None:
        if self._on_change is None:
            return
        try:
            async with self._db.transaction(PARKING) as tx:
                count, oldest = await tx.conn.fetchrow("SELECT count(*), min(parked_at) FROM parked")
        except Exception:  # metrics must not fail the caller
            return
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
        self._on_change(int(count), age)


def _partition_arrays(partitions: set[TopicPartition]) -> tuple[list[str], list[int]]:
    ordered = sorted(partitions)
    return [tp.topic for tp in ordered], [tp.partition for tp in ordered]


async def _any_left(conn, topic: str, key: str | None) -> bool:
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM parked WHERE topic = $1 AND key IS NOT DISTINCT FROM $2)", topic, key)
