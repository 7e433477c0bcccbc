"""The supervisor's decisions (libs/stack/supervision.py): backoff and giving up, exits, quietness, the broker bound."""
import signal

import aiohttp
import pytest

from libs.stack.supervision import MIB, Backoff, BrokerBound, RestartPolicy, describe_exit, not_quiet, still_quiet


def test_backoff_doubles_up_to_the_cap_and_gives_up_at_the_fifth_crash_within_the_window() -> None:
    b = Backoff(RestartPolicy(first_delay=0.5, max_delay=30, max_crashes=5, window=120))
    b.started(0)
    assert [b.crashed(t) for t in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert b.crashed(5) is None
    assert b.recent == 5


def test_backoff_is_capped() -> None:
    b = Backoff(RestartPolicy(first_delay=0.5, max_delay=3, max_crashes=100, window=1000))
    assert [b.crashed(t) for t in range(6)] == [0.5, 1.0, 2.0, 3, 3, 3]


def test_crashes_older_than_the_window_no_longer_count() -> None:
    b = Backoff(RestartPolicy(max_crashes=3, window=120, healthy_after=10**9))
    assert b.crashed(0) is not None and b.crashed(1) is not None
    assert b.crashed(200) is not None  # the first two are out of the window: one crash counts
    assert b.recent == 1


def test_a_minute_of_healthy_running_resets_the_delay() -> None:
    b = Backoff(RestartPolicy(first_delay=0.5, healthy_after=60, max_crashes=100, window=1000))
    b.started(0)
    assert [b.crashed(1), b.crashed(2), b.crashed(3)] == [0.5, 1.0, 2.0]
    b.started(10)
    assert b.crashed(69) == 4.0  # up 59 s: not yet healthy
    b.started(70)
    assert b.crashed(130) == 0.5  # up 60 s


def test_exits_are_described_with_the_signal_name() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL (signal 9)"
    assert describe_exit(-signal.SIGSEGV) == "killed by SIGSEGV (signal 11)"
    assert describe_exit(1) == "exit code 1"
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(-200) == "killed by an unknown signal (signal 200)"


READY = {"database": "ok", "migrations": "current", "partitions_assigned": 4, "ready": True}


def test_quiet_only_when_every_service_says_quiet_true() -> None:
    answers = {"gateway": (200, {**READY, "quiet": True}), "cart": (200, {**READY, "quiet": True})}
    assert not_quiet(answers) == {}
    assert not_quiet({}) == {}  # a stack without services has nothing in flight


def test_a_missing_quiet_field_is_not_quiet() -> None:
    # today's /readyz answers: no "quiet" yet, so no planned broker restart
    answers = {"gateway": (200, {**READY, "quiet": True}), "cart": (200, READY)}
    assert not_quiet(answers) == {"cart": 'no "quiet" in /readyz'}


@pytest.mark.parametrize("answer, why", [
    ((200, {**READY, "quiet": False}), "busy"),
    ((200, {**READY, "quiet": "true"}), "busy"),  # only the JSON true counts
    ((200, {**READY, "quiet": 1}), "busy"),
    ((200, None), 'no "quiet" in /readyz'),
    ((200, ["quiet"]), 'no "quiet" in /readyz'),
    ((503, {**READY, "ready": False, "quiet": True}), "/readyz 503"),  # draining, or lost its partitions
    (aiohttp.ClientConnectionError("refused"), "no answer (ClientConnectionError)"),
    (TimeoutError(), "no answer (TimeoutError)"),
])
def test_anything_else_is_not_quiet(answer, why) -> None:
    assert not_quiet({"orders": (200, {**READY, "quiet": True}), "cart": answer}) == {"cart": why}


def test_the_broker_is_due_a_restart_over_its_bound_after_its_minimum_uptime() -> None:
    bound = BrokerBound(max_rss_mib=256, min_uptime_s=60)
    assert not bound.due(256 * MIB, 600)  # at the bound: not over it
    assert bound.due(256 * MIB + 1, 600)
    assert not bound.due(300 * MIB, 59)  # just restarted
    assert not bound.due(None, 600)  # not running


async def test_a_pending_restart_asks_again_right_before_the_pause() -> None:
    quiet = (200, {**READY, "quiet": True})
    answers = [{"gateway": quiet, "cart": quiet}, {"gateway": (200, {**READY, "quiet": False}), "cart": quiet}]
    calls: list[str] = []

    async def ask():
        calls.append("ask")
        return answers.pop(0)

    async def between():
        calls.append("prepare")

    # quiet at first, busy a moment later: the second answer decides, so no restart
    assert await still_quiet(ask, between) == {"gateway": "busy"}
    assert calls == ["ask", "prepare", "ask"]


async def test_a_busy_stack_is_not_asked_twice_nor_prepared() -> None:
    calls: list[str] = []

    async def ask():
        calls.append("ask")
        return {"cart": (200, READY)}

    async def between():
        calls.append("prepare")

    assert await still_quiet(ask, between) == {"cart": 'no "quiet" in /readyz'}
    assert calls == ["ask"]


async def test_quiet_twice_goes_ahead() -> None:
    async def ask():
        return {"cart": (200, {**READY, "quiet": True})}

    async def between():
        return None

    assert await still_quiet(ask, between) == {}
