"""Request/reply over Kafka for HTTP calls: publish a command with reply_to = this instance's topic, await its reply.

FastStream's `request()` does not work on a real Kafka broker, hence this. One subscriber reads this
instance's reply topic without a consumer group, from the latest offset; replies are matched to
waiting requests by correlation id. A reply that comes after its request gave up is dropped.
"""

import asyncio
import logging

from aiokafka.errors import KafkaError
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError

from libs.contracts import topics
from libs.contracts.base import Message
from libs.contracts.envelope import Envelope
from libs.contracts.ids import MESSAGE, new_id
from libs.runtime.kafka import subscriber_options
from libs.runtime.logs import request_id_var
from libs.runtime.messaging import ServiceContext, gap_guard, whole_message

from .errors import internal_error, upstream_timeout

log = logging.getLogger("harmon.gateway.correlator")


class Correlator:
    def __init__(self, ctx: ServiceContext, default_timeout_s: float):
        self._ctx = ctx
        self.reply_topic = topics.gateway_replies(ctx.settings.instance_id)
        self.default_timeout_s = default_timeout_s
        self._pending: dict[str, asyncio.Future[Envelope]] = {}
        self._positioned = False
        self.late_replies = 0
        self.subscriber = None
        # the embedded broker can skip a reply (see GapGuard): read it again rather than answer 504
        self._guard = gap_guard(ctx, "gateway replies")

    def register(self) -> None:
        """Declare the reply subscriber; call before the broker starts."""
        sub = self._ctx.broker.subscriber(self.reply_topic, decoder=whole_message,
                                          **subscriber_options(self._ctx.settings, None))
        sub(self._on_reply)
        self.subscriber = sub

    async def wait_positioned(self, timeout_s: float = 30.0) -> None:
        """Wait until the reply partition is assigned and its start offset known, so no early reply is skipped."""
        consumer = self.subscriber.consumer
        async with asyncio.timeout(timeout_s):
            while not consumer.assignment():
                await asyncio.sleep(0.02)
            for tp in consumer.assignment():
                await consumer.position(tp)
        self._positioned = True

    @property
    def ready(self) -> bool:
        consumer = getattr(self.subscriber, "consumer", None)
        return self._positioned and consumer is not None and bool(consumer.assignment())

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def _on_reply(self, msg: KafkaMessage) -> None:
        raw = msg.raw_message
        if self._guard is not None and not self._guard.admit(msg.consumer, raw.topic, raw.partition, raw.offset):
            return
        try:
            env = Envelope.from_bytes(msg.body)
        except ValidationError:
            log.warning("undecodable message on %s dropped", self.reply_topic)
            return
        fut = self._pending.pop(env.correlation_id or "", None)
        if fut is None or fut.done():
            self.late_replies += 1
            token = request_id_var.set(env.request_id or "-")
            log.info("reply to %s (%s) came after its request gave up; dropped", env.correlation_id, env.type)
            request_id_var.reset(token)
            return
        fut.set_result(env)

    async def request(self, topic: str, key: str | None, payload: Message, *, tenant_id: str, livemode: bool,
                      request_id: str | None, timeout_s: float | None = None) -> Message:
        """Send a command and return its reply's payload; 504 upstream_timeout if none comes in time."""
        message_id = new_id(MESSAGE)
        env = Envelope(message_id=message_id, correlation_id=message_id, tenant_id=tenant_id, livemode=livemode,
                       request_id=request_id, reply_to=self.reply_topic, payload=payload)
        fut: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = fut
        try:
            async with asyncio.timeout(timeout_s or self.default_timeout_s):
                await self._ctx.broker.publish(env.to_bytes(), topic=topic, key=key.encode() if key else None)
                reply = await fut
        except TimeoutError:
            log.warning("%s to %s: no reply within %.1fs", payload.type, topic, timeout_s or self.default_timeout_s)
            raise upstream_timeout() from None
        except KafkaError as e:
            log.warning("%s to %s: broker refused the command (%r)", payload.type, topic, e)
            raise upstream_timeout() from None
        finally:
            self._pending.pop(message_id, None)
        if (reply.tenant_id, reply.livemode) != (tenant_id, livemode):
            log.error("reply %s crossed tenants or modes; refused", reply.message_id)
            raise internal_error()
        return reply.payload
