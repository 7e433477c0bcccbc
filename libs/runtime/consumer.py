"""Our consumer loop on aiokafka: batches per partition, each partition in order, partitions side by side.

Why not FastStream's subscriber: the loop must pause on a dependency outage without leaving the
group, forget its offsets when the broker was lost, and be rebuilt after the broker comes back;
FastStream's subscriber hides the consumer that all of that needs (docs/architecture.md).

- `getmany` hands over what has arrived for every assigned partition; each partition's records
  are handled one after another (key order), different partitions concurrently.
- Offsets are committed after the handler by the coalescing `OffsetCommitter`.
- The fetch wait adapts: the busy wait while records flow, doubling towards `fetch_max_wait_ms` once
  nothing has come for `fetch_idle_after_s` (the embedded broker holds a waiting fetch for its whole
  wait even when a record arrives, so a short wait is hop latency and a long one is low idle CPU).
- `pause(reason)`: a dependency is down. The partition being handled is sought back to the record
  that failed and every partition is paused, while `getmany` keeps the group membership alive.
- On a lost broker the aiokafka consumer is closed and its uncommitted offsets and skip-guard state
  are dropped; when the broker is back a new one joins. A high-watermark below what was already read,
  or a group whose committed offsets vanished, means the broker lost our records: the link replays.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from .broker import BrokerLink, bounded
from .failures import DependencyDown
from .offsets import OffsetCommitter
from .skip_guard import GapGuard

log = logging.getLogger("harmon.consumer")

# One partition's records, in order; raises DependencyDown (with `.done`: how many were handled) to pause.
Handle = Callable[[list[ConsumerRecord]], Awaitable[None]]


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, owner: "Consumer"):
        self._owner = owner

    async def on_partitions_revoked(self, revoked) -> None:
        await self._owner._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned) -> None:
        await self._owner._assigned(set(assigned))


class Consumer:
    def __init__(self, link: BrokerLink, name: str, topics: list[str], handle: Handle, *, group_id: str | None,
                 guard: Callable[[], GapGuard | None] = lambda: None,
                 on_assigned: Callable[[set[TopicPartition]], Awaitable[None]] | None = None,
                 on_lag: Callable[[TopicPartition, int], None] | None = None, max_records: int = 100):
        self.link = link
        self.name = name
        self.topics = topics
        self.group_id = group_id
        self._handle = handle
        self._make_guard = guard
        self._on_assigned = on_assigned
        self._on_lag = on_lag
        self.max_records = max_records
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._committer: OffsetCommitter | None = None
        self._guard: GapGuard | None = None
        self._paused: str | None = None
        self._stopping = False
        self.in_flight = 0
        self.fetch_wait_ms = 0
        self._last_records = 0.0
        self._read: dict[TopicPartition, int] = {}  # highest offset read + 1, per partition (emptiness check)
        self._next: dict[TopicPartition, int] = {}  # next offset to handle (lag)
        # partitions whose offsets the broker took from us: if the group then has none, the broker lost them
        self._committed_once: set[TopicPartition] = set()
        self._positioned = asyncio.Event()
        link.listen(self)

    # -- what others read ----------------------------------------------------------------------------

    @property
    def consumer(self) -> AIOKafkaConsumer | None:
        return self._consumer

    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment()) if self._consumer is not None else set()

    @property
    def paused_reason(self) -> str | None:
        return self._paused

    def lag(self) -> dict[TopicPartition, int]:
        """Records on the broker not handled yet, per assigned partition, from the fetch high-watermark."""
        out: dict[TopicPartition, int] = {}
        if self._consumer is None:
            return out
        for tp in self._consumer.assignment():
            hw = self._consumer.highwater(tp)
            if hw is not None:
                out[tp] = max(0, hw - self._next.get(tp, hw))
        return out

    @property
    def quiet(self) -> bool:
        return self.in_flight == 0 and bool(self.assignment()) and not any(self.lag().values())

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._start_inner()

    async def stop(self) -> None:
        """Finish the batch in flight, commit what was handled, leave the group."""
        await self._stop_inner(commit=True)

    async def _start_inner(self) -> None:
        s = self.link.settings
        t = s.kafka_timings
        opts: dict = dict(bootstrap_servers=s.kafka_bootstrap, client_id=f"{self.link.client_id}-{self.name}",
                          enable_auto_commit=False, fetch_max_wait_ms=t.fetch_busy_wait_ms)
        if self.group_id is None:
            opts.update(auto_offset_reset="latest")
        else:
            opts.update(group_id=self.group_id, auto_offset_reset="earliest", session_timeout_ms=t.session_timeout_ms,
                        heartbeat_interval_ms=t.heartbeat_interval_ms)
        consumer = AIOKafkaConsumer(**opts)
        await consumer.start()
        consumer.subscribe(self.topics, listener=_Rebalance(self))
        self._consumer = consumer
        self._guard = self._make_guard()
        self._committer = (OffsetCommitter(self.name, on_error=self.link.suspect, on_committed=self._committed_once.update)
                           if self.group_id else None)
        self._stopping = False
        self._positioned.clear()
        self._task = asyncio.create_task(self._run(consumer))
        if self.group_id is None:  # a reader from the latest offset must know where that is before it is used
            self._positioning = asyncio.create_task(self._position_quietly())

    async def _stop_inner(self, *, commit: bool) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            # the batch in flight finishes (its records are committed or sought back)
            await bounded(asyncio.shield(task), 10.0 if commit else 3.0, f"{self.name}: batch in flight")
            if not task.done():
                task.cancel()
        committer, self._committer = self._committer, None
        if committer is not None:
            if commit:
                await committer.stop()
            else:
                committer.drop()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await bounded(consumer.stop(), 5.0 if commit else 1.0, f"{self.name}: consumer close")
        self._next.clear()

    async def on_broker_lost(self, *, commit: bool) -> None:
        """Drop everything tied to the lost broker: uncommitted offsets (committed first when it is let go
        of on purpose), skip-guard state, the consumer."""
        await self._stop_inner(commit=commit)

    async def on_broker_back(self) -> None:
        if self.link._replayed == self.link.generation:  # the link already knows our records were lost
            self._read.clear()
            self._committed_once.clear()
        await self._start_inner()

    async def wait_positioned(self, timeout_s: float = 30.0) -> None:
        """Wait until partitions are assigned and their start offsets known (a reply reader must not miss one)."""
        async with asyncio.timeout(timeout_s):
            while True:
                consumer = self._consumer
                if consumer is not None and consumer.assignment():
                    for tp in consumer.assignment():
                        await consumer.position(tp)
                    self._positioned.set()
                    return
                await asyncio.sleep(0.02)

    @property
    def positioned(self) -> bool:
        return self._positioned.is_set() and self._consumer is not None

    async def _position_quietly(self) -> None:
        try:
            await self.wait_positioned()
        except (TimeoutError, KafkaError) as e:
            log.warning("%s: not positioned (%r); the broker link will notice and rebuild it", self.name, e)

    def pause(self, reason: str) -> None:
        if self._paused is None:
            log.warning("%s: consumption paused: %s", self.name, reason)
        self._paused = reason

    def resume(self) -> None:
        if self._paused is not None:
            log.warning("%s: consumption resumed (was: %s)", self.name, self._paused)
        self._paused = None

    # -- rebalancing -----------------------------------------------------------------------------------

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            self._next.pop(tp, None)

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        if self._on_assigned is not None:
            await self._on_assigned(assigned)
        if self.group_id is None or self._consumer is None:
            return
        # A group whose offsets vanished although we committed some: the broker lost our records.
        vanished = []
        for tp in assigned & self._committed_once:
            try:
                if await self._consumer.committed(tp) is None:
                    vanished.append(tp)
            except KafkaError:
                return
        if vanished:
            log.warning("%s: the group's committed offsets of %s are gone", self.name,
                        ", ".join(f"{tp.topic}[{tp.partition}]" for tp in vanished))
            self._read.clear()
            self._committed_once.clear()
            await self.link.replay_lost_records()

    # -- the loop ----------------------------------------------------------------------------------------

    def _adapt_wait(self, consumer: AIOKafkaConsumer, got_records: bool) -> None:
        t = self.link.settings.kafka_timings
        now = asyncio.get_running_loop().time()
        if got_records:
            self._last_records = now
            wait = t.fetch_busy_wait_ms
        elif now - self._last_records >= self.link.settings.fetch_idle_after_s:
            wait = min(t.fetch_max_wait_ms, max(t.fetch_busy_wait_ms, self.fetch_wait_ms) * 2)
        else:
            return
        if wait != self.fetch_wait_ms:
            self.fetch_wait_ms = wait
            fetcher = getattr(consumer, "_fetcher", None)  # aiokafka reads it for every fetch request it builds
            if fetcher is not None:
                fetcher._fetch_max_wait_ms = wait

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        self._last_records = asyncio.get_running_loop().time()
        self.fetch_wait_ms = self.link.settings.kafka_timings.fetch_busy_wait_ms
        while not self._stopping:
            assigned = consumer.assignment()
            if self._paused is not None:
                consumer.pause(*assigned)
            elif consumer.paused():
                consumer.resume(*consumer.paused())
            try:
                batch = await consumer.getmany(timeout_ms=500, max_records=self.max_records)
            except KafkaError as e:
                self.link.suspect(e)
                await asyncio.sleep(0.2)
                continue
            self._adapt_wait(consumer, bool(batch))
            if batch:
                self.in_flight += 1
                try:
                    await asyncio.gather(*(self._partition(consumer, tp, records) for tp, records in batch.items()))
                finally:
                    self.in_flight -= 1
            self._check_high_watermarks(consumer)

    async def _partition(self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        if self._stopping or self._paused is not None:
            consumer.seek(tp, records[0].offset)  # handled after resume or by the next owner
            return
        admitted = []
        for rec in records:
            if self._guard is not None and not self._guard.admit(consumer, tp.topic, tp.partition, rec.offset):
                break  # the guard sought back to a skipped offset: the rest comes again, in order
            admitted.append(rec)
        if admitted:
            self._read[tp] = max(self._read.get(tp, 0), admitted[-1].offset + 1)
            try:
                await self._handle(admitted)
                done = len(admitted)
            except DependencyDown as e:
                done = getattr(e, "done", 0)
                self.pause(str(e) or type(e).__name__)
                consumer.seek(tp, admitted[done].offset)
            except Exception:  # a bug in the runtime: the partition is read again, never skipped, and it shows
                log.exception("%s: handling %s[%d] from offset %d failed; reading it again in 1 s", self.name,
                              tp.topic, tp.partition, admitted[0].offset)
                consumer.seek(tp, admitted[0].offset)
                await asyncio.sleep(1.0)
                done = 0
            if done:
                last = admitted[done - 1].offset
                self._next[tp] = last + 1
                if self._committer is not None:
                    self._committer.processed(consumer, tp.topic, tp.partition, last)
        hw = consumer.highwater(tp)
        if hw is not None and self._on_lag is not None:
            self._on_lag(tp, max(0, hw - self._next.get(tp, hw)))

    def _check_high_watermarks(self, consumer: AIOKafkaConsumer) -> None:
        """A partition whose high-watermark (from the last fetch) is below an offset already read: the broker
        came back without its records. Checked after every fetch, records or not: a reader left at an offset
        the new log does not have yet may be answered with nothing, rather than with an offset error."""
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            if hw is not None and hw < self._read.get(tp, 0):
                log.warning("%s: %s[%d] high-watermark %d is below offset %d already read: the broker lost its "
                            "records", self.name, tp.topic, tp.partition, hw, self._read[tp])
                self._read.clear()
                self.link.suspect(f"{tp.topic}[{tp.partition}] emptied", empty=True)
                return
