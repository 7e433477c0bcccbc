"""A rolling upgrade of orders, the saga's owner: the previous release and this one side by side in one consumer
group place every order (a saga one version starts, the other may continue: the replies' partitions are not the
commands'), and a saga the previous release started is finished by this one after the old instance dies.

The previous release runs from its own git tree (`git archive`), with this checkout's virtualenv, on this version's
schema: migrations only expand, so `harmon migrate` runs first and older instances keep working
(docs/operations.md, "Rolling upgrades"). The pin moves forward when a release changes what the test is about.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from libs.contracts.ids import new_id
from libs.stack.processes import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
# the release before the order lifecycle (issue 14): its orders knows no order numbers, invoices or lifecycle topics
PREVIOUS = "95c29ec7b36eaca2b3361525fe59134086d0a5c2"
LONG_STEP_S = "60"  # the resumed saga must not be compensated while its instances change


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's libs/ and services/, from git; skipped (with why) only where history is absent."""
    try:
        if _git("rev-parse", "--is-shallow-repository") == "true":
            pytest.skip("a shallow clone has no earlier release to upgrade from (git fetch --unshallow)")
        _git("cat-file", "-e", f"{PREVIOUS}^{{commit}}")
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"the previous release {PREVIOUS[:10]} is not in this checkout's history ({e})")
    root = tmp_path_factory.mktemp("previous-release")
    archive = root / "release.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), PREVIOUS,
                    "libs", "services"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return root


class OldInstance:
    """One orders process of the previous release, in the stack's consumer group, with its own health port."""

    def __init__(self, stack, root: Path, log_path: Path):
        self.port = free_port()
        self.env = {**stack.service_env("orders"), "PYTHONPATH": str(root), "HARMON_INSTANCE_ID": "previous",
                    "HARMON_ORDERS_HEALTH_PORT": str(self.port), "HARMON_ORDERS_STEP_TIMEOUT_S": LONG_STEP_S}
        self.root, self.log_path = root, log_path
        self.proc: asyncio.subprocess.Process | None = None

    def imports_from(self) -> str:
        """Where `services.orders` comes from with this instance's environment (not this checkout's tree)."""
        return subprocess.run([sys.executable, "-c", "import services.orders as o; print(o.__file__)"],
                              env=self.env, cwd=self.root, check=True, capture_output=True, text=True).stdout.strip()

    def topics_read(self) -> int:
        """How many topics the previous release's orders subscribes to (fewer than this one's, maybe)."""
        code = ("from types import SimpleNamespace; from services.orders import entrypoint; "
                "ctx = SimpleNamespace(routes={}); entrypoint.register(ctx); print(len(ctx.routes))")
        return int(subprocess.run([sys.executable, "-c", code], env=self.env, cwd=self.root, check=True,
                                  capture_output=True, text=True).stdout.strip())

    async def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.orders", env=self.env,
                                                         cwd=self.root, stdout=log, stderr=log,
                                                         start_new_session=True)
        log.close()

    async def placed(self, http: aiohttp.ClientSession) -> float:
        async with http.get(f"http://127.0.0.1:{self.port}/metrics") as r:
            return _place_orders_handled(await r.text())

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            os.killpg(self.proc.pid, signal.SIGKILL)

    async def reap(self) -> None:
        if self.proc is not None:
            self.kill()
            await self.proc.wait()
            self.proc = None


def _place_orders_handled(metrics: str) -> float:
    found = re.search(r'harmon_messages_handled_total\{topic="orders.commands.v1",type="PlaceOrder"\} (\S+)', metrics)
    return float(found.group(1)) if found else 0.0


@pytest_asyncio.fixture(loop_scope="session")
async def old_orders(stack, previous_release, tmp_path) -> AsyncIterator[OldInstance]:
    instance = OldInstance(stack, previous_release, tmp_path / "orders-previous.log")
    saved = dict(stack.extra_env.get("orders", {}))
    try:
        yield instance
    finally:
        await instance.reap()
        stack.extra_env["orders"] = saved
        for service in ("orders", "credit"):  # leave the stack as the other tests expect it
            if stack.pid(service) is None:
                await stack.start_service(service)


async def _assigned(http: aiohttp.ClientSession, url: str) -> int:
    try:
        async with http.get(url) as r:
            return (await r.json())["partitions_assigned"]
    except (aiohttp.ClientError, asyncio.TimeoutError, KeyError, ValueError):
        return -1


async def test_the_previous_release_and_this_one_share_the_group_and_place_every_order(
        stack, store, shop, old_orders, until):
    assert old_orders.imports_from().startswith(str(old_orders.root)), "the old instance must run the old code"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        alone = await _assigned(http, stack.readyz_url("orders"))
        await old_orders.start()

        async def shared() -> bool:
            old = await _assigned(http, f"http://127.0.0.1:{old_orders.port}/readyz")
            new = await _assigned(http, stack.readyz_url("orders"))
            return old > 0 and new > 0 and old + new == alone
        await until(shared, timeout=40, message="the previous release joined the group and took partitions")

        before = (await old_orders.placed(http), _place_orders_handled(await _metrics(http, stack)))
        token = await store.token(shop.big)
        carts = [await store.cart_with(token, {"sku": "RICE-1KG", "quantity": 1}) for _ in range(12)]
        replies = await asyncio.gather(*(store.checkout(token, c["id"], key=new_id("k")) for c in carts))
        assert [r.status for r in replies] == [201] * len(carts), [r.body for r in replies if r.status != 201]
        assert sorted(r.body["cart_id"] for r in replies) == sorted(c["id"] for c in carts)
        after = (await old_orders.placed(http), _place_orders_handled(await _metrics(http, stack)))
        # both versions started sagas: the carts' keys spread over both instances' partitions
        assert after[0] > before[0] and after[1] > before[1], (before, after)
        assert after[0] - before[0] + after[1] - before[1] >= len(carts)
        # and both confirmed orders: the previous release numbers none (it knows no order numbers), this one every
        # one it confirms; which instance confirms is the partition of the checkout's replies, so place more until
        # each has confirmed one (the chance that 40 all land on one side is 2 in 10^12)
        numbered = {r.body["order_number"] is not None for r in replies}
        for _ in range(40):
            if numbered == {True, False}:
                break
            cart = await store.cart_with(token, {"sku": "RICE-1KG", "quantity": 1})
            more = await store.checkout(token, cart["id"], key=new_id("k"))
            assert more.status == 201, more.body
            numbered.add(more.body["order_number"] is not None)
        assert numbered == {True, False}, "one version confirmed every order"


async def _metrics(http: aiohttp.ClientSession, stack) -> str:
    async with http.get(f"http://127.0.0.1:{stack.health_ports['orders']}/metrics") as r:
        return await r.text()


async def test_a_saga_the_previous_release_started_is_finished_by_this_one(stack, store, shop, db, old_orders, until):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        alone = old_orders.topics_read() * stack.partitions  # every partition of every topic it reads
        await stack.stop_service("orders")
        await old_orders.start()
        old_url = f"http://127.0.0.1:{old_orders.port}/readyz"
        await until(lambda: _all(http, old_url, alone), timeout=40, message="the previous release holds every partition")

        await stack.stop_service("credit")  # the saga will wait for credit's answer
        token = await store.token(shop.big)
        cart = await store.cart_with(token, {"sku": "RICE-1KG", "quantity": 2})
        key = new_id("k")
        first = asyncio.create_task(store.checkout(token, cart["id"], key=key))

        async def waiting_for_credit() -> bool:
            rows = await db("orders", "SELECT state FROM checkouts WHERE cart_id = $1", cart["id"])
            return bool(rows) and rows[0]["state"] in ("reserving", "freezing")
        await until(waiting_for_credit, timeout=20, message="the old instance's saga waits for credit")
        old_orders.kill()  # the previous release dies mid-saga
        await old_orders.reap()

        stack.extra_env["orders"] = {**stack.extra_env.get("orders", {}), "HARMON_ORDERS_STEP_TIMEOUT_S": LONG_STEP_S}
        await stack.start_service("orders")  # this release: resumes the unfinished saga (asks credit again)
        await stack.start_service("credit")
        first_reply = await first
        assert first_reply.status in (201, 504), first_reply.body  # the first wait may end before credit is back

        async def confirmed():
            again = await store.checkout(token, cart["id"], key=key)
            return again if again.status == 201 else None
        placed = await until(confirmed, timeout=30, message="the resumed saga confirmed the order")
        assert placed.body["cart_id"] == cart["id"]
        assert placed.body["order_number"], "this release confirmed it (the previous one numbers no order)"
        orders = await db("orders", "SELECT id FROM orders WHERE cart_id = $1", cart["id"])
        assert [r["id"] for r in orders] == [placed.body["id"]]  # one order, whoever finished it


async def _all(http: aiohttp.ClientSession, url: str, want: int) -> bool:
    return await _assigned(http, url) == want
