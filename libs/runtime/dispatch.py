"""The dispatcher: a partition's batch of records through their handlers, and each failure's one behaviour.

A batch (what one fetch brought for one partition) runs in **one transaction**: each message's
handler in key order, the transaction re-scoped when the tenant changes, then one statement claims
every message in the inbox and queues every reply and event in the outbox (inbox.py), one commit,
one produce batch, and the consumer commits the last offset. If anything in the batch goes wrong —
a rejection, a failure of any class, a duplicate — the transaction is rolled back and the batch's
messages are handled **one by one**, so per-message semantics stay exactly as they are alone
(docs/operations.md, "When a message fails"): a rejection answered, a permanent failure answered
and dead-lettered, a transient one retried then parked (its key's later messages behind it), a
duplicate skipped, a dependency down pausing the consumer at that message.
"""

import asyncio
import logging
import time
from dataclasses import dataclass

from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from libs.contracts.base import Failure, Message, Rejection, RecordRefused
from libs.contracts.envelope import Envelope

from . import inbox
from .context import Route, ServiceContext
from .database import Scope, Unscoped
from .failures import BrokerUnavailable, DependencyDown, FailureClass, PermanentFailure, classify, failure_code
from .logs import enter_message, leave_message
from .parking import Parking, Record
from .tracing import consuming, headers_for
from .unit_of_work import OutgoingMessage, derive

log = logging.getLogger("harmon.dispatch")

QUICK_RETRY_DELAYS_S = (0.05, 0.15, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4)  # the first three: within 1 s
SEVERAL_TENANTS = Unscoped("the inbox claims and outbox rows of a batch of several tenants' messages")


@dataclass(frozen=True)
class Unreadable:
    """A record no handler can take: it goes to the DLT with this class and reason."""

    reason: str  # invalid_message, unhandled_type
    detail: str


class Duplicate(Exception):
    """The message was processed before (its id is in the inbox)."""


class _Redo(Exception):
    """The batch cannot commit as a whole: handle its messages one by one."""


def _scope(env: Envelope) -> Scope:
    return Scope(env.tenant_id, env.livemode)


def _reply_row(env: Envelope, reply: Message) -> OutgoingMessage | None:
    if not env.reply_to:
        return None  # e.g. compensation that wants no answer
    out = derive(env, reply, correlation_id=env.correlation_id)
    return OutgoingMessage(out.message_id, out.tenant_id, out.livemode, env.reply_to, env.correlation_id, out.to_bytes(),
                           out.traceparent)


def _claim(env: Envelope) -> inbox.Claim:
    return inbox.Claim(env.message_id, env.tenant_id, env.livemode, env.type)


class Dispatcher:
    def __init__(self, ctx: ServiceContext, parking: Parking):
        self.ctx = ctx
        self.parking = parking

    # -- the consumer's entry point ----------------------------------------------------------------

    async def on_batch(self, raws: list[ConsumerRecord]) -> None:
        """Handle one partition's records in order. A dependency down raises `Stopped` saying how many are done:
        the consumer pauses and reads the rest again after resuming."""
        recs = [Record(r.topic, r.partition, r.offset, r.key, r.value) for r in raws]
        decoded = [self._decode(rec) for rec in recs]
        if not any(isinstance(d, Unreadable) for d in decoded) and not any(self.parking.blocked(r) for r in recs):
            if await self._batch([(rec, env, route) for rec, (env, route) in zip(recs, decoded)]):
                return
        for i, (rec, d) in enumerate(zip(recs, decoded)):
            try:
                if isinstance(d, Unreadable):
                    await self.dead_letter(rec, d.reason, d.detail, attempts=1)
                else:
                    await self._one(rec, *d)
            except DependencyDown as e:
                if i == 0 or not isinstance(e, BrokerUnavailable):
                    log.warning("%s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, e)
                raise Stopped(i, e) from e

    # -- the parking relay's entry point ------------------------------------------------------------

    async def retry_parked(self, rec: Record, attempts: int) -> tuple[str, str]:
        d = self._decode(rec)
        if isinstance(d, Unreadable):
            await self.dead_letter(rec, d.reason, d.detail, attempts=attempts)
            return "done", ""
        env, route = d
        outcome, error, _ = await self.attempt(rec, env, route, 0)
        if outcome is None:
            return "done", ""
        if outcome is FailureClass.DOWN:
            return "down", repr(error)
        if outcome is FailureClass.PERMANENT:
            await self.refuse(rec, env, error, attempts)
            return "done", ""
        return "again", f"{type(error).__name__}: {error}"

    # -- the fast path: the whole batch in one transaction --------------------------------------------

    async def _batch(self, items: list[tuple[Record, Envelope, Route]]) -> bool:
        ctx = self.ctx
        claims: list[inbox.Claim] = []
        rows: list[OutgoingMessage] = []
        answers: list[OutgoingMessage] = []  # query replies: published, not queued
        timings: list[tuple[str, float]] = []
        observations: list = []  # uow.observe: recorded after the commit
        try:
            async with ctx.db.transaction(_scope(items[0][1])) as tx:
                for rec, env, route in items:
                    await tx.rescope(_scope(env))
                    uow = ctx.unit_of_work(tx.conn, tx.scope, env, settings=ctx.settings)
                    token = enter_message(env, rec.topic, rec.partition, rec.offset)
                    started = time.perf_counter()
                    with consuming(rec.topic, env.type, env.message_id, env.traceparent, env.request_id):
                        try:
                            reply = await route.handler(env.payload, uow)
                        except Rejection as r:
                            if not route.query:
                                raise
                            # a query wrote nothing: its refusal is its answer, and the batch goes on (had a
                            # statement of it failed, the transaction is aborted and the bookkeeping fails: redo)
                            reply = r.failure()
                        finally:
                            leave_message(token)
                        row = _reply_row(env, reply) if reply is not None else None
                    timings.append((env.type, time.perf_counter() - started))
                    observations += uow.observations
                    if route.query:  # what a query hands on (e.g. the cart to pricing) goes like an answer
                        answers += uow.outbox.pending + ([row] if row else [])
                        continue
                    claims.append(_claim(env))
                    rows += uow.outbox.pending + ([row] if row else [])
                owners = {(c.tenant_id, c.livemode) for c in claims} | {(m.tenant_id, m.livemode) for m in rows}
                if isinstance(tx.scope, Scope) and owners - {(tx.scope.tenant_id, tx.scope.livemode)}:
                    await tx.rescope(SEVERAL_TENANTS)
                if await inbox.record(tx.conn, claims, rows) != len(claims):
                    raise _Redo("a message of the batch was processed before")
        except Exception as e:  # noqa: BLE001 — every outcome is decided again, message by message
            log.debug("batch of %d on %s handled one by one: %s: %s", len(items), items[0][0].topic,
                      type(e).__name__, e)
            ctx.metrics.batches_split.labels(topic=items[0][0].topic).inc()
            return False
        await self._publish(rows, answers)
        for (rec, env, _), (kind, seconds) in zip(items, timings):
            ctx.metrics.handler_seconds.labels(type=kind).observe(seconds)
            ctx.metrics.handled.labels(topic=rec.topic, type=env.type).inc()
        ctx.metrics.batch_size.labels(topic=items[0][0].topic).observe(len(items))
        record_observations(ctx, observations)
        return True

    async def _publish(self, rows: list[OutgoingMessage], answers: list[OutgoingMessage]) -> None:
        if rows:
            await self.ctx.outbox.publish_committed(rows)
        for m in answers:
            try:
                ack = await self.ctx.link.publish(m.topic, m.key, m.value, headers_for(m.traceparent))
            except BrokerUnavailable:
                log.warning("a query's reply was not sent (broker unavailable); the caller times out and retries")
                continue
            # not awaited: a reply the broker loses leaves the caller to time out (504) and retry
            ack.add_done_callback(_log_unconfirmed_reply)

    # -- one message alone ----------------------------------------------------------------------------

    async def _one(self, rec: Record, env: Envelope, route: Route) -> None:
        """Handled, answered and dead-lettered, or parked: returns. A dependency down: raises DependencyDown."""
        if self.parking.blocked(rec):
            async with self.parking.lock(rec):
                if self.parking.blocked(rec):  # the relay may have freed the key meanwhile
                    await self.parking.park(rec, env.tenant_id, env.livemode, env.message_id, env.type,
                                            "behind a parked message of the same key", failed=False)
                    self.ctx.metrics.parked_total.labels(topic=rec.topic).inc()
                    return
        outcome, error, attempts = await self.attempt(rec, env, route, self.ctx.settings.quick_retries)
        if outcome is None:
            return
        if outcome is FailureClass.DOWN:
            raise DependencyDown(f"{type(error).__name__}: {error}")
        if outcome is FailureClass.PERMANENT:
            await self.refuse(rec, env, error, attempts)
            return
        async with self.parking.lock(rec):
            await self.parking.park(rec, env.tenant_id, env.livemode, env.message_id, env.type,
                                    f"{type(error).__name__}: {error} (after {attempts} attempts)", failed=True)
        self.ctx.metrics.parked_total.labels(topic=rec.topic).inc()

    async def _run(self, env: Envelope, route: Route) -> None:
        """One message in its own transaction; a rejection rolls back what it wrote and is answered instead."""
        ctx = self.ctx
        rejected: Rejection | None = None
        rows: list[OutgoingMessage] = []
        uow = None
        try:
            async with ctx.db.transaction(_scope(env)) as tx:
                if not route.query and await inbox.seen(tx.conn, [env.message_id]):
                    raise Duplicate(env.message_id)
                uow = ctx.unit_of_work(tx.conn, tx.scope, env, settings=ctx.settings)
                reply = await route.handler(env.payload, uow)
                row = _reply_row(env, reply) if reply is not None else None
                if route.query:
                    answers = uow.outbox.pending + ([row] if row else [])
                else:
                    answers = []
                    rows = uow.outbox.pending + ([row] if row else [])
                    if not await inbox.record(tx.conn, [_claim(env)], rows):
                        raise Duplicate(env.message_id)
        except Rejection as r:
            rejected = r
        if rejected is None:
            await self._publish(rows, answers)
            record_observations(ctx, uow.observations if uow is not None else [])
            return
        row = _reply_row(env, rejected.failure())
        if route.query:
            await self._publish([], [row] if row else [])
            return
        async with ctx.db.transaction(_scope(env)) as tx:
            if not await inbox.record(tx.conn, [_claim(env)], [row] if row else []):
                raise Duplicate(env.message_id)
        await self._publish([row] if row else [], [])

    def _decode(self, rec: Record) -> "tuple[Envelope, Route] | Unreadable":
        try:
            env = Envelope.from_bytes(rec.value)
        except ValidationError as e:
            return Unreadable("invalid_message", f"invalid message: {e}")
        route = self.ctx.routes.get(rec.topic, {}).get(env.type)
        if route is None:
            return Unreadable("unhandled_type", f"{env.type} is not handled on {rec.topic} by {self.ctx.name}")
        return env, route

    async def attempt(self, rec: Record, env: Envelope, route: Route,
                      quick_retries: int) -> tuple[FailureClass | None, BaseException | None, int]:
        """Run the message alone, retrying a transient failure `quick_retries` times: (None, None, n) when done."""
        ctx, topic = self.ctx, rec.topic
        token = enter_message(env, rec.topic, rec.partition, rec.offset)
        try:
            attempt = 0
            while True:
                attempt += 1
                try:
                    with ctx.metrics.handler_seconds.labels(type=env.type).time(), \
                            consuming(topic, env.type, env.message_id, env.traceparent, env.request_id):
                        await self._run(env, route)
                    ctx.metrics.handled.labels(topic=topic, type=env.type).inc()
                    return None, None, attempt
                except Duplicate:
                    ctx.metrics.duplicates.labels(topic=topic).inc()
                    return None, None, attempt
                except Exception as e:
                    cls = classify(e)
                    if cls is not FailureClass.TRANSIENT or attempt > quick_retries:
                        if cls is FailureClass.DOWN:
                            log.warning("%s %s: dependency unavailable (%s: %s)", env.type, env.message_id,
                                        type(e).__name__, e)
                        elif cls is FailureClass.PERMANENT:
                            log.warning("%s %s cannot be applied (%s: %s)", env.type, env.message_id, type(e).__name__, e)
                        return cls, e, attempt
                    ctx.metrics.retries.labels(topic=topic).inc()
                    log.info("%s %s lost a race (%s: %s); quick retry %d", env.type, env.message_id,
                             type(e).__name__, e, attempt)
                    await asyncio.sleep(QUICK_RETRY_DELAYS_S[attempt - 1])
        finally:
            leave_message(token)

    async def refuse(self, rec: Record, env: Envelope, error: BaseException | None, attempts: int) -> None:
        """A permanent failure: the caller gets its catalogue failure now, the message goes to the DLT."""
        code, message, param = failure_code(error) if error is not None else ("internal_error", "failed", None)
        if env.reply_to:
            reply = derive(env, Failure(code=code, message=message, param=param), correlation_id=env.correlation_id)
            try:
                await self.ctx.link.publish(env.reply_to, env.correlation_id, reply.to_bytes())
            except BrokerUnavailable:
                log.warning("%s %s: the refusal could not be sent (broker unavailable)", env.type, env.message_id)
        if isinstance(error, PermanentFailure | RecordRefused):  # a record that does not fit: its catalogue code says why
            await self.dead_letter(rec, "permanent", f"{error.code}: {error.message}", attempts=attempts,
                                   code=str(error.code))
            return
        await self.dead_letter(rec, "permanent", f"{type(error).__name__}: {error}", attempts=attempts)

    async def dead_letter(self, rec: Record, reason: str, detail: str, *, attempts: int,
                          code: str | None = None) -> None:
        """Publish the record unchanged to `<topic>.dlt`, with why in its headers; BrokerUnavailable if it cannot.
        `code`: the catalogue code of a record a handler refused (`record_conflict`, `over_fulfilment`, …)."""
        dlt = f"{rec.topic}.dlt"
        headers = {
            "harmon-dlt-reason": detail[:1000],
            "harmon-dlt-class": reason,  # invalid_message, unhandled_type, permanent, attempts_exhausted
            "harmon-dlt-source-topic": rec.topic,
            "harmon-dlt-partition": str(rec.partition),
            "harmon-dlt-offset": str(rec.offset),
            "harmon-dlt-attempts": str(attempts),
            "harmon-dlt-consumer": self.ctx.name,
        }
        if code is not None:
            headers["harmon-dlt-code"] = code
        await self.ctx.link.publish_and_wait(dlt, rec.key, rec.value, headers)
        self.ctx.metrics.dead_lettered.labels(topic=rec.topic, reason=reason).inc()
        log.error("dead-lettered %s[%s]@%s to %s (%s): %s", rec.topic, rec.partition, rec.offset, dlt, reason, detail[:500])


def record_observations(ctx: ServiceContext, observations: list) -> None:
    """What handlers asked to count (`uow.observe`), now that their transaction committed; a metric never fails
    the message."""
    for record in observations:
        try:
            record(ctx.metrics)
        except Exception:
            log.exception("a metric observation failed")


class Stopped(DependencyDown):
    """A dependency went down at the `done`-th record of a batch."""

    def __init__(self, done: int, cause: BaseException):
        super().__init__(str(cause) or type(cause).__name__)
        self.done = done


def _log_unconfirmed_reply(ack: asyncio.Future) -> None:
    if not ack.cancelled() and ack.exception() is not None:
        log.warning("a reply was not confirmed by the broker: %r", ack.exception())
