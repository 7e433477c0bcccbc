"""Request/reply over Kafka for HTTP calls: publish a command with reply_to = this instance's topic, await its reply.

One consumer reads this instance's reply topic without a consumer group, from the latest offset;
replies are matched to waiting requests by correlation id. A reply that comes after its request
gave up is dropped. While the broker is lost, requests are answered 503 at once instead of waiting.
"""

import asyncio
import logging

from aiohttp import web
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from libs.contracts import topics
from libs.contracts.base import Message
from libs.contracts.envelope import Envelope
from libs.contracts.ids import MESSAGE, new_id
from libs.runtime.consumer import Consumer
from libs.runtime.failures import BrokerUnavailable
from libs.runtime import tracing
from libs.runtime.logs import request_id_var
from libs.runtime.context import ServiceContext
from libs.runtime.subscriptions import gap_guard

from .errors import internal_error, service_unavailable, upstream_timeout

log = logging.getLogger("harmon.gateway.correlator")


class Correlator:
    def __init__(self, ctx: ServiceContext, default_timeout_s: float):
        self._ctx = ctx
        self.reply_topic = topics.gateway_replies(ctx.settings.instance_id)
        self.default_timeout_s = default_timeout_s
        self._pending: dict[str, asyncio.Future[Envelope]] = {}
        self.late_replies = 0
        # the embedded broker can skip a reply (see GapGuard): read it again rather than answer 504
        self.consumer = Consumer(ctx.link, "gateway replies", [self.reply_topic], self._on_reply, group_id=None,
                                 guard=lambda: gap_guard(ctx, "gateway replies"))

    async def start(self) -> None:
        """Start reading replies; returns once the reply partition is assigned and positioned."""
        await self.consumer.start()
        await self.consumer.wait_positioned()

    async def stop(self) -> None:
        await self.consumer.stop()

    @property
    def ready(self) -> bool:
        """The broker is usable and the reply reader knows where it reads from (no reply can slip by)."""
        return self._ctx.link.up and self.consumer.positioned and bool(self.consumer.assignment())

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def _on_reply(self, records: list[ConsumerRecord]) -> None:
        for rec in records:
            self._deliver(rec)

    def _deliver(self, rec: ConsumerRecord) -> None:
        try:
            env = Envelope.from_bytes(rec.value)
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
        with tracing.consuming(self.reply_topic, env.type, env.message_id, env.traceparent, env.request_id):
            pass  # the trace's last hop: the reply is back at the gateway that asked
        fut.set_result(env)

    async def request(self, topic: str, key: str | None, payload: Message, *, tenant_id: str, livemode: bool,
                      request_id: str | None, timeout_s: float | None = None) -> Message:
        """Send a command and return its reply's payload; 504 upstream_timeout if none comes in time,
        503 service_unavailable while the broker is lost."""
        if not self.ready:
            raise service_unavailable()
        message_id = new_id(MESSAGE)
        with tracing.producing(topic, payload.type, request_id):
            traceparent = tracing.current_traceparent()
        env = Envelope(message_id=message_id, correlation_id=message_id, tenant_id=tenant_id, livemode=livemode,
                       request_id=request_id, reply_to=self.reply_topic, traceparent=traceparent, payload=payload)
        fut: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = fut
        try:
            async with asyncio.timeout(timeout_s or self.default_timeout_s):
                await self._ctx.link.publish_and_wait(topic, key, env.to_bytes(), tracing.headers_for(traceparent))
                reply = await fut
        except TimeoutError:
            log.warning("%s to %s: no reply within %.1fs", payload.type, topic, timeout_s or self.default_timeout_s)
            raise upstream_timeout() from None
        except BrokerUnavailable as e:
            log.warning("%s to %s: broker refused the command (%s)", payload.type, topic, e)
            raise service_unavailable() from None
        finally:
            self._pending.pop(message_id, None)
        if (reply.tenant_id, reply.livemode) != (tenant_id, livemode):
            log.error("reply %s crossed tenants or modes; refused", reply.message_id)
            raise internal_error()
        return reply.payload


CORRELATOR = web.AppKey("correlator", Correlator)
