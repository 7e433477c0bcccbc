"""The embedded broker's skip guard, the offset committer, and explicit topic creation (the broker would
auto-create a topic with its own partition count)."""

import asyncio
import logging
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError, IllegalStateError, KafkaConnectionError, KafkaError, TopicAlreadyExistsError,
)

from libs.contracts import topics

from .settings import ServiceSettings

log = logging.getLogger("harmon.kafka")


class TopicMismatch(RuntimeError):
    """A topic exists with a partition count other than the one configured."""


class GapGuard:
    """Re-reads an offset the embedded broker skipped.

    Tansu 0.6.0 (memory storage) sometimes answers a fetch that races with appends from several
    producers to one partition with a batch that leaves one offset out: the consumer's position
    moves past a record it never saw (measured: 1 in ~2,000 records with six producers; the record
    is in the log, a later reader gets it). That lost a reply now and then (a 504) and could lose a
    command or an event. Offsets on our topics have no gaps of their own — no compaction, no
    transactional markers — so a gap means a skip: seek back to the missing offset once, drop the
    record that came too early (it comes again, in order), and let the inbox drop repeats.
    A second gap at the same offset is accepted, so a real gap can cost one re-fetch, never a loop.
    """

    def __init__(self, name: str, on_skip: Callable[[str], None] | None = None):
        self._name = name
        self._on_skip = on_skip  # told the topic of each skip: a metric
        self._next: dict[TopicPartition, int] = {}
        self._sought: dict[TopicPartition, int] = {}
        self.skips_recovered = 0

    def admit(self, consumer: AIOKafkaConsumer, topic: str, partition: int, offset: int) -> bool:
        """True: handle this record. False: it came after a skipped one, which the consumer will read again first."""
        tp = TopicPartition(topic, partition)
        expected = self._next.get(tp)
        if expected is not None and offset > expected and self._sought.get(tp) != expected:
            self._sought[tp] = expected
            self.skips_recovered += 1
            if self._on_skip is not None:
                self._on_skip(topic)
            log.warning("%s: %s[%d] jumped from offset %d to %d; reading from %d again",
                        self._name, topic, partition, expected, offset, expected)
            consumer.seek(tp, expected)
            return False
        self._next[tp] = max(offset + 1, expected or 0)
        return True


class OffsetCommitter:
    """Commits each message's offset after its handler, without making the next message wait for it.

    One commit is in flight at a time and carries every offset processed meanwhile, so a busy
    consumer pays one commit per burst instead of one round trip per message, and a quiet one still
    commits right after each message. An offset that is not committed (a crash, a rebalance, a stop
    while a commit is in flight) only means the message is delivered again, and the inbox drops it.
    """

    def __init__(self, name: str, on_error: Callable[[BaseException], None] | None = None,
                 on_committed: Callable[[Iterable[TopicPartition]], None] | None = None):
        self._name = name
        self._on_error = on_error  # told of a failed commit: the broker link probes at once
        self._on_committed = on_committed  # told which partitions' offsets the broker took
        self._failures = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._pending: dict[TopicPartition, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopped = False

    def processed(self, consumer: AIOKafkaConsumer, topic: str, partition: int, offset: int) -> None:
        if self._stopped:  # a handler that finished while the service drained: delivered again after restart
            return
        self._consumer = consumer
        self._pending[TopicPartition(topic, partition)] = offset + 1
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def _commit_pending(self) -> None:
        offsets, self._pending = self._pending, {}
        assigned = self._consumer.assignment() if self._consumer is not None else set()
        offsets = {tp: o for tp, o in offsets.items() if tp in assigned}  # revoked: the new owner goes on
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
            if self._on_committed is not None:
                self._on_committed(offsets)
        except (CommitFailedError, IllegalStateError) as e:
            log.info("%s: offsets not committed (%r); those messages may come again and the inbox drops them",
                     self._name, e)
        except KafkaError:
            for tp, o in offsets.items():  # keep the newest offset of each partition for the next try
                self._pending[tp] = max(o, self._pending.get(tp, 0))
            raise

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._commit_pending()
                self._failures = 0
            except KafkaError as e:
                self._failures += 1
                if self._failures == 1:  # once per run of failures, not ten times a second
                    log.warning("%s: offset commit failed (%r); retrying", self._name, e)
                if self._on_error is not None:
                    self._on_error(e)
                self._wake.set()
                await asyncio.sleep(min(0.5 * self._failures, 5.0))

    def drop(self) -> None:
        """Forget pending offsets without committing them (the broker they belong to was lost)."""
        self._stopped = True
        self._pending = {}
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Commit what is pending, then stop; call before the consumer closes."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self._commit_pending()
        except KafkaError:
            log.warning("%s: last offsets not committed on stop; those messages will come again", self._name)


async def ensure_topics(
    bootstrap: str, names: Iterable[str], partitions: int, *, timeout_s: float = 30.0, tolerate_mismatch: bool = False
) -> None:
    """Create each topic with `partitions` partitions; fail loudly if one exists with another count.

    `tolerate_mismatch` (the embedded broker, after it restarted empty): a topic the broker auto-created
    with its own count before we could create it is used as it is, with a warning. Keys still map to
    one partition each, so order holds; only the partition count differs from the setting.
    """
    names = list(dict.fromkeys(names))
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            await admin.close()
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("broker %s not reachable yet; retrying", bootstrap)
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in missing]
                )
            except TopicAlreadyExistsError:
                pass  # another process won the race; the count is checked below
        described = await admin.describe_topics(names)
        for topic in described:
            count = len(topic.get("partitions") or [])
            if topic.get("error_code", 0) == 0 and count != partitions:
                if tolerate_mismatch:
                    log.warning("topic %s has %d partitions, configured %d (auto-created by the broker); used as it is",
                                topic["topic"], count, partitions)
                    continue
                raise TopicMismatch(
                    f"topic {topic['topic']} has {count} partitions, configured {partitions}; "
                    "recreate it or set HARMON_PARTITIONS to match"
                )
    finally:
        await admin.close()


async def ensure_all_topics(settings: ServiceSettings) -> None:
    await ensure_topics(settings.kafka_bootstrap, topics.all_topic_names(), settings.partitions,
                        tolerate_mismatch=settings.broker_mode == "embedded")
