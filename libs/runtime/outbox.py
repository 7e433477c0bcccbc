"""Outbox delivery: publish right after commit (the hot path), and a relay that sends whatever that missed.

A row is committed in the same transaction as the state change it announces, so a crash can only
delay a message, never lose it; consumers' inboxes make the occasional second delivery harmless.
"""

import asyncio
import logging

from .broker import BrokerLink
from .database import Database, Unscoped
from .failures import BrokerUnavailable
from .tracing import headers_for, traceparent_in
from .metrics import Metrics
from .unit_of_work import OutgoingMessage

log = logging.getLogger("harmon.outbox")

# The relay and its bookkeeping are cross-tenant on purpose: they send and mark every tenant's rows
# by id, never reading what they carry.
RELAY = Unscoped("outbox relay: sends and marks every tenant's rows by id")


class Outbox:
    def __init__(self, link: BrokerLink, db: Database, *, relay_interval_s: float = 1.0,
                 relay_grace_s: float = 2.0, replay_s: float = 300.0, metrics: Metrics | None = None,
                 sample_interval_s: float = 5.0):
        self._link = link
        self._metrics = metrics
        self._sample_interval_s = sample_interval_s
        self._next_sample = 0.0
        self._replay_s = replay_s
        self._db = db
        self._relay_interval_s = relay_interval_s
        self._relay_grace_s = relay_grace_s
        self._sent: list[str] = []
        self._sent_flag = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._confirming: set[asyncio.Task] = set()
        self._next_prune = 0.0

    async def publish_committed(self, messages: list[OutgoingMessage]) -> None:
        """Hand rows just committed to the producer and return; acks are awaited in the background.

        The handler does not wait for the broker's ack: the rows are committed, so a message the
        broker never confirms is re-sent by the relay. The producer keeps each partition's order.
        """
        try:
            acks = [await self._link.publish(m.topic, m.key, m.value, headers_for(m.traceparent)) for m in messages]
        except BrokerUnavailable as e:
            log.warning("publish after commit failed (%s); the relay will send %d message(s)", e, len(messages))
            return
        task = asyncio.create_task(self._confirm(acks, [m.message_id for m in messages]))
        self._confirming.add(task)
        task.add_done_callback(self._confirming.discard)

    async def _confirm(self, acks: list, message_ids: list[str]) -> None:
        try:
            await asyncio.gather(*acks)
        except Exception as e:
            log.warning("the broker did not confirm %d message(s) (%r); the relay will resend them", len(acks), e)
            return
        self._sent.extend(message_ids)
        self._sent_flag.set()

    def start(self) -> None:
        self._link.on_emptied(self.replay_recent)
        self._tasks = [asyncio.create_task(self._mark_sent_loop()), asyncio.create_task(self._relay_loop())]

    async def stop(self) -> None:
        await asyncio.gather(*self._confirming, return_exceptions=True)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._flush_sent()

    async def _flush_sent(self) -> None:
        if not self._sent:
            return
        ids, self._sent = self._sent, []
        try:
            async with self._db.transaction(RELAY) as tx:
                await tx.conn.execute(
                    "UPDATE outbox SET sent_at = now() WHERE sent_at IS NULL AND message_id = ANY($1::text[])", ids)
        except BaseException:
            self._sent.extend(ids)
            self._sent_flag.set()
            raise

    async def _mark_sent_loop(self) -> None:
        # Confirmed rows are marked in one statement per half second, well within the relay's grace
        # period, so the relay does not resend them; under load that is many rows per statement.
        while True:
            await self._sent_flag.wait()
            self._sent_flag.clear()
            await asyncio.sleep(min(0.5, self._relay_grace_s / 4))
            try:
                await self._flush_sent()
            except Exception:
                log.warning("could not mark outbox rows sent; the relay may send them again", exc_info=True)

    async def relay_once(self) -> int:
        """Send unsent rows older than the grace period (the ones publish-after-commit missed)."""
        if not self._link.up:
            return 0
        async with self._db.transaction(RELAY) as tx:
            rows = await tx.conn.fetch(
                "SELECT id, topic, key, value FROM outbox WHERE sent_at IS NULL"
                " AND created_at < now() - make_interval(secs => $1) ORDER BY id LIMIT 200 FOR UPDATE SKIP LOCKED",
                self._relay_grace_s)
            acks = [await self._link.publish(r["topic"], r["key"], r["value"], _headers(r["value"])) for r in rows]
            await asyncio.gather(*acks)
            if rows:
                await tx.conn.execute("UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])",
                                      [r["id"] for r in rows])
                log.info("relayed %d outbox message(s)", len(rows))
            # Sent rows are kept a day for inspection, then pruned (a minute late at most: one pass a minute).
            now = asyncio.get_running_loop().time()
            if now >= self._next_prune:
                self._next_prune = now + 60.0
                await tx.conn.execute("DELETE FROM outbox WHERE sent_at < now() - interval '1 day'")
        return len(rows)

    async def unsent(self) -> int:
        """Rows not yet confirmed by the broker (readiness's `quiet`)."""
        async with self._db.transaction(RELAY) as tx:
            return await tx.conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")

    async def sample(self) -> None:
        """The unsent rows' count and the oldest one's age into the metrics: one query on the partial index of
        unsent rows (a handful normally: rows are marked sent within a second), every few seconds, not per message."""
        if self._metrics is None:
            return
        async with self._db.transaction(RELAY) as tx:
            row = await tx.conn.fetchrow(
                "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age"
                " FROM outbox WHERE sent_at IS NULL")
        self._metrics.outbox_unsent.set(row["n"])
        self._metrics.outbox_oldest_unsent_seconds.set(max(0.0, float(row["age"])))

    async def replay_recent(self) -> int:
        """The broker came back without our records: send again, in order, every row sent within the
        replay window (`HARMON_OUTBOX_REPLAY_S`); consumers' inboxes drop what they already had."""
        sent = 0
        last_id = 0
        while True:  # in pages, so a busy window does not load into memory at once
            async with self._db.transaction(RELAY) as tx:
                rows = await tx.conn.fetch(
                    "SELECT id, topic, key, value FROM outbox WHERE sent_at IS NOT NULL AND id > $1"
                    " AND sent_at > now() - make_interval(secs => $2) ORDER BY id LIMIT 500",
                    last_id, float(self._replay_s))
            if not rows:
                break
            acks = [await self._link.publish(r["topic"], r["key"], r["value"], _headers(r["value"])) for r in rows]
            await asyncio.gather(*acks)
            sent += len(rows)
            last_id = rows[-1]["id"]
        log.warning("replayed %d outbox message(s) sent in the last %.0f s", sent, self._replay_s)
        return sent

    async def _relay_loop(self) -> None:
        while True:
            await asyncio.sleep(self._relay_interval_s)
            try:
                await self.relay_once()
            except Exception as e:  # a database or broker outage: the rows wait, nothing is lost
                log.warning("outbox relay failed (%r); retrying in %.1fs", e, self._relay_interval_s)
            now = asyncio.get_running_loop().time()
            if now >= self._next_sample:  # also while the broker is down: that is when the age grows
                self._next_sample = now + self._sample_interval_s
                try:
                    await self.sample()
                except Exception as e:  # the database is down: the relay's warning says so already
                    log.debug("could not sample the outbox (%r)", e)


def _headers(value: bytes) -> dict[str, str] | None:
    """A stored row's headers: its envelope's traceparent, as the publish after commit sent it."""
    return headers_for(traceparent_in(value))
