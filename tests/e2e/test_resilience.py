"""Failures of a dependency: explicit, compensated, and retryable with the same key."""

import pytest

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
