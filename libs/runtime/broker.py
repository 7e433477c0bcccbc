"""The service's link to the broker: one producer, whether the broker is usable, and recovery when it was lost.

A broker that dies, restarts or comes back empty (the embedded broker keeps everything in memory)
must not be a silent outage. The link probes the broker (a metadata request, which never creates
a topic) every `probe_interval_s` and at once when a publish, fetch or commit fails. When it is
lost, the link tells its listeners (the consumers stop and forget their uncommitted offsets and
skip-guard state, so nothing stale is committed onto recreated topics), holds publishing (the
outbox keeps the rows) and /readyz answers 503. When the broker answers again the link recreates
missing topics with the configured partitions, re-sends outbox rows it had sent within
`HARMON_OUTBOX_REPLAY_S` if the broker came back empty (consumers' inboxes drop what they had),
and lets the consumers rejoin. Each change of state is logged once.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from .failures import BrokerUnavailable
from .kafka import ensure_topics
from .settings import ServiceSettings

log = logging.getLogger("harmon.broker")


async def _finish_within(awaitable, timeout_s: float) -> asyncio.Task | None:
    """The finished task, or None: past `timeout_s` it is cancelled and left behind (its error retrieved).

    Closing a client of a broker that is gone can wait on requests that never end, and a plain
    `wait_for` would then wait for the cancellation too; recovery must not hang on it.
    """
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if done:
        return task
    task.cancel()
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: no "never retrieved" noise
    return None


async def bounded(awaitable, timeout_s: float, what: str) -> bool:
    """Await `awaitable` for at most `timeout_s`, logging what went wrong; True if it finished cleanly."""
    task = await _finish_within(awaitable, timeout_s)
    if task is None:
        log.info("%s did not finish within %.0f s; left behind", what, timeout_s)
        return False
    if task.cancelled():  # (task.exception() would raise CancelledError into the caller)
        log.info("%s was cancelled", what)
        return False
    if task.exception() is not None:
        log.info("%s failed: %r", what, task.exception())
        return False
    return True


class LinkListener(Protocol):
    async def on_broker_lost(self, *, commit: bool) -> None: ...
    async def on_broker_back(self) -> None: ...


class BrokerLink:
    def __init__(self, settings: ServiceSettings, client_id: str, topics: Iterable[str],
                 extra_topics: dict[str, int] | None = None, *, probe_interval_s: float = 1.0):
        self.settings = settings
        self.client_id = client_id
        self.topics = list(dict.fromkeys(topics))
        self.extra_topics = dict(extra_topics or {})  # name → partitions (the gateway's own reply topic)
        self.probe_interval_s = probe_interval_s
        self.state = "starting"  # starting → up ⇄ lost → stopped
        self.lost_reason = ""
        self._producer: AIOKafkaProducer | None = None
        self._probe: AIOKafkaClient | None = None
        self._listeners: list[LinkListener] = []
        self._on_emptied: list[Callable[[], Awaitable[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._suspect_empty = False  # a consumer saw our records gone while the link looked up
        self._empty_seen = False  # this loss lost our records: replay when back
        self._lost_at = 0.0
        self.generation = 0  # +1 each time the broker is back; consumers made since know no stale offsets
        self._replayed = -1  # the generation whose lost records were replayed
        self._planned_until = 0.0  # a planned restart of a quiet broker is announced until then
        self._letting_go = False
        self._slow = 0  # probes in a row that got no answer in time
        self.let_go = False  # consumers and producer closed for an announced restart

    # -- what the rest of the service uses ---------------------------------------------------------

    @property
    def up(self) -> bool:
        return self.state == "up"

    def listen(self, listener: LinkListener) -> None:
        self._listeners.append(listener)

    def on_emptied(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Called once the broker is back after it lost our records (the outbox replays)."""
        self._on_emptied.append(callback)

    async def publish(self, topic: str, key: str | bytes | None, value: bytes,
                      headers: dict[str, str] | None = None) -> asyncio.Future:
        """Hand one record to the producer and return its ack future; BrokerUnavailable while lost."""
        if self.state != "up" or self._producer is None:
            raise BrokerUnavailable(f"broker {self.state}")
        k = key.encode() if isinstance(key, str) else key
        hdrs = [(n, v.encode()) for n, v in headers.items()] if headers else None
        try:
            ack = await self._producer.send(topic, value, key=k, headers=hdrs)
        except KafkaError as e:
            self.suspect(e)
            raise BrokerUnavailable(repr(e)) from e
        ack.add_done_callback(self._check_ack)
        return ack

    async def publish_and_wait(self, topic: str, key: str | bytes | None, value: bytes,
                               headers: dict[str, str] | None = None) -> None:
        ack = await self.publish(topic, key, value, headers)
        try:
            await ack
        except KafkaError as e:
            raise BrokerUnavailable(repr(e)) from e

    def suspect(self, error: BaseException | str, *, empty: bool = False) -> None:
        """Someone saw the broker fail (a publish, fetch or commit): probe now rather than at the next tick."""
        if empty:
            self._suspect_empty = True
        log.debug("%s: broker suspected (%r)", self.client_id, error)
        self._wake.set()

    def expect_planned_restart(self, window_s: float = 30.0) -> None:
        """`harmon dev` is about to restart its embedded broker while every service is quiet (its bound,
        docs/operations.md): let go of it now (consumers closed with their offsets committed, producer
        closed), and when it is back there is nothing to replay: every record was consumed."""
        if self.expecting_restart:
            return
        self._planned_until = time.monotonic() + window_s
        self._letting_go = True
        self._wake.set()

    @property
    def expecting_restart(self) -> bool:
        return time.monotonic() < self._planned_until

    async def replay_lost_records(self) -> None:
        """Re-send what the broker lost (once per recovery): called by a consumer that found its group's
        committed offsets gone right after it rejoined."""
        if self._replayed == self.generation:
            return
        self._replayed = self.generation
        if self.expecting_restart:
            self._planned_until = 0.0
            log.warning("%s: the broker was restarted as planned while everything was consumed; nothing to replay",
                        self.client_id)
            return
        log.warning("%s: the broker lost our records; re-sending outbox rows of the last %.0f s",
                    self.client_id, self.settings.outbox_replay_s)
        for callback in self._on_emptied:
            await callback()

    def _check_ack(self, ack: asyncio.Future) -> None:
        if not ack.cancelled() and ack.exception() is not None:
            self.suspect(ack.exception())

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create topics and the producer (waiting for the broker as long as it takes), then watch it."""
        while True:
            try:
                await self._connect()
                break
            except (KafkaError, OSError) as e:
                log.warning("%s: broker %s not usable yet (%r); retrying", self.client_id,
                            self.settings.kafka_bootstrap, e)
                await asyncio.sleep(1.0)
        self.state = "up"
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        self.state = "stopped"
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._close_producer(flush=True)
        if self._probe is not None:
            await self._probe.close()

    async def _connect(self) -> None:
        await ensure_topics(self.settings.kafka_bootstrap, self.topics, self.settings.partitions,
                            tolerate_mismatch=self.settings.broker_mode == "embedded")
        for name, partitions in self.extra_topics.items():
            await ensure_topics(self.settings.kafka_bootstrap, [name], partitions,
                                tolerate_mismatch=self.settings.broker_mode == "embedded")
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap, client_id=self.client_id,
            acks=self.settings.kafka_timings.acks, linger_ms=0, request_timeout_ms=5000,
        )
        await producer.start()
        self._producer = producer
        if self._probe is None:
            self._probe = AIOKafkaClient(bootstrap_servers=self.settings.kafka_bootstrap, request_timeout_ms=3000,
                                         client_id=f"{self.client_id}-probe")
            await self._probe.bootstrap()

    async def _close_producer(self, *, flush: bool) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        # a lost broker: what the producer held unacknowledged is still in the outbox (unsent rows)
        if flush:
            await bounded(producer.flush(), 5.0, f"{self.client_id}: producer flush")
        await bounded(producer.stop(), 5.0 if flush else 1.0, f"{self.client_id}: producer close")

    # -- watching and recovering -----------------------------------------------------------------------

    async def _probe_once(self) -> str:
        """One of: ok; empty (reachable, one of our topics gone); slow (no answer in 3 s); unreachable."""
        assert self._probe is not None
        task = await _finish_within(self._probe.fetch_all_metadata(), 3.0)
        if task is None:  # slow, not refused: a loaded machine, or a broker going away
            return "slow"
        if task.cancelled() or task.exception() is not None:
            return "unreachable"
        present = task.result().topics()
        wanted = set(self.topics) | set(self.extra_topics)
        return "ok" if wanted <= present else "empty"

    async def _watch(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.probe_interval_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                if self.state == "up" and self._letting_go:
                    self._letting_go = False
                    await self._lose("letting go of it for a planned restart", empty=False, planned=True)
                elif self.state == "up":
                    status = await self._probe_once()
                    empty = status == "empty" or self._suspect_empty
                    # one slow answer on a busy machine is not a lost broker; two in a row are
                    self._slow = self._slow + 1 if status == "slow" else 0
                    if status == "slow" and self._slow < 2:
                        continue
                    if status != "ok" or empty:
                        await self._lose("it came back without our topics or offsets" if empty else "unreachable",
                                         empty=empty)
                elif self.state == "lost":
                    await self._try_recover()
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if self.state == "stopped" or (current is not None and current.cancelling()):
                    raise  # we are being stopped
                # an awaited step (a client's close) was cancelled under us: not a reason to stop watching
                log.warning("%s: a step of the broker watch was cancelled; watching on", self.client_id)
            except Exception:  # the watcher must outlive any one failure
                log.exception("%s: broker watch failed; trying again", self.client_id)
                await asyncio.sleep(1.0)

    async def _lose(self, reason: str, *, empty: bool, planned: bool = False) -> None:
        self.state = "lost"
        self.lost_reason = reason
        self._empty_seen = empty
        self._suspect_empty = False
        self._lost_at = time.monotonic()
        if planned:
            log.info("%s: %s; consumption and publishing wait for it", self.client_id, reason)
        else:
            log.warning("%s: broker %s lost (%s): consumption paused, publishing held (the outbox keeps every "
                        "row), /readyz 503; recovering", self.client_id, self.settings.kafka_bootstrap, reason)
        for listener in self._listeners:
            await listener.on_broker_lost(commit=planned)
        self._suspect_empty = False  # what the closing consumers saw of the broker meanwhile is this loss
        await self._close_producer(flush=planned)
        self.let_go = planned  # /readyz says so: harmon dev restarts the broker once every service has

    async def _try_recover(self) -> None:
        status = await self._probe_once()
        if status in ("unreachable", "slow"):
            return
        empty = self._empty_seen or status == "empty"
        planned = self.expecting_restart
        log.info("%s: the broker answers again; recreating missing topics and the producer", self.client_id)
        try:
            await self._connect()
        except (KafkaError, OSError) as e:
            log.info("%s: broker answers but is not usable yet (%r)", self.client_id, e)
            return
        self.generation += 1
        self.let_go = False
        self.state = "up"
        if planned:  # every record was consumed before it was let go of: nothing to replay
            self._replayed, self._planned_until = self.generation, 0.0
            log.info("%s: broker back after its planned restart (%.1f s)", self.client_id,
                     time.monotonic() - self._lost_at)
        else:
            log.warning("%s: broker back after %.1f s; consuming and publishing again", self.client_id,
                        time.monotonic() - self._lost_at)
        if empty and not planned:
            await self.replay_lost_records()
        for listener in self._listeners:
            await listener.on_broker_back()
