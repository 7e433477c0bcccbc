"""The embedded broker's skip guard: a consumer re-reads an offset the broker skipped (docs/architecture.md)."""

import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger("harmon.kafka")


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
