"""GET /v1/orders: the token's customer's orders, newest first, paged with `limit` and `starting_after`."""

import pytest

from libs.contracts.ids import new_id

pytestmark = pytest.mark.e2e

OIL_1 = {"sku": "OIL-1L", "quantity": 1}


async def place(store, token: str) -> dict:
    cart = await store.cart_with(token, OIL_1)
    placed = await store.checkout(token, cart["id"], key=new_id("k"))
    assert placed.status == 201, placed.body
    return placed.body


async def test_orders_are_listed_newest_first_and_paged(store, shop):
    token = await store.token(shop.big)
    placed = [await place(store, token) for _ in range(3)]
    newest_first = [o["id"] for o in reversed(placed)]

    first = await store.call("GET", "/v1/orders?limit=2", token=token)
    assert first.status == 200, first.body
    assert (first.body["object"], first.body["url"], first.body["has_more"]) == ("list", "/v1/orders", True)
    assert [o["id"] for o in first.body["data"]] == newest_first[:2]
    assert first.body["data"][0] == placed[-1]  # the same object GET /v1/orders/{id} and checkout answer

    rest = await store.call("GET", f"/v1/orders?limit=2&starting_after={newest_first[1]}", token=token)
    assert rest.status == 200, rest.body
    assert ([o["id"] for o in rest.body["data"]], rest.body["has_more"]) == (newest_first[2:], False)


async def test_another_customer_sees_none_of_them(store, shop):
    mine = await place(store, await store.token(shop.big))
    theirs = await store.call("GET", "/v1/orders?limit=100", token=await store.token(shop.small))
    assert theirs.status == 200, theirs.body
    assert mine["id"] not in [o["id"] for o in theirs.body["data"]]
    assert all(o["customer_id"] == shop.small for o in theirs.body["data"])


@pytest.mark.parametrize("query, param", [
    ("limit=0", "limit"), ("limit=101", "limit"), ("limit=ten", "limit"),
    ("starting_after=cart_01ABC", "starting_after"), ("colour=red", "colour"),
])
async def test_bad_list_parameters_are_refused(store, shop, query, param):
    r = await store.call("GET", f"/v1/orders?{query}", token=await store.token(shop.big))
    assert r.status == 400, r.body
    assert r.error["param"] == param
    assert r.error["code"] in ("parameter_invalid", "parameter_unknown")
