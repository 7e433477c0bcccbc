"""How a service consumes and emits: the unit of work (state + outbox + inbox in one transaction) and the
dispatcher that runs each record's handler and gives each failure class its one behaviour
(libs/runtime/failures.py): answered and dead-lettered, parked, or consumption paused."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from libs.contracts.base import Failure, Message, Rejection
from libs.contracts.envelope import Envelope
from libs.contracts.topics import TopicSpec

from .broker import BrokerLink
from .consumer import Consumer
from .db import RuntimeTables
from .failures import BrokerUnavailable, DependencyDown, FailureClass, classify, failure_code
from .kafka import GapGuard
from .logs import request_id_var
from .metrics import Metrics
from .outbox import Outbox, OutgoingMessage
from .parking import Parking, Record
from .scoping import bind, unscoped_session
from .settings import ServiceSettings

log = logging.getLogger("harmon.messaging")

QUICK_RETRY_DELAYS_S = (0.05, 0.15, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4)  # the first three: within 1 s


@dataclass
class ServiceContext:
    name: str
    settings: ServiceSettings
    link: BrokerLink
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    tables: RuntimeTables
    outbox: Outbox
    metrics: Metrics
    consumers: list[Consumer] = field(default_factory=list)
    routes: dict[str, dict[str, "Handler"]] = field(default_factory=dict)  # topic → message type → handler
    extras: dict = field(default_factory=dict)
    parking: Parking | None = None

    def uow(self, incoming: Envelope | None = None, *, unscoped: str | None = None) -> "UnitOfWork":
        """A unit of work scoped to `incoming`'s tenant and mode; `unscoped="why"` for cross-tenant work."""
        return UnitOfWork(self, incoming, unscoped)

    async def reply_now(self, incoming: Envelope, payload: Message) -> None:
        """Answer a query that changed nothing: no outbox row needed."""
        if not incoming.reply_to:
            log.warning("%s has no reply_to; reply %s dropped", incoming.type, payload.type)
            return
        env = derive(incoming, payload, correlation_id=incoming.correlation_id)
        ack = await self.link.publish(incoming.reply_to, incoming.correlation_id, env.to_bytes())
        # not awaited: a reply the broker loses leaves the caller to time out (504) and retry
        ack.add_done_callback(_log_unconfirmed_reply)


def _log_unconfirmed_reply(ack: asyncio.Future) -> None:
    if not ack.cancelled() and ack.exception() is not None:
        log.warning("a reply was not confirmed by the broker: %r", ack.exception())


def derive(incoming: Envelope | None, payload: Message, **fields) -> Envelope:
    """An envelope caused by `incoming`: same tenant, mode, request and (by default) correlation."""
    base: dict = {}
    if incoming is not None:
        base = dict(
            tenant_id=incoming.tenant_id,
            livemode=incoming.livemode,
            request_id=incoming.request_id,
            correlation_id=incoming.correlation_id,
            causation_id=incoming.message_id,
        )
    base.update({k: v for k, v in fields.items() if v is not None})
    return Envelope(payload=payload, **base)


class Duplicate(Exception):
    """The message was processed before (its id is in the inbox)."""


class UnitOfWork:
    """One transaction: the handler's state change, the inbox record and every message it emits."""

    def __init__(self, ctx: ServiceContext, incoming: Envelope | None, unscoped: str | None = None):
        self.ctx = ctx
        self.incoming = incoming
        self._unscoped = unscoped
        self._pending: list[OutgoingMessage] = []
        self._claim = False
        self.session: AsyncSession

    async def __aenter__(self) -> "UnitOfWork":
        self.session = self.ctx.sessionmaker()
        if self._unscoped:
            unscoped_session(self.session, self._unscoped)
        elif self.incoming is not None:
            # every query of the handler sees only the message's tenant and mode
            bind(self.session, self.incoming.tenant_id, self.incoming.livemode)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()

    async def claim(self) -> None:
        """Record the incoming message as processed when the unit of work commits.

        The inbox row is written by the same statement as the outbox rows (see `commit`), one round
        trip fewer per message; a message processed before makes `commit` raise `Duplicate`, and the
        transaction — whatever the handler decided again — is rolled back.
        """
        assert self.incoming is not None
        self._claim = True

    def send(self, topic: str, key: str | None, payload: Message, **fields) -> Envelope:
        env = derive(self.incoming, payload, **fields)
        self._pending.append(OutgoingMessage(env.message_id, env.tenant_id, env.livemode, topic, key, env.to_bytes()))
        return env

    def reply(self, payload: Message) -> None:
        """Answer the incoming command on its `reply_to`, keyed by its correlation id."""
        assert self.incoming is not None
        if not self.incoming.reply_to:
            log.warning("%s has no reply_to; reply %s dropped", self.incoming.type, payload.type)
            return
        self.send(self.incoming.reply_to, self.incoming.correlation_id, payload)

    def discard(self) -> None:
        """Forget messages queued by a decision that was rolled back."""
        self._pending = []

    async def commit(self) -> None:
        """Commit the state change with its inbox record and outbox rows; then hand the rows to the producer."""
        claim = None
        if self._claim:
            assert self.incoming is not None
            claim = (self.incoming.message_id, self.incoming.tenant_id, self.incoming.livemode, self.incoming.type)
        outbox = self.ctx.outbox
        confirmed = outbox.take_confirmed()
        try:
            if not await outbox.write(await self.session.connection(), claim, self._pending, confirmed):
                raise Duplicate(self.incoming.message_id if self.incoming else "")
            await self.session.commit()
        except BaseException:
            outbox.give_back(confirmed)
            raise
        sent, self._pending = self._pending, []
        if sent:
            await outbox.publish_committed(sent)


async def answer_command(ctx: ServiceContext, env: Envelope, decide: Callable[[UnitOfWork], Awaitable[Message | None]]) -> None:
    """Run a state-changing command once: inbox, decision, reply and emitted messages commit together.

    A `Rejection` rolls back whatever the decision wrote and replies the failure instead.
    """
    async with ctx.uow(env) as uow:
        await uow.claim()
        try:
            result = await decide(uow)
        except Rejection as r:
            await uow.session.rollback()
            uow.discard()
            result = r.failure()
        if result is not None:
            uow.reply(result)
        await uow.commit()


Handler = Callable[[Message, Envelope, ServiceContext], Awaitable[None]]


def gap_guard(ctx: ServiceContext, name: str) -> GapGuard | None:
    """The embedded broker's skip guard for one consumer, counted on /metrics; None on real Kafka."""
    if ctx.settings.broker_mode != "embedded":
        return None
    return GapGuard(name, lambda topic: ctx.metrics.skips_reread.labels(topic=topic).inc())


def subscribe(ctx: ServiceContext, topic: TopicSpec | str, handlers: dict[type[Message], Handler]) -> None:
    """Route `topic`'s messages to handlers by type; `open_subscriptions` then reads every routed topic."""
    name = topic.name if isinstance(topic, TopicSpec) else topic
    ctx.routes.setdefault(name, {}).update({cls.model_fields["type"].default: h for cls, h in handlers.items()})


class Dispatcher:
    """Runs one record's handler and gives its failure the behaviour of its class."""

    def __init__(self, ctx: ServiceContext, parking: Parking):
        self.ctx = ctx
        self.parking = parking

    # -- the consumer's entry point ----------------------------------------------------------------

    async def on_record(self, raw: ConsumerRecord) -> None:
        """Handled, answered and dead-lettered, or parked: returns. A dependency down: raises DependencyDown."""
        rec = Record(raw.topic, raw.partition, raw.offset, raw.key, raw.value)
        decoded = await self._decode(rec)
        if decoded is None:
            return
        env, handler = decoded
        if self.parking.blocked(rec):
            async with self.parking.lock(rec):
                if self.parking.blocked(rec):  # the relay may have freed the key meanwhile
                    await self.parking.park(rec, env.tenant_id, env.livemode, env.message_id, env.type,
                                            "behind a parked message of the same key", failed=False)
                    self.ctx.metrics.parked_total.labels(topic=rec.topic).inc()
                    return
        outcome, error, attempts = await self.attempt(rec.topic, env, handler, self.ctx.settings.quick_retries)
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

    # -- the parking relay's entry point ------------------------------------------------------------

    async def retry_parked(self, rec: Record, attempts: int) -> tuple[str, str]:
        decoded = await self._decode(rec)
        if decoded is None:  # dead-lettered by _decode
            return "done", ""
        env, handler = decoded
        outcome, error, _ = await self.attempt(rec.topic, env, handler, 0)
        if outcome is None:
            return "done", ""
        if outcome is FailureClass.DOWN:
            return "down", repr(error)
        if outcome is FailureClass.PERMANENT:
            await self.refuse(rec, env, error, attempts)
            return "done", ""
        return "again", f"{type(error).__name__}: {error}"

    # -- the pieces ---------------------------------------------------------------------------------

    async def _decode(self, rec: Record) -> tuple[Envelope, "Handler"] | None:
        try:
            env = Envelope.from_bytes(rec.value)
        except ValidationError as e:
            await self.dead_letter(rec, "invalid_message", f"invalid message: {e}", 1)
            return None
        handler = self.ctx.routes.get(rec.topic, {}).get(env.type)
        if handler is None:
            await self.dead_letter(rec, "unhandled_type", f"{env.type} is not handled on {rec.topic} by {self.ctx.name}", 1)
            return None
        return env, handler

    async def attempt(self, topic: str, env: Envelope, handler: "Handler",
                      quick_retries: int) -> tuple[FailureClass | None, BaseException | None, int]:
        """Run the handler, retrying a transient failure `quick_retries` times: (None, None, n) when handled."""
        ctx = self.ctx
        token = request_id_var.set(env.request_id or "-")
        try:
            attempt = 0
            while True:
                attempt += 1
                try:
                    with ctx.metrics.handler_seconds.labels(type=env.type).time():
                        await handler(env.payload, env, ctx)
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
            request_id_var.reset(token)

    async def refuse(self, rec: Record, env: Envelope, error: BaseException | None, attempts: int) -> None:
        """A permanent failure: the caller gets its catalogue failure now, the message goes to the DLT."""
        code, message, param = failure_code(error) if error is not None else ("internal_error", "failed", None)
        if env.reply_to:
            reply = derive(env, Failure(code=code, message=message, param=param), correlation_id=env.correlation_id)
            try:
                await self.ctx.link.publish(env.reply_to, env.correlation_id, reply.to_bytes())
            except BrokerUnavailable:
                log.warning("%s %s: the refusal could not be sent (broker unavailable)", env.type, env.message_id)
        await self.dead_letter(rec, "permanent", f"{type(error).__name__}: {error}", attempts)

    async def dead_letter(self, rec: Record, reason: str, detail: str, attempts: int) -> None:
        """Publish the record unchanged to `<topic>.dlt`, with why in its headers; BrokerUnavailable if it cannot."""
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
        await self.ctx.link.publish_and_wait(dlt, rec.key, rec.value, headers)
        self.ctx.metrics.dead_lettered.labels(topic=rec.topic, reason=reason).inc()
        log.error("dead-lettered %s[%s]@%s to %s (%s): %s", rec.topic, rec.partition, rec.offset, dlt, reason, detail[:500])


async def _database_answers(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        return True
    except Exception:
        return False


async def watch_dependencies(ctx: ServiceContext) -> None:
    """Resume paused consumers once the database answers and the broker is up again."""
    while True:
        await asyncio.sleep(0.5)
        paused = [c for c in ctx.consumers if c.paused_reason is not None]
        ctx.extras["database_down"] = bool(paused) and not await _database_answers(ctx.engine)
        if paused and ctx.link.up and not ctx.extras["database_down"]:
            for consumer in paused:
                consumer.resume()


def open_subscriptions(ctx: ServiceContext) -> Consumer | None:
    """One consumer per service instance, in the group named after the service, over every routed topic.

    One consumer rather than one per topic: the embedded broker does not wake a waiting fetch when
    a message arrives, so every consumer polls every `fetch_max_wait_ms`, and that polling, not the
    messages, was most of the CPU of an idle stack. Call `start_subscriptions` once the link is up.
    """
    if not ctx.routes:
        return None
    m = ctx.metrics
    parking = Parking(ctx.engine, ctx.tables.parked, max_attempts=ctx.settings.max_attempts,
                      dead_letter=lambda rec, reason, detail, n: dispatcher.dead_letter(rec, reason, detail, n),
                      on_change=lambda count, age: (m.parked.set(count), m.parked_oldest_seconds.set(age)))
    dispatcher = Dispatcher(ctx, parking)
    consumer = Consumer(ctx.link, ctx.name, list(ctx.routes), dispatcher.on_record, group_id=ctx.name,
                        guard=lambda: gap_guard(ctx, ctx.name), on_assigned=parking.assigned,
                        on_lag=lambda tp, lag: m.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag))
    ctx.parking = parking
    ctx.consumers.append(consumer)
    ctx.extras["dispatcher"] = dispatcher
    return consumer


async def start_subscriptions(ctx: ServiceContext) -> None:
    for consumer in ctx.consumers:
        await consumer.start()
    if ctx.parking is not None:
        ctx.parking.start(ctx.extras["dispatcher"].retry_parked)
    ctx.extras["dependency_watch"] = asyncio.create_task(watch_dependencies(ctx))


async def stop_consuming(ctx: ServiceContext) -> None:
    """Finish the batches in flight and commit their offsets, then leave the groups."""
    watch = ctx.extras.pop("dependency_watch", None)
    if watch is not None:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
    if ctx.parking is not None:
        await ctx.parking.stop()
    for consumer in ctx.consumers:
        await consumer.stop()
