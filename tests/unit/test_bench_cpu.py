"""The bench's CPU meter: which part a process is, and CPU between two snapshots."""

from libs.stack.cpu import CpuMeter, group_of


def test_processes_are_grouped_by_part_of_the_stack() -> None:
    assert group_of("/usr/bin/python3 -m services.orders ") == "orders"
    assert group_of("/tmp/h/run/tansu broker --listener-url tcp://127.0.0.1:1") == "broker"
    assert group_of("postgres: harmon_cart harmon_cart 127.0.0.1(5) idle") == "postgres"
    assert group_of("/usr/bin/python3 /usr/bin/harmon dev --data-dir .harmon") == "supervisor"


def test_cpu_between_snapshots_is_summed_per_part() -> None:
    before = {1: ("cart", 1.0), 2: ("postgres", 2.0), 3: ("postgres", 0.5), 9: ("notifier", 4.0)}
    after = {1: ("cart", 1.25), 2: ("postgres", 2.5), 3: ("postgres", 0.75), 4: ("postgres", 0.1)}
    # pid 4 started meanwhile (counted from zero); pid 9 exited (its last interval is unknown: not counted)
    used = CpuMeter.since(before, after)
    assert used.keys() == {"cart", "postgres"}
    assert abs(used["cart"] - 0.25) < 1e-9 and abs(used["postgres"] - 0.85) < 1e-9


def test_without_a_stack_lock_the_meter_reads_nothing(tmp_path) -> None:
    meter = CpuMeter(tmp_path)
    assert not meter.available and meter.snapshot() == {}
