"""`Idempotency-Key` under load and across a crash (docs/api.md, "Idempotency"): one effect per key, whatever the client does."""

import asyncio
import contextlib

import aiohttp
import pytest

from libs.contracts.ids import new_id

from .gateways import extra_gateway
from .storefront import Storefront

pytestmark = pytest.mark.e2e

CLIENTS = 50
IN_USE = (409, "idempotency_error", "idempotency_key_in_use")


async def fifty_at_once(store, method: str, path: str, body: dict, token: str, key: str):
    """The same request with the same key from 50 clients at once: (the one execution, the replays, the 409s)."""
    replies = await asyncio.gather(*(store.call(method, path, json=body, token=token,
                                                headers={"Idempotency-Key": key}) for _ in range(CLIENTS)))
    executed = [r for r in replies if r.status == 201 and "Idempotent-Replayed" not in r.headers]
    replayed = [r for r in replies if r.status == 201 and r.headers.get("Idempotent-Replayed") == "true"]
    refused = [r for r in replies if r.status == 409]
    assert len(executed) + len(replayed) + len(refused) == CLIENTS, [(r.status, r.body) for r in replies]
    assert all((r.status, r.error["type"], r.error["code"]) == IN_USE for r in refused), [r.body for r in refused]
    assert len(executed) == 1, f"{len(executed)} executions of one key"
    assert all(r.body == executed[0].body for r in replayed)
    return executed[0], replayed, refused


async def test_fifty_concurrent_cart_creations_with_one_key_make_one_cart(store, shop, db):
    token = await store.token(shop.big)
    key = new_id("k")
    first, _, _ = await fifty_at_once(store, "POST", "/v1/carts", {}, token, key)

    carts = await db("cart", "SELECT id FROM carts WHERE tenant_id = $1 AND customer_id = $2",
                     shop.tenant_id, shop.big)
    assert [c["id"] for c in carts] == [first.body["id"]]

    again = await store.call("POST", "/v1/carts", json={}, token=token, headers={"Idempotency-Key": key})
    assert (again.status, again.headers.get("Idempotent-Replayed"), again.body) == (201, "true", first.body)


async def reserved_total(db, tenant_id: str, bill_to_id: str) -> int:
    rows = await db("credit", "SELECT coalesce(sum(amount), 0) AS held FROM reservations "
                              "WHERE tenant_id = $1 AND bill_to_id = $2 AND status = 'reserved'", tenant_id, bill_to_id)
    return rows[0]["held"]


async def test_fifty_concurrent_checkouts_with_one_key_place_one_order_and_hold_credit_once(store, shop, db):
    token = await store.token(shop.big)
    cart = await store.cart_with(token, {"sku": "OIL-1L", "quantity": 2}, {"sku": "RICE-1KG", "quantity": 3})
    key = new_id("k")
    first, _, _ = await fifty_at_once(store, "POST", "/v1/checkout", {"cart_id": cart["id"]}, token, key)
    order = first.body
    assert order["cart_id"] == cart["id"]

    orders = await db("orders", "SELECT id FROM orders WHERE tenant_id = $1", shop.tenant_id)
    assert [o["id"] for o in orders] == [order["id"]]
    checkouts = await db("orders", "SELECT id FROM checkouts WHERE tenant_id = $1", shop.tenant_id)
    assert len(checkouts) == 1
    assert await reserved_total(db, shop.tenant_id, shop.big) == order["total"]

    again = await store.checkout(token, cart["id"], key=key)
    assert (again.status, again.headers.get("Idempotent-Replayed"), again.body) == (201, "true", order)
    other = await store.checkout(token, cart["id"], key=key, po_number="PO-2")
    assert (other.status, other.error["code"]) == (409, "idempotency_key_mismatch")
    assert await reserved_total(db, shop.tenant_id, shop.big) == order["total"]


@contextlib.asynccontextmanager
async def second_gateway(stack, until, secret_key: str):
    """Another gateway instance on the same database and broker (as in production), as a Storefront client."""
    async with extra_gateway(stack, until, "2") as http:
        yield Storefront(http, "", secret_key)


async def lease_of(db, tenant_id: str, key: str) -> list[tuple]:
    """(status, lease live?, holder) of an idempotency key, from the gateway's database."""
    rows = await db("gateway", "SELECT status, coalesce(locked_until > now(), false) AS live, holder "
                               "FROM idempotency_records WHERE tenant_id = $1 AND key = $2", tenant_id, key)
    return [(r["status"], r["live"], r["holder"]) for r in rows]


async def customers_owned_by_first_gateway(stack) -> bool:
    async with aiohttp.ClientSession() as http, http.get(stack.readyz_url("gateway")) as r:
        return r.status == 200 and (await r.json())["customers_partitions_assigned"] == stack.partitions


async def test_a_checkout_whose_gateway_was_killed_is_retried_with_its_key_after_the_lease(
        store, shop, stack, db, until):
    """kill -9 a gateway while its checkout waits on credit: while it is down, its lease keeps the key in use on
    every gateway; restarted with the same HARMON_INSTANCE_ID it releases the lease at once, and a retry executes
    again and answers with the one order of the cart."""
    token = await store.token(shop.big)
    cart = await store.cart_with(token, {"sku": "OIL-1L", "quantity": 4})
    key = new_id("k")

    async def saga_waits_on_credit():
        rows = await db("orders", "SELECT state FROM checkouts WHERE tenant_id = $1 AND idempotency_key = $2",
                        shop.tenant_id, key)
        return rows and rows[0]["state"] == "reserving"

    async with second_gateway(stack, until, shop.secret_key) as other:
        await stack.stop_service("credit")
        try:
            in_flight = asyncio.create_task(store.checkout(token, cart["id"], key=key))
            await until(saga_waits_on_credit, timeout=15, message="the saga sent ReserveCredit")
            stack.kill_service("gateway")
            with pytest.raises(aiohttp.ClientError):
                await in_flight

            # the dead gateway's lease still holds the key: nothing runs a second time beside it
            held = await other.checkout(token, cart["id"], key=key)
            assert (held.status, held.error["type"], held.error["code"]) == IN_USE, held.body
            assert await lease_of(db, shop.tenant_id, key) == [("in_progress", True, "1")]
        finally:
            await asyncio.gather(stack.start_service("credit"), stack.start_service("gateway"))

        # the restarted gateway freed its lease before it was ready: the first retry executes, with no wait
        assert await lease_of(db, shop.tenant_id, key) == [("in_progress", False, "1")]
        final = await store.checkout(token, cart["id"], key=key)
        assert final.status == 201, final.body
        assert final.body["cart_id"] == cart["id"]
        assert "Idempotent-Replayed" not in final.headers
        replay = await other.checkout(token, cart["id"], key=key)
        assert (replay.status, replay.headers.get("Idempotent-Replayed"), replay.body) == (201, "true", final.body)
    await until(lambda: customers_owned_by_first_gateway(stack), timeout=30,
                message="the first gateway reads every customers partition again")

    orders = await db("orders", "SELECT id FROM orders WHERE cart_id = $1", cart["id"])
    assert [o["id"] for o in orders] == [final.body["id"]]

    # the first attempt's reservation, served late by credit, is released: credit is held once
    async def held_once():
        return await reserved_total(db, shop.tenant_id, shop.big) == final.body["total"]
    await until(held_once, timeout=15, message="exposure equals the one order")
