"""The storefront flow, end to end: real HTTP, real broker, real PostgreSQL, six service processes."""

import asyncio

import pytest

from libs.contracts.erp import CreditLimitUpsert, PriceUpsert, ProductUpsert
from libs.contracts.fields import MAX_AMOUNT
from libs.contracts.ids import new_id

from libs.contracts.topics import ORDERS_EVENTS
from tests.logscan import assert_json_logs, read_records

from .conftest import FIVE_OIL_CARTS, OIL_CART_TOTAL, erp_settled

pytestmark = pytest.mark.e2e

RICE_CASES = {"sku": "RICE-1KG", "order_uom": "CASE", "order_quantity": 2}
OIL_3 = {"sku": "OIL-1L", "quantity": 3}
OIL_1 = {"sku": "OIL-1L", "quantity": 1}
FLOUR_4 = {"sku": "FLOUR-2KG", "quantity": 4}


async def test_storefront_flow_places_an_order(store, shop):
    token = await store.token(shop.big)
    cart = await store.cart_with(token, RICE_CASES, OIL_3)
    assert cart["customer_id"] == shop.big
    rice, oil = cart["lines"]
    assert (rice["order_uom"], rice["order_quantity"], rice["factor"], rice["quantity"]) == ("CASE", 2, 12, 24)

    priced = await store.price(token, cart["id"])
    assert priced.status == 200, priced.body
    # By hand: rice 24 EA at the contract price 11.00 = 264.00, GCT 15% = 39.60;
    # oil 3 EA at the list price 8.99 = 26.97, GCT 4.0455 → 4.05 (half-up per line).
    lines = {x["sku"]: x for x in priced.body["lines"]}
    assert (lines["RICE-1KG"]["unit_price"], lines["RICE-1KG"]["price_source"]) == (1_100, "customer")
    assert (lines["RICE-1KG"]["subtotal"], lines["RICE-1KG"]["tax"], lines["RICE-1KG"]["total"]) == (26_400, 3_960, 30_360)
    assert (lines["OIL-1L"]["unit_price"], lines["OIL-1L"]["price_source"]) == (899, "list")
    assert (lines["OIL-1L"]["subtotal"], lines["OIL-1L"]["tax"], lines["OIL-1L"]["total"]) == (2_697, 405, 3_102)
    assert (priced.body["subtotal"], priced.body["tax"], priced.body["total"]) == (29_097, 4_365, 33_462)
    assert priced.body["currency"] == "JMD"

    placed = await store.checkout(token, cart["id"], key=new_id("k"), notes="Leave at the back door",
                                  po_number="PO-1001", channel="POS")
    assert placed.status == 201, placed.body
    order = placed.body
    assert order["id"].startswith("ord_")
    assert (order["channel"], order["status"], order["notes"], order["po_number"]) == (
        "ECOMMERCE", "confirmed", "Leave at the back door", "PO-1001")
    assert (order["subtotal"], order["tax"], order["total"], order["currency"]) == (29_097, 4_365, 33_462, "JMD")
    assert (order["customer_id"], order["bill_to_id"], order["terms"]) == (shop.big, shop.big, "net_30")
    snap = {x["sku"]: x for x in order["lines"]}["RICE-1KG"]
    assert (snap["order_uom"], snap["order_quantity"], snap["factor"], snap["quantity"], snap["unit_price"],
            snap["price_source"], snap["tax_category"]) == ("CASE", 2, 12, 24, 1_100, "customer", "standard")

    fetched = await store.call("GET", f"/v1/orders/{order['id']}", token=token)
    assert fetched.status == 200
    assert fetched.body == order

    after = await store.call("GET", f"/v1/carts/{cart['id']}", token=token)
    assert (after.body["status"], after.body["order_id"]) == ("checked_out", order["id"])


async def test_zero_rated_lines_carry_no_tax(store, shop):
    token = await store.token(shop.big)
    cart = await store.cart_with(token, FLOUR_4)
    priced = await store.price(token, cart["id"])
    [line] = priced.body["lines"]
    assert (line["subtotal"], line["tax_category"], line["tax"], line["total"]) == (2_400, "zero_rated", 0, 2_400)


async def test_over_credit_limit_is_a_state_and_the_cart_stays_usable(store, shop):
    token = await store.token(shop.small)
    cart = await store.cart_with(token, OIL_3, FLOUR_4)  # 3,102 + 2,400 = 5,502 against a limit of 5,000
    refused = await store.checkout(token, cart["id"], key=new_id("k"))
    assert refused.status == 402, refused.body
    assert (refused.error["type"], refused.error["code"]) == ("over_credit_limit", "over_credit_limit")
    assert refused.body["credit"] == {"limit": 5_000, "exposure": 0, "available": 5_000, "order_total": 5_502,
                                      "shortfall": 502, "currency": "JMD"}
    assert refused.body["cart_id"] == cart["id"]

    # the cart is released: the shopper removes the flour and checks out again with a new key
    flour = next(x for x in cart["lines"] if x["sku"] == "FLOUR-2KG")
    removed = await store.call("DELETE", f"/v1/carts/{cart['id']}/lines/{flour['id']}", token=token)
    assert removed.status == 200, removed.body
    assert [x["sku"] for x in removed.body["lines"]] == ["OIL-1L"]
    placed = await store.checkout(token, cart["id"], key=new_id("k"))
    assert placed.status == 201, placed.body
    assert placed.body["total"] == 3_102


async def test_same_idempotency_key_returns_the_same_order(store, shop):
    token = await store.token(shop.big)
    cart = await store.cart_with(token, OIL_1)
    key = new_id("k")
    first = await store.checkout(token, cart["id"], key=key)
    again = await store.checkout(token, cart["id"], key=key)
    assert first.status == again.status == 201
    assert again.body["id"] == first.body["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"

    # a new key on the converted cart: 409 naming the order it became
    other = await store.checkout(token, cart["id"], key=new_id("k"))
    assert other.status == 409
    assert (other.error["code"], other.error["order_id"]) == ("cart_checked_out", first.body["id"])


async def test_two_concurrent_checkouts_of_one_cart_make_one_order(store, shop):
    token = await store.token(shop.big)
    cart = await store.cart_with(token, OIL_1)
    replies = await asyncio.gather(*(store.checkout(token, cart["id"], key=new_id("k")) for _ in range(2)))
    statuses = sorted(r.status for r in replies)
    assert statuses == [201, 409], [r.body for r in replies]
    loser = next(r for r in replies if r.status == 409)
    assert loser.error["code"] in ("cart_frozen", "cart_checked_out")


async def _checkout_many(store, tokens_and_carts):
    return await asyncio.gather(*(store.checkout(t, c["id"], key=new_id("k")) for t, c in tokens_and_carts))


async def _probe_exposure(store, token) -> dict:
    """The credit block of a 402 for one more cart: the account's exposure as credit sees it now."""
    cart = await store.cart_with(token, OIL_1)
    r = await store.checkout(token, cart["id"], key=new_id("k"))
    assert r.status == 402, r.body
    return r.body["credit"]


async def test_concurrent_checkouts_never_exceed_the_limit(store, shop):
    token = await store.token(shop.tight)
    carts = [await store.cart_with(token, OIL_1) for _ in range(20)]
    replies = await _checkout_many(store, [(token, c) for c in carts])
    statuses = [r.status for r in replies]
    assert statuses.count(201) == 5 and statuses.count(402) == 15, [r.body for r in replies if r.status not in (201, 402)]
    assert sum(r.body["total"] for r in replies if r.status == 201) == FIVE_OIL_CARTS
    credit = await _probe_exposure(store, token)
    assert (credit["limit"], credit["exposure"], credit["available"]) == (FIVE_OIL_CARTS, FIVE_OIL_CARTS, 0)
    assert credit["shortfall"] == OIL_CART_TOTAL


async def test_buyers_sharing_a_bill_to_parent_share_its_limit(store, shop):
    tokens = [await store.token(shop.buyer_a), await store.token(shop.buyer_b)]
    pairs = [(tokens[i % 2], await store.cart_with(tokens[i % 2], OIL_1)) for i in range(20)]
    replies = await _checkout_many(store, pairs)
    statuses = [r.status for r in replies]
    assert statuses.count(201) == 5 and statuses.count(402) == 15
    assert {r.body["bill_to_id"] for r in replies if r.status == 201} == {shop.parent}
    assert {r.body["customer_id"] for r in replies if r.status == 201} <= {shop.buyer_a, shop.buyer_b}
    credit = await _probe_exposure(store, tokens[0])
    assert credit["exposure"] == FIVE_OIL_CARTS


async def test_publishable_key_cannot_touch_carts(store, shop):
    token = await store.token(shop.big)
    r = await store.call("POST", "/v1/carts", json={}, token=token, key=shop.publishable_key)
    assert (r.status, r.error["code"]) == (403, "publishable_key_not_allowed")
    listed = await store.call("GET", "/v1/products", key=shop.publishable_key)
    assert listed.status == 200 and {p["sku"] for p in listed.body["data"]} >= {"RICE-1KG", "OIL-1L", "FLOUR-2KG"}


async def test_request_id_travels_with_the_messages_it_causes(store, shop, stack, until):
    token = await store.token(shop.big)
    cart = await store.cart_with(token, OIL_1)
    rid = new_id("req")
    placed = await store.call("POST", "/v1/checkout", json={"cart_id": cart["id"]}, token=token,
                              headers={"X-Request-Id": rid, "Idempotency-Key": new_id("k")})
    assert placed.status == 201 and placed.headers["Request-Id"] == rid
    # the notifier, three messages away (gateway → orders → OrderConfirmed), logs under the same id, with the
    # message it handles
    said = f"recorded order.confirmed for {placed.body['id']},"  # then how many webhook deliveries it owes
    [record] = await until(lambda: [r for r in read_records(stack.log_path("notifier"))
                                    if r["message"].startswith(said)],
                           timeout=10, message=said)
    assert record["request_id"] == rid, record
    assert (record["tenant_id"], record["livemode"], record["topic"]) == (shop.tenant_id, False, ORDERS_EVENTS.name)
    assert isinstance(record["partition"], int) and isinstance(record["offset"], int) and record["message_id"]
    assert (record["service"], record["logger"]) == ("notifier", "harmon.notifier")


async def test_every_line_each_service_logged_is_a_json_record_without_secrets(store, shop, stack, until):
    """The six processes' logs as a log store reads them, after the flow ran through each of them."""
    token = await store.token(shop.big)
    cart = await store.cart_with(token, OIL_1)
    placed = await store.call("POST", "/v1/checkout", json={"cart_id": cart["id"]}, token=token,
                              headers={"Idempotency-Key": new_id("k")})
    assert placed.status == 201, placed.body
    said = f"recorded order.confirmed for {placed.body['id']},"
    await until(lambda: any(r["message"].startswith(said) for r in read_records(stack.log_path("notifier"))),
                timeout=10,
                message=said)
    logs = [stack.log_path(s) for s in stack.services]
    assert_json_logs(*logs)
    records = [r for log in logs for r in read_records(log)]
    assert {r["service"] for r in records} == set(stack.services), "every service wrote records"
    instances = {s: stack.service_env(s)["HARMON_INSTANCE_ID"] for s in stack.services}
    assert all(r["instance"] == instances[r["service"]] for r in records), "each process names its instance"
    handled = [r for r in records if r["service"] != "gateway" and "message_id" in r]
    assert handled and all({"tenant_id", "livemode", "topic", "partition", "offset"} <= set(r) for r in handled)
    access = [r for r in records if r["logger"] == "harmon.gateway.access" and r.get("tenant_id") == shop.tenant_id]
    assert access and all(r["request_id"].startswith("req_") and r["livemode"] is False for r in access)


async def _publish_big_items(erp, stack, shop) -> None:
    """A generator at 450.00, a price at the 10**15 bound, and room on the big shop's account for both."""
    for record in (ProductUpsert(sku="GENERATOR-XL", name="Generator XL", base_uom="EA"),
                   PriceUpsert(price_id="generator-list", sku="GENERATOR-XL", unit_amount=45_000),
                   ProductUpsert(sku="ISLAND", name="An island", base_uom="EA"),
                   PriceUpsert(price_id="island-list", sku="ISLAND", unit_amount=MAX_AMOUNT),
                   CreditLimitUpsert(customer_id=shop.big, limit=MAX_AMOUNT)):
        await erp.publish(None, record, shop.tenant_id)
    await erp_settled(stack.bootstrap)


async def test_an_order_past_two_to_the_31_cents_is_placed(store, shop, erp, stack):
    await _publish_big_items(erp, stack, shop)
    token = await store.token(shop.big)
    cart = await store.cart_with(token, {"sku": "GENERATOR-XL", "quantity": 100_000})
    priced = await store.price(token, cart["id"])
    assert priced.status == 200, priced.body
    # 100,000 × 450.00 = 4,500,000,000 cents + 15% GCT 675,000,000
    assert (priced.body["subtotal"], priced.body["tax"], priced.body["total"]) == (
        4_500_000_000, 675_000_000, 5_175_000_000)

    placed = await store.checkout(token, cart["id"], key=new_id("k"))
    assert placed.status == 201, placed.body
    assert (placed.body["subtotal"], placed.body["tax"], placed.body["total"]) == (
        4_500_000_000, 675_000_000, 5_175_000_000)
    [line] = placed.body["lines"]
    assert (line["quantity"], line["unit_price"], line["total"]) == (100_000, 45_000, 5_175_000_000)
    fetched = await store.call("GET", f"/v1/orders/{placed.body['id']}", token=token)
    assert fetched.status == 200 and fetched.body == placed.body


async def test_a_cart_past_the_money_bound_is_amount_too_large(store, shop, erp, stack, until):
    await _publish_big_items(erp, stack, shop)
    token = await store.token(shop.big)
    one = await store.cart_with(token, {"sku": "ISLAND", "quantity": 1})  # 10**15, but 15% GCT takes it over
    two = await store.cart_with(token, {"sku": "ISLAND", "quantity": 2})
    for cart in (one, two):
        priced = await store.price(token, cart["id"])
        assert (priced.status, priced.error.get("code"), priced.error.get("param")) == (
            400, "amount_too_large", "cart_id"), priced.body
        refused = await store.checkout(token, cart["id"], key=new_id("k"))
        assert (refused.status, refused.error.get("code")) == (400, "amount_too_large"), refused.body


        async def released(cart_id=cart["id"]):  # the saga gives the cart back after answering
            r = await store.call("GET", f"/v1/carts/{cart_id}", token=token)
            return (r.body["status"], r.body["order_id"]) == ("open", None)
        await until(released, timeout=10, message="the cart released")
