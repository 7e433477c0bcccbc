"""A supervised Stack (as `harmon dev` runs it), with real processes: crashed parts come back, the broker on
its port with every topic as the stack made it, repeated crashes are given up on, and the broker bound."""
from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from libs.stack.supervision import BrokerBound, RestartPolicy
from libs.stack.supervisor import Stack
from tests.conftest import discard_data_dir, fresh_data_dir, until

CART_ONLY = ("cart",)
# quick enough for a test, the same shape as harmon dev's
FAST = RestartPolicy(first_delay=0.2, max_delay=1.0, healthy_after=60, max_crashes=3, window=120)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = fresh_data_dir("harmon-test-super-")
    yield path
    discard_data_dir(path)


@pytest_asyncio.fixture
async def supervised(data_dir: Path) -> AsyncIterator[Stack]:
    stack = Stack(data_dir, services=CART_ONLY, fsync=False, database_url="", supervise=True, restart_policy=FAST)
    try:
        await stack.start()
        yield stack
    finally:
        await stack.stop()


async def _ready(stack: Stack, service: str) -> bool:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            async with http.get(stack.readyz_url(service)) as r:
                return r.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def _said(caplog: pytest.LogCaptureFixture, *parts: str) -> bool:
    return any(all(p in r.getMessage() for p in parts) for r in caplog.records)


async def test_a_killed_service_comes_back_ready_without_help(supervised: Stack, caplog) -> None:
    caplog.set_level(logging.INFO, "harmon.stack")
    pid = supervised.pid("cart")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # not through the Stack: a crash
    await until(lambda: supervised.restarts.get("cart") == 1, timeout=60, message="cart restarted")
    assert supervised.pid("cart") not in (None, pid)
    assert await _ready(supervised, "cart")
    # the terminal line: what died, how, when it restarts, and its last log lines
    assert _said(caplog, f"cart (pid {pid}) died: killed by SIGKILL (signal 9); restarting it in 0.2 s",
                 "Last lines of", "cart.log", "cart started (instance 1)")
    assert _said(caplog, "cart is back")
    # a stop through the Stack is not a crash
    await supervised.stop_service("cart")
    await supervised.start_service("cart")
    assert supervised.restarts.get("cart") == 1


async def test_a_killed_broker_comes_back_on_its_port_with_every_topic_at_the_stacks_partitions(
        supervised: Stack, caplog) -> None:
    caplog.set_level(logging.INFO, "harmon.stack")
    port, pid = supervised.ports["broker"], supervised.pid("broker")
    before = await supervised.topic_layout()
    assert before == supervised.declared_topics()
    os.kill(pid, signal.SIGKILL)
    await until(lambda: supervised.restarts.get("broker") == 1, timeout=60, message="broker restarted")
    assert supervised.pid("broker") not in (None, pid)
    assert supervised.ports["broker"] == port and supervised.bootstrap == f"127.0.0.1:{port}"
    # every topic back, none with Tansu's own count (it makes unknown topics with 4 partitions)
    assert await supervised.topic_layout() == before
    assert set(before.values()) == {supervised.partitions}
    assert _said(caplog, f"broker (pid {pid}) died: killed by SIGKILL (signal 9); restarting it in", "tansu.log")
    assert supervised.pid("cart") is not None  # paused and resumed, not restarted
    assert "cart" not in supervised.restarts


async def test_repeated_crashes_are_given_up_on_loudly(supervised: Stack, caplog) -> None:
    caplog.set_level(logging.INFO, "harmon.stack")
    # from now on every start of cart fails (a bad setting), as a crash loop in development would
    supervised.extra_env["cart"] = {"HARMON_CART_DB_POOL_SIZE": "0"}
    os.kill(supervised.pid("cart"), signal.SIGKILL)
    await until(lambda: "cart" in supervised.gave_up, timeout=90, message="supervisor gave up on cart")
    assert _said(caplog, "cart did not come back: cart exited with code 1 during start-up",
                 "It went down 3 times in 120 s: giving up, cart stays down; the rest keeps running",
                 "HARMON_CART_DB_POOL_SIZE")
    assert supervised.pid("cart") is None and "cart" not in supervised.restarts
    assert not supervised.failed.is_set()  # a service down: the stack runs on without it
    assert supervised.pid("broker") is not None and supervised.pid("postgres") is not None

    # the broker cannot come back (its port taken): the supervisor gives up and the stack has failed
    port = supervised.ports["broker"]
    os.kill(supervised.pid("broker"), signal.SIGKILL)
    await until(lambda: supervised.pid("broker") is None, timeout=10)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        await until(supervised.failed.is_set, timeout=90, message="supervisor gave up on the broker")
    assert "broker" in supervised.gave_up
    assert _said(caplog, "giving up, broker stays down; nothing works without it, so the stack stops")


async def test_a_due_broker_restart_waits_while_a_service_is_not_quiet(data_dir: Path) -> None:
    stack = Stack(data_dir, services=CART_ONLY, fsync=False, database_url="", supervise=True,
                  broker_bound=BrokerBound(max_rss_mib=1, min_uptime_s=0))
    try:
        await stack.start()
        await stack.stop_service("cart")  # cart cannot answer, so it cannot say it is quiet
        pid, restarts = stack.pid("broker"), stack.planned_broker_restarts
        waiting = await until(lambda: (w := stack.broker_restart_waiting) and w.get("cart", "").startswith("no answer")
                              and w, timeout=30, message="restart pending on cart")
        assert waiting == {"cart": "no answer (ClientConnectorError)"}, waiting
        assert stack.pid("broker") == pid and stack.planned_broker_restarts == restarts
    finally:
        await stack.stop()


async def test_a_due_broker_restart_of_a_quiet_stack_keeps_port_and_topics(data_dir: Path, caplog) -> None:
    caplog.set_level(logging.INFO, "harmon.stack")
    # no services: nothing is in flight, so the stack is quiet and the supervisor's part runs on its own
    stack = Stack(data_dir, services=(), fsync=False, database_url="", supervise=True,
                  broker_bound=BrokerBound(max_rss_mib=1, min_uptime_s=0))
    try:
        await stack.start()
        port, pid = stack.ports["broker"], stack.pid("broker")
        await until(lambda: stack.planned_broker_restarts >= 1, timeout=30, message="planned broker restart")
        assert stack.pid("broker") not in (None, pid) and stack.ports["broker"] == port
        assert await stack.topic_layout() == stack.declared_topics()
        assert _said(caplog, "the broker holds", "MiB (bound 1 MiB): it restarts as soon as every service is quiet")
        assert _said(caplog, "every service is quiet: restarting the broker")
        assert not stack.restarts  # planned, not a crash
    finally:
        await stack.stop()


async def test_a_killed_postgres_comes_back_on_its_port(data_dir: Path, caplog) -> None:
    caplog.set_level(logging.INFO, "harmon.stack")
    stack = Stack(data_dir, services=CART_ONLY, fsync=False, database_url="", supervise=True)
    try:
        await stack.start()
        port, pid = stack.ports["postgres"], stack.pid("postgres")
        os.kill(pid, signal.SIGKILL)  # the postmaster; its backends follow it
        await until(lambda: stack.restarts.get("postgres") == 1, timeout=60, message="postgres restarted")
        assert stack.pid("postgres") not in (None, pid) and stack.ports["postgres"] == port
        assert _said(caplog, f"postgres (pid {pid}) died: killed by SIGKILL (signal 9)", "postgres.log")
        await until(lambda: _ready(stack, "cart"), timeout=30, message="cart ready on the new server")
    finally:
        await stack.stop()
