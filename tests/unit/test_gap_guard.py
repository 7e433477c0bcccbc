"""GapGuard: a skipped offset is read again once, in order; a gap that persists is accepted."""

from aiokafka import TopicPartition

from libs.runtime.skip_guard import GapGuard

TP = TopicPartition("cart.commands.v1", 0)


class FakeConsumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[TopicPartition, int]] = []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))


def feed(guard: GapGuard, consumer: FakeConsumer, offsets: list[int]) -> list[int]:
    return [o for o in offsets if guard.admit(consumer, TP.topic, TP.partition, o)]


def test_contiguous_offsets_pass_untouched() -> None:
    guard, consumer = GapGuard("t"), FakeConsumer()
    assert feed(guard, consumer, [0, 1, 2, 3]) == [0, 1, 2, 3]
    assert consumer.seeks == [] and guard.skips_recovered == 0


def test_a_skipped_offset_is_sought_and_handled_in_order() -> None:
    told: list[str] = []
    guard, consumer = GapGuard("t", told.append), FakeConsumer()
    # 5 skipped by the broker: 6 is dropped, the consumer seeks to 5, then 5 and 6 come again
    handled = feed(guard, consumer, [3, 4, 6, 5, 6, 7])
    assert handled == [3, 4, 5, 6, 7]
    assert consumer.seeks == [(TP, 5)]
    assert guard.skips_recovered == 1 and told == [TP.topic]


def test_a_gap_that_is_really_there_costs_one_seek_not_a_loop() -> None:
    guard, consumer = GapGuard("t"), FakeConsumer()
    # offset 5 does not exist: after one seek the same jump is accepted
    handled = feed(guard, consumer, [4, 6, 6, 7])
    assert handled == [4, 6, 7]
    assert consumer.seeks == [(TP, 5)]


def test_the_first_record_of_a_partition_sets_the_start() -> None:
    guard, consumer = GapGuard("t"), FakeConsumer()
    assert feed(guard, consumer, [120, 121]) == [120, 121]
    assert consumer.seeks == []


def test_redelivered_older_offsets_are_handled_and_do_not_move_the_expectation_back() -> None:
    guard, consumer = GapGuard("t"), FakeConsumer()
    # after a rebalance the committed offset can be behind what this instance handled: the inbox drops repeats
    assert feed(guard, consumer, [10, 11, 12, 11, 12, 13]) == [10, 11, 12, 11, 12, 13]
    assert consumer.seeks == []
