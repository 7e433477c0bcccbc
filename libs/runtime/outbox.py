"""Outbox delivery: publish right after commit (the hot path), and a relay that sends whatever that missed.

A row is committed in the same transaction as the state change it announces, so a crash can only
delay a message, never lose it; consumers' inboxes make the occasional second delivery harmless.
"""

import asyncio
import logging
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .broker import BrokerLink
from .db import RuntimeTables
from .failures import BrokerUnavailable

log = logging.getLogger("harmon.outbox")


@dataclass(frozen=True)
class OutgoingMessage:
    message_id: str
    tenant_id: str
    livemode: bool
    topic: str
    key: str | None
    value: bytes


class Outbox:
    def __init__(self, link: BrokerLink, engine: AsyncEngine, tables: RuntimeTables, *, relay_interval_s: float = 1.0,
                 relay_grace_s: float = 2.0, replay_s: float = 300.0):
        self._link = link
        self._replay_s = replay_s
        self._engine = engine
        self._table = tables.outbox
        self._relay_interval_s = relay_interval_s
        self._relay_grace_s = relay_grace_s
        self._sent: list[str] = []
        self._sent_flag = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._confirming: set[asyncio.Task] = set()
        self._next_prune = 0.0

    async def write(self, conn: AsyncConnection, claim: tuple[str, str, bool, str] | None,
                    messages: list[OutgoingMessage], confirmed: list[str]) -> bool:
        """In the caller's transaction and one round trip: claim the incoming message in the inbox, queue
        `messages` in the outbox, and mark `confirmed` (rows the broker acknowledged) sent.

        Returns False if the claim found the message already processed (the caller rolls back).
        """
        if claim is None and not messages and not confirmed:
            return True
        params = dict(
            confirmed=confirmed,
            ids=[m.message_id for m in messages], tenants=[m.tenant_id for m in messages],
            modes=[m.livemode for m in messages], topics=[m.topic for m in messages],
            keys=[m.key for m in messages], values=[m.value for m in messages],
        )
        if claim is None:
            return (await conn.execute(_WRITE, params)).scalar_one()
        in_id, in_tenant, in_mode, in_type = claim
        params.update(in_id=in_id, in_tenant=in_tenant, in_mode=in_mode, in_type=in_type)
        return (await conn.execute(_CLAIM_AND_WRITE, params)).scalar_one()

    def take_confirmed(self) -> list[str]:
        """Ids the broker confirmed since the last call, for the next transaction to mark sent."""
        ids, self._sent = self._sent, []
        return ids

    def give_back(self, ids: list[str]) -> None:
        """A transaction that was to mark these sent did not commit: mark them later."""
        if ids:
            self._sent.extend(ids)
            self._sent_flag.set()

    async def publish_committed(self, messages: list[OutgoingMessage]) -> None:
        """Hand rows just committed to the producer and return; acks are awaited in the background.

        The handler does not wait for the broker's ack: the rows are committed, so a message the
        broker never confirms is re-sent by the relay. The producer keeps each partition's order.
        """
        try:
            acks = [await self._link.publish(m.topic, m.key, m.value) for m in messages]
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

    # The relay and its bookkeeping are cross-tenant on purpose: they send and mark every tenant's
    # rows by id, through a connection (outside session scoping, see scoping.py), never reading data.
    async def _flush_sent(self) -> None:
        if not self._sent:
            return
        ids, self._sent = self._sent, []
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.update(self._table).where(self._table.c.message_id.in_(ids)).values(sent_at=sa.func.now())
            )

    async def _mark_sent_loop(self) -> None:
        # Busy services mark rows sent in the next handler's statement (`write`); this marks what a
        # quiet service left over, a little later, so the relay (grace period) does not resend it.
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
        t = self._table
        async with self._engine.begin() as conn:
            rows = (
                await conn.execute(
                    sa.select(t.c.id, t.c.topic, t.c.key, t.c.value)
                    .where(t.c.sent_at.is_(None), t.c.created_at < sa.func.now() - sa.text(f"interval '{self._relay_grace_s} seconds'"))
                    .order_by(t.c.id)
                    .limit(200)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            acks = [await self._link.publish(row.topic, row.key, row.value) for row in rows]
            await asyncio.gather(*acks)
            if rows:
                await conn.execute(sa.update(t).where(t.c.id.in_([r.id for r in rows])).values(sent_at=sa.func.now()))
                log.info("relayed %d outbox message(s)", len(rows))
            # Sent rows are kept a day for inspection, then pruned (a minute late at most: one pass a minute).
            now = asyncio.get_running_loop().time()
            if now >= self._next_prune:
                self._next_prune = now + 60.0
                await conn.execute(sa.delete(t).where(t.c.sent_at < sa.func.now() - sa.text("interval '1 day'")))
        return len(rows)

    async def unsent(self) -> int:
        """Rows not yet confirmed by the broker (readiness's `quiet`)."""
        t = self._table
        async with self._engine.connect() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(t).where(t.c.sent_at.is_(None))))

    async def replay_recent(self) -> int:
        """The broker came back without our records: send again, in order, every row sent within the
        replay window (`HARMON_OUTBOX_REPLAY_S`); consumers' inboxes drop what they already had."""
        t = self._table
        sent = 0
        last_id = 0
        while True:  # in pages, so a busy window does not load into memory at once
            async with self._engine.connect() as conn:
                rows = (await conn.execute(
                    sa.select(t.c.id, t.c.topic, t.c.key, t.c.value)
                    .where(t.c.sent_at.is_not(None), t.c.id > last_id,
                           t.c.sent_at > sa.func.now() - sa.text(f"interval '{float(self._replay_s)} seconds'"))
                    .order_by(t.c.id).limit(500)
                )).all()
            if not rows:
                break
            acks = [await self._link.publish(row.topic, row.key, row.value) for row in rows]
            await asyncio.gather(*acks)
            sent += len(rows)
            last_id = rows[-1].id
        log.warning("replayed %d outbox message(s) sent in the last %.0f s", sent, self._replay_s)
        return sent

    async def _relay_loop(self) -> None:
        while True:
            await asyncio.sleep(self._relay_interval_s)
            try:
                await self.relay_once()
            except Exception as e:  # a database or broker outage: the rows wait, nothing is lost
                log.warning("outbox relay failed (%r); retrying in %.1fs", e, self._relay_interval_s)


# The inbox claim, the outbox rows and the sent marks of one unit of work, in one statement: each
# round trip to PostgreSQL costs more here than the SQL it carries. Data-modifying CTEs run once and
# to completion whether or not the final SELECT reads them. Table names are the runtime's own.
_QUEUE_AND_MARK = """
marked AS (
    UPDATE outbox SET sent_at = now()
    WHERE sent_at IS NULL AND message_id = ANY(CAST(:confirmed AS text[]))
    RETURNING 1
),
queued AS (
    INSERT INTO outbox (message_id, tenant_id, livemode, topic, key, value)
    SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:tenants AS text[]), CAST(:modes AS boolean[]),
                         CAST(:topics AS text[]), CAST(:keys AS text[]), CAST(:values AS bytea[]))
    RETURNING 1
)"""
_WRITE = sa.text(f"WITH {_QUEUE_AND_MARK} SELECT true")
_CLAIM_AND_WRITE = sa.text(f"""WITH claimed AS (
    INSERT INTO inbox (message_id, tenant_id, livemode, message_type)
    VALUES (:in_id, :in_tenant, :in_mode, :in_type)
    ON CONFLICT DO NOTHING
    RETURNING 1
), {_QUEUE_AND_MARK}
SELECT EXISTS (SELECT 1 FROM claimed)""")
