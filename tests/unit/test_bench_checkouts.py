"""`harmon bench --checkouts N`: a level ends after N checkouts tried, orders and failed ones alike."""

from libs.stack.bench import Level, attempts, level_done


def test_a_level_counted_in_checkouts_ends_after_that_many_tried() -> None:
    level = Level(shoppers=1, seconds=0.0)
    assert not level_done(level, now=100.0, stop_at=0.0, checkouts=3)  # the time does not end it
    level.orders = 2
    assert attempts(level) == 2 and not level_done(level, 100.0, 0.0, 3)
    level.errors["price 503 service_unavailable"] += 1  # a failed cycle counts too, so a broken stack still ends
    assert attempts(level) == 3 and level_done(level, 100.0, 0.0, 3)


def test_without_checkouts_the_time_ends_a_level() -> None:
    level = Level(shoppers=1, seconds=5.0)
    level.orders = 10**6
    assert not level_done(level, now=4.9, stop_at=5.0, checkouts=None)
    assert level_done(level, now=5.0, stop_at=5.0, checkouts=None)
