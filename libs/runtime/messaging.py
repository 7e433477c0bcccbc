"""How a service consumes and emits: the unit of work (state + outbox + inbox in one transaction) and the subscriber wrapper (retries, dead letters)."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from libs.contracts.base import Message, Rejection
from libs.contracts.envelope import Envelope
from libs.contracts.topics import TopicSpec

from .db import RuntimeTables
from .kafka import GapGuard, OffsetCommitter, subscriber_options
from .logs import request_id_var
from .metrics import Metrics
from .outbox import Outbox, OutgoingMessage
from .scoping import bind, unscoped_session
from .settings import ServiceSettings

log = logging.getLogger("harmon.messaging")

# A dependency that is down: keep the message (and the partition's order) and try again, without limit.
TRANSIENT = (OSError, ConnectionError, asyncio.TimeoutError, InterfaceError, OperationalError, KafkaError)


def is_transient(e: BaseException) -> bool:
    """A dependency that is down, or a pooled connection found dead (invalidated on use)."""
    return isinstance(e, TRANSIENT) or (isinstance(e, DBAPIError) and e.connection_invalidated)


@dataclass
class ServiceContext:
    name: str
    settings: ServiceSettings
    broker: KafkaBroker
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    tables: RuntimeTables
    outbox: Outbox
    metrics: Metrics
    subscribers: list = field(default_factory=list)
    routes: dict[str, dict[str, "Handler"]] = field(default_factory=dict)  # topic → message type → handler
    extras: dict = field(default_factory=dict)

    def uow(self, incoming: Envelope | None = None, *, unscoped: str | None = None) -> "UnitOfWork":
        """A unit of work scoped to `incoming`'s tenant and mode; `unscoped="why"` for cross-tenant work."""
        return UnitOfWork(self, incoming, unscoped)

    async def reply_now(self, incoming: Envelope, payload: Message) -> None:
        """Answer a query that changed nothing: no outbox row needed."""
        if not incoming.reply_to:
            log.warning("%s has no reply_to; reply %s dropped", incoming.type, payload.type)
            return
        env = derive(incoming, payload, correlation_id=incoming.correlation_id)
        ack = await self.broker.publish(env.to_bytes(), topic=incoming.reply_to, key=_key(incoming.correlation_id),
                                        no_confirm=True)
        # not awaited: a reply the broker loses leaves the caller to time out (504) and retry
        ack.add_done_callback(_log_unconfirmed_reply)


def _log_unconfirmed_reply(ack: asyncio.Future) -> None:
    if not ack.cancelled() and ack.exception() is not None:
        log.warning("a reply was not confirmed by the broker: %r", ack.exception())


def _key(key: str | None) -> bytes | None:
    return key.encode() if key else None


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


async def whole_message(msg: KafkaMessage) -> KafkaMessage:
    """Decoder that hands a subscriber the whole message (topic, offset, consumer), not a decoded body;
    the envelope is validated once, by pydantic, from the raw bytes."""
    return msg


def gap_guard(ctx: ServiceContext, name: str) -> GapGuard | None:
    """The embedded broker's skip guard for one consumer, counted on /metrics; None on real Kafka."""
    if ctx.settings.broker_mode != "embedded":
        return None
    return GapGuard(name, lambda topic: ctx.metrics.skips_reread.labels(topic=topic).inc())


async def stop_consuming(ctx: ServiceContext) -> None:
    """Commit the offsets of handled messages, then stop the broker (it waits for handlers in flight)."""
    committer = ctx.extras.get("committer")
    if committer is not None:
        await committer.stop()
    await ctx.broker.stop()


def subscribe(ctx: ServiceContext, topic: TopicSpec | str, handlers: dict[type[Message], Handler]) -> None:
    """Route `topic`'s messages to handlers by type; `open_subscriptions` then reads every routed topic."""
    name = topic.name if isinstance(topic, TopicSpec) else topic
    ctx.routes.setdefault(name, {}).update({cls.model_fields["type"].default: h for cls, h in handlers.items()})


def open_subscriptions(ctx: ServiceContext) -> None:
    """One consumer per service instance, in the group named after the service, over every routed topic.

    One consumer rather than one per topic: the embedded broker does not wake a waiting fetch when
    a message arrives, so every consumer polls every `fetch_max_wait_ms`, and that polling, not the
    messages, was most of the CPU of an idle stack. Each message is decoded, dispatched by type,
    retried, and dead-lettered to `<its topic>.dlt` when it cannot be handled.
    """
    if not ctx.routes:
        return

    async def dead_letter(msg: KafkaMessage, reason: str, attempts: int) -> None:
        raw = msg.raw_message
        dlt = f"{raw.topic}.dlt"
        headers = {
            "harmon-dlt-reason": reason[:1000],
            "harmon-dlt-source-topic": raw.topic,
            "harmon-dlt-partition": str(raw.partition),
            "harmon-dlt-offset": str(raw.offset),
            "harmon-dlt-attempts": str(attempts),
            "harmon-dlt-consumer": ctx.name,
        }
        ctx.metrics.dead_lettered.labels(topic=raw.topic).inc()
        log.error("dead-lettered %s[%s]@%s to %s: %s", raw.topic, raw.partition, raw.offset, dlt, reason)
        while True:
            try:
                await ctx.broker.publish(msg.body, topic=dlt, key=raw.key, headers=headers)
                return
            except KafkaError:
                log.warning("could not publish to %s; retrying", dlt, exc_info=True)
                await asyncio.sleep(1.0)

    committer = OffsetCommitter(ctx.name)
    ctx.extras["committer"] = committer
    guard = gap_guard(ctx, ctx.name)

    async def consume(msg: KafkaMessage) -> None:
        raw = msg.raw_message
        if guard is not None and not guard.admit(msg.consumer, raw.topic, raw.partition, raw.offset):
            return
        await handle(msg)  # handled, retried to success, or dead-lettered: never raises but when cancelled
        committer.processed(msg.consumer, raw.topic, raw.partition, raw.offset)

    async def handle(msg: KafkaMessage) -> None:
        name = msg.raw_message.topic
        try:
            env = Envelope.from_bytes(msg.body)
        except ValidationError as e:
            await dead_letter(msg, f"invalid message: {e}", 1)
            return
        handler = ctx.routes.get(name, {}).get(env.type)
        if handler is None:
            await dead_letter(msg, f"{env.type} is not handled on {name} by {ctx.name}", 1)
            return
        token = request_id_var.set(env.request_id or "-")
        try:
            attempt = 0
            while True:
                attempt += 1
                try:
                    with ctx.metrics.handler_seconds.labels(type=env.type).time():
                        await handler(env.payload, env, ctx)
                    ctx.metrics.handled.labels(topic=name, type=env.type).inc()
                    return
                except Duplicate:
                    ctx.metrics.duplicates.labels(topic=name).inc()
                    return
                except Exception as e:
                    if is_transient(e):
                        ctx.metrics.retries.labels(topic=name).inc()
                        delay = min(0.1 * 2 ** min(attempt, 6), 5.0)
                        log.warning("%s %s: dependency unavailable (%r); retry %d in %.1fs",
                                    env.type, env.message_id, e, attempt, delay)
                        await asyncio.sleep(delay)
                        continue
                    if attempt >= ctx.settings.max_attempts:
                        log.exception("%s %s failed %d times", env.type, env.message_id, attempt)
                        await dead_letter(msg, f"{type(e).__name__}: {e}", attempt)
                        return
                    ctx.metrics.retries.labels(topic=name).inc()
                    delay = 0.05 * 2**attempt
                    log.warning("%s %s failed (%r); retry %d in %.2fs", env.type, env.message_id, e, attempt, delay)
                    await asyncio.sleep(delay)
        finally:
            request_id_var.reset(token)

    sub = ctx.broker.subscriber(*ctx.routes, decoder=whole_message, **subscriber_options(ctx.settings, ctx.name))
    sub(consume)
    ctx.subscribers.append(sub)
