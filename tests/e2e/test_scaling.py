"""Scaling out: a second instance of a service joins its consumer group, shares the partitions,
and the credit invariant still holds when both instances decide reservations."""

import asyncio
import re
import signal
import sys
from types import SimpleNamespace

import aiohttp
import pytest

from libs.contracts.ids import new_id
from libs.stack.processes import free_port
from services.credit import entrypoint as credit_entrypoint

from .conftest import FIVE_OIL_CARTS

pytestmark = pytest.mark.e2e


async def _metrics(http: aiohttp.ClientSession, port: int) -> str:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
        return await r.text()


def _topics_read_by_credit() -> set[str]:
    ctx = SimpleNamespace(routes={})  # subscribe() only records routes
    credit_entrypoint.register(ctx)
    return set(ctx.routes)


def _reservations_handled(metrics: str) -> float:
    found = re.search(r'harmon_messages_handled_total\{topic="credit.commands.v1",type="ReserveCredit"\} (\S+)', metrics)
    return float(found.group(1)) if found else 0.0


async def test_two_credit_instances_share_partitions_and_keep_the_limit(stack, store, shop, until, tmp_path):
    port = free_port()
    env = {**stack.service_env("credit"), "HARMON_INSTANCE_ID": "2", "HARMON_CREDIT_HEALTH_PORT": str(port)}
    log = open(tmp_path / "credit-2.log", "wb")
    second = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.credit", env=env,
                                                  cwd=stack.data_dir, stdout=log, stderr=log)
    try:
        async with aiohttp.ClientSession() as http:
            async def both_ready():
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as a, http.get(stack.readyz_url("credit")) as b:
                        return a.status == 200 and b.status == 200
                except aiohttp.ClientError:
                    return False
            await until(both_ready, timeout=30, message="second credit instance ready, first rebalanced")
            shares = []
            for url in (stack.readyz_url("credit"), f"http://127.0.0.1:{port}/readyz"):
                async with http.get(url) as r:
                    shares.append((await r.json())["partitions_assigned"])
            # the group splits the partitions of every topic credit reads between the two instances
            assert all(n > 0 for n in shares) and sum(shares) == len(_topics_read_by_credit()) * stack.partitions, shares

            before = [_reservations_handled(await _metrics(http, p)) for p in (stack.health_ports["credit"], port)]
            token = await store.token(shop.tight)
            carts = [await store.cart_with(token, {"sku": "OIL-1L", "quantity": 1}) for _ in range(20)]
            replies = await asyncio.gather(*(store.checkout(token, c["id"], key=new_id("k")) for c in carts))
            statuses = [r.status for r in replies]
            assert statuses.count(201) == 5 and statuses.count(402) == 15
            assert sum(r.body["total"] for r in replies if r.status == 201) == FIVE_OIL_CARTS

            others = [await store.token(c) for c in (shop.big, shop.small, shop.buyer_a)]
            for t in others:
                cart = await store.cart_with(t, {"sku": "OIL-1L", "quantity": 1})
                assert (await store.checkout(t, cart["id"], key=new_id("k"))).status == 201
            after = [_reservations_handled(await _metrics(http, p)) for p in (stack.health_ports["credit"], port)]
            assert sum(after) - sum(before) == 23  # every reservation decided exactly once, by one instance
    finally:
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 20) == 0
        log.close()
        await until(lambda: _ready(stack), timeout=30, message="first credit instance owns every partition again")


async def _ready(stack) -> bool:
    async with aiohttp.ClientSession() as http, http.get(stack.readyz_url("credit")) as r:
        return r.status == 200
