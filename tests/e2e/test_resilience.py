"""Failures of a dependency: explicit, compensated, and retryable with the same key."""

import asyncio

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from libs.contracts.ids import new_id

from .conftest import FIVE_OIL_CARTS

pytestmark = pytest.mark.e2e


async def test_checkout_times_out_while_credit_is_down_and_the_retry_places_one_order(store, shop, stack, until):
    token = await store.token(shop.tight)
    # a cart worth the whole limit (five lines of one bottle: tax rounds per line), so a
    # reservation leaked by the timed-out attempt would make the retry a 402
    cart = await store.cart_with(token, *[{"sku": "OIL-1L", "quantity": 1}] * 5)
    priced = await store.price(token, cart["id"])
    assert priced.body["total"] == FIVE_OIL_CARTS
    key = new_id("k")
    await stack.stop_service("credit")
    try:
        timed_out = await store.checkout(token, cart["id"], key=key)
        assert (timed_out.status, timed_out.error["type"], timed_out.error["code"]) == (504, "api_error", "upstream_timeout")

        async def released():
            r = await store.call("GET", f"/v1/carts/{cart['id']}", token=token)
            return r.body["status"] == "open"
        await until(released, timeout=10, message="cart released by the saga's compensation")
    finally:
        await stack.start_service("credit")

    retried = await store.checkout(token, cart["id"], key=key)
    assert retried.status == 201, retried.body
    assert retried.body["total"] == FIVE_OIL_CARTS
    replay = await store.checkout(token, cart["id"], key=key)
    assert (replay.status, replay.body["id"]) == (201, retried.body["id"])
    other = await store.checkout(token, cart["id"], key=new_id("k"))
    assert (other.status, other.error["code"], other.error["order_id"]) == (409, "cart_checked_out", retried.body["id"])


async def _next_message_on(bootstrap: str, topic: str, match: bytes):
    """A consumer positioned at the end of `topic`, and a predicate: has a record containing `match` arrived?"""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest")
    await consumer.start()
    try:
        await consumer.seek_to_end()
        for tp in consumer.assignment():
            await consumer.position(tp)  # resolve "latest" now, before the message can arrive

        async def arrived():
            batch = await consumer.getmany(timeout_ms=100)
            return any(match in rec.value for recs in batch.values() for rec in recs)
        return consumer, arrived
    except BaseException:
        await consumer.stop()
        raise


async def test_orders_killed_mid_saga_resumes_from_its_database(store, shop, stack, until):
    """kill -9 orders while a saga waits on credit: on restart it resumes and exactly one order results."""
    token = await store.token(shop.big)
    cart = await store.cart_with(token, {"sku": "OIL-1L", "quantity": 2})
    key = new_id("k")
    consumer, reserve_sent = await _next_message_on(stack.bootstrap, "credit.commands.v1", shop.big.encode())
    await stack.stop_service("credit")
    try:
        pending = asyncio.create_task(store.checkout(token, cart["id"], key=key))
        await until(reserve_sent, timeout=15, message="the saga reached ReserveCredit")
    finally:
        await consumer.stop()
    stack.kill_service("orders")
    await stack.start_service("credit")
    await stack.start_service("orders")

    first = await pending
    assert first.status in (201, 504), first.body
    final = first if first.status == 201 else await store.checkout(token, cart["id"], key=key)
    assert final.status == 201, final.body
    assert final.body["cart_id"] == cart["id"]
    again = await store.checkout(token, cart["id"], key=new_id("k"))
    assert (again.status, again.error["code"], again.error["order_id"]) == (409, "cart_checked_out", final.body["id"])


async def _readyz(http, stack, service: str) -> tuple[int, dict]:
    async with http.get(stack.readyz_url(service)) as r:
        return r.status, await r.json()


async def test_a_service_whose_database_is_down_pauses_and_handles_the_message_when_it_is_back(
        store, shop, stack, http, db, until):
    """A PostgreSQL outage is a dependency down: nothing parked or dead-lettered, /readyz 503, then it resumes."""
    token = await store.token(shop.big)
    cart = await store.new_cart(token)
    role = f"{stack.db_prefix}_cart"
    admin = await asyncpg.connect(stack.admin_dsn)
    try:
        await admin.execute(f'ALTER ROLE "{role}" NOLOGIN')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role)
        adding = asyncio.create_task(store.add_line(token, cart["id"], sku="RICE-1KG", quantity=3))

        async def cart_paused():
            status, body = await _readyz(http, stack, "cart")
            return status == 503 and body if "paused" in body.get("consumption", "") else None
        paused = await until(cart_paused, timeout=15, message="cart paused its consumption")
        assert paused["ready"] is False and not paused["database"] == "ok"
        first = await adding
        assert first.status in (503, 504), first.body  # the client is told to retry; nothing was refused
    finally:
        await admin.execute(f'ALTER ROLE "{role}" LOGIN')
        await admin.close()

    async def cart_ready():
        return (await _readyz(http, stack, "cart"))[0] == 200
    await until(cart_ready, timeout=15, message="cart ready again")

    async def line_added():
        r = await store.call("GET", f"/v1/carts/{cart['id']}", token=token)
        return r.body if r.status == 200 and r.body["lines"] else None
    body = await until(line_added, timeout=10, message="the AddLine handled once the database was back")
    assert [(x["sku"], x["quantity"]) for x in body["lines"]] == [("RICE-1KG", 3)]
    assert await db("cart", "SELECT id FROM parked") == []
