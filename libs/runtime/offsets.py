"""Offset commits: coalesced, one in flight at a time, never making the next batch wait."""

import asyncio
import logging
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

log = logging.getLogger("harmon.kafka")


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
