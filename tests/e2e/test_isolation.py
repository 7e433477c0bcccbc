"""Isolation: another tenant, the other mode, or another customer of the same shop opens none of a customer's objects.

Every object the API exposes by id (carts, their lines, pricing, checkout, orders and their cancel, invoices;
products by sku; webhook endpoints, their secret and deliveries, and events, the merchant's) is
tried by each outsider with a valid key and a valid token of its own: each answer is 404
resource_missing, never 403 (which would confirm the id exists), lists do not show the object, and
the object is unchanged afterwards. Two outsiders hold a token whose `sub` is the owner's very
customer id (the ERP published that id in their tenant or mode too): only the key's tenant and mode
tell them apart.
"""

import asyncio
import os
import signal
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from libs.contracts import topics
from libs.contracts.erp import CustomerUpsert, FulfilmentLine, FulfilmentRecorded
from libs.contracts.ids import new_id

from .conftest import Shops, erp_settled, publish_shops
from .storefront import Storefront
from tests.conftest import connect_unscoped, until

pytestmark = pytest.mark.e2e

OUTSIDERS = ("other tenant", "other tenant, same customer id", "other mode", "other mode, same customer id",
             "other customer")
MISSING = (404, "resource_missing")
# A saga whose step deadline passes less than this after the cart service is back may be expired before the
# cart's answer reaches it (the sweeper runs every 0.25 s): too close to call either way.
DEADLINE_MARGIN = timedelta(seconds=0.5)


@dataclass
class World:
    shops: Shops
    owner: Storefront
    owner_token: str
    outsiders: dict[str, tuple[Storefront, str]]  # name → (client with its own key, its own valid token)
    cart: dict  # the owner's open cart, one line
    order: dict  # the owner's order, fulfilled in part
    invoice: dict  # the invoice its fulfilment issued
    confirmed: dict  # the owner's order with nothing shipped (one a cancel would cancel)
    answers: dict[tuple[str, str], tuple[int, str | None]]
    before: dict
    endpoint: dict  # the owner's tenant's webhook endpoint (test mode)
    event: dict  # the owner's order.confirmed event (test mode)
    live_endpoint: dict  # the same tenant's live-mode endpoint and event: a test key sees neither
    live_event: dict


# What an outsider tries, on the owner's objects: (name, method, path, body)
def attempts(w: "World") -> list[tuple[str, str, str, dict | None]]:
    cart, line, order = w.cart["id"], w.cart["lines"][0]["id"], w.order["id"]
    return [
        ("read cart", "GET", f"/v1/carts/{cart}", None),
        ("add line", "POST", f"/v1/carts/{cart}/lines", {"sku": "OIL-1L", "quantity": 5}),
        ("change line", "PATCH", f"/v1/carts/{cart}/lines/{line}", {"quantity": 7}),
        ("remove line", "DELETE", f"/v1/carts/{cart}/lines/{line}", None),
        ("price cart", "POST", f"/v1/carts/{cart}/price", {}),
        ("check out cart", "POST", "/v1/checkout", {"cart_id": cart}),
        ("read order", "GET", f"/v1/orders/{order}", None),
        ("cancel order", "POST", f"/v1/orders/{w.confirmed['id']}/cancel", {"reason": "not mine"}),
        ("read invoice", "GET", f"/v1/invoices/{w.invoice['id']}", None),
        ("read product", "GET", f"/v1/products/{w.shops.only_sku}", None),
    ]


# The merchant's objects (webhook endpoints, events): the tenant's and mode's, whichever customer is signed in,
# so the outsiders are the other tenant and the other mode (the owner's other customer holds the owner's key).
def webhook_attempts(w: "World") -> list[tuple[str, str, str, dict | None]]:
    endpoint, event = w.endpoint["id"], w.event["id"]
    return [
        ("read endpoint", "GET", f"/v1/webhook_endpoints/{endpoint}", None),
        ("update endpoint", "POST", f"/v1/webhook_endpoints/{endpoint}", {"url": "https://1.1.1.1/stolen",
                                                                           "enabled_events": ["*"]}),
        ("rotate secret", "POST", f"/v1/webhook_endpoints/{endpoint}/rotate_secret", {"expires_in_s": 0}),
        ("list deliveries", "GET", f"/v1/webhook_endpoints/{endpoint}/deliveries", None),
        ("delete endpoint", "DELETE", f"/v1/webhook_endpoints/{endpoint}", None),
        ("read event", "GET", f"/v1/events/{event}", None),
    ]


WEBHOOK_ATTEMPTS = ("read endpoint", "update endpoint", "rotate secret", "list deliveries", "delete endpoint",
                    "read event")
WEBHOOK_OUTSIDERS = tuple(o for o in OUTSIDERS if o != "other customer")

ATTEMPTS = ("read cart", "add line", "change line", "remove line", "price cart", "check out cart", "read order",
            "cancel order", "read invoice", "read product")


def expected(outsider: str, attempt: str) -> tuple[int, str | None]:
    if attempt == "read product" and outsider == "other customer":
        return 200, None  # a tenant's catalog is every customer's (prices aside, see below)
    return MISSING


async def snapshot(w: World) -> dict:
    cart = await w.owner.call("GET", f"/v1/carts/{w.cart['id']}", token=w.owner_token)
    order = await w.owner.call("GET", f"/v1/orders/{w.order['id']}", token=w.owner_token)
    confirmed = await w.owner.call("GET", f"/v1/orders/{w.confirmed['id']}", token=w.owner_token)
    invoice = await w.owner.call("GET", f"/v1/invoices/{w.invoice['id']}", token=w.owner_token)
    endpoint = await w.owner.call("GET", f"/v1/webhook_endpoints/{w.endpoint['id']}")
    event = await w.owner.call("GET", f"/v1/events/{w.event['id']}")
    replies = (cart, order, confirmed, invoice, endpoint, event)
    assert {r.status for r in replies} == {200}, [r.body for r in replies]
    return {"cart": cart.body, "order": order.body, "confirmed": confirmed.body, "invoice": invoice.body,
            "endpoint": endpoint.body, "event": event.body}


async def confirmed_event(client: Storefront, order_id: str) -> dict:
    async def recorded() -> dict | None:
        r = await client.call("GET", "/v1/events?type=order.confirmed&limit=100")
        return next((e for e in r.body.get("data", ()) if e["data"]["object"]["id"] == order_id), None)

    return await until(recorded, timeout=20, message="the order's order.confirmed event was recorded")


async def new_endpoint(client: Storefront, url: str) -> dict:
    # subscribed to an event these tests never cause: no delivery is attempted
    r = await client.call("POST", "/v1/webhook_endpoints", json={"url": url, "enabled_events": ["invoice.voided"]})
    assert r.status == 201, r.body
    return r.body


async def fulfil_first_line(erp, owner: Storefront, token: str, tenant_id: str, order: dict) -> dict:
    """The ERP ships the order's first line (erp.fulfilments.v1); the invoice it issues, once the owner sees it."""
    line = order["lines"][0]
    await erp.publish(topics.ERP_FULFILMENTS, FulfilmentRecorded(
        fulfilment_id=f"SHIP-{new_id('f')[-8:]}", order_id=order["id"],
        lines=[FulfilmentLine(line_id=line["id"], quantity=line["quantity"])], shipped_at=datetime.now(UTC)),
        tenant_id, key=order["id"])

    async def issued() -> dict | None:
        r = await owner.call("GET", f"/v1/invoices?order_id={order['id']}", token=token)
        return r.body["data"][0] if r.status == 200 and r.body.get("data") else None

    return await until(issued, timeout=20, message="the fulfilment's invoice was issued")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(stack, erp, http, new_tenant) -> World:
    shops = await publish_shops(stack, erp, new_tenant)
    owner_id = shops.test.big
    # the owner's customer id, published by the ERP in the other tenant and in live mode as well
    await erp.publish(None, CustomerUpsert(customer_id=owner_id, name="Same id elsewhere"), shops.other.tenant_id)
    await erp.publish(None, CustomerUpsert(customer_id=owner_id, name="Same id, live"), shops.test.tenant_id, True)
    await erp_settled(stack.bootstrap)

    owner = Storefront(http, "", shops.test.secret_key)
    other, live = Storefront(http, "", shops.other.secret_key), Storefront(http, "", shops.live.secret_key)
    outsiders = {
        "other tenant": (other, await other.token(shops.other.big)),
        "other tenant, same customer id": (other, await other.token(owner_id)),
        "other mode": (live, await live.token(shops.live.big)),
        "other mode, same customer id": (live, await live.token(owner_id)),
        "other customer": (owner, await owner.token(shops.test.small)),
    }
    owner_token = await owner.token(owner_id)
    ordered = await owner.cart_with(owner_token, {"sku": "RICE-1KG", "quantity": 2}, {"sku": "OIL-1L", "quantity": 1})
    placed = await owner.checkout(owner_token, ordered["id"])
    assert placed.status == 201, placed.body
    invoice = await fulfil_first_line(erp, owner, owner_token, shops.test.tenant_id, placed.body)
    unshipped = await owner.checkout(owner_token, (await owner.cart_with(owner_token, {"sku": "OIL-1L",
                                                                                       "quantity": 1}))["id"])
    assert unshipped.status == 201, unshipped.body
    cart = await owner.cart_with(owner_token, {"sku": "OIL-1L", "quantity": 1})
    endpoint = await new_endpoint(owner, "http://127.0.0.1:9/isolation")
    event = await confirmed_event(owner, placed.body["id"])
    # live mode: an https URL on a literal public address passes notifier's check without DNS
    live_endpoint = await new_endpoint(live, "https://1.1.1.1/harmon-isolation")
    live_token = outsiders["other mode"][1]
    live_placed = await live.checkout(live_token, (await live.cart_with(live_token, {"sku": "OIL-1L",
                                                                                    "quantity": 1}))["id"])
    assert live_placed.status == 201, live_placed.body
    live_event = await confirmed_event(live, live_placed.body["id"])
    w = World(shops, owner, owner_token, outsiders, cart, placed.body, invoice, unshipped.body, {}, {}, endpoint,
              event, live_endpoint, live_event)
    w.before = await snapshot(w)
    # one at a time: outsiders' attempts on one cart id must not meet each other (see the race test below)
    for name, (client, token) in outsiders.items():
        for attempt, method, path, body in attempts(w):
            r = await client.call(method, path, json=body, token=token)
            w.answers[(name, attempt)] = (r.status, r.error.get("code"))
        if name in WEBHOOK_OUTSIDERS:
            for attempt, method, path, body in webhook_attempts(w):
                r = await client.call(method, path, json=body, token=token)
                w.answers[(name, attempt)] = (r.status, r.error.get("code"))
    return w


@pytest.mark.parametrize("attempt", ATTEMPTS)
@pytest.mark.parametrize("outsider", OUTSIDERS)
async def test_an_outsider_finds_nothing(world: World, outsider: str, attempt: str):
    assert world.answers[(outsider, attempt)] == expected(outsider, attempt)


@pytest.mark.parametrize("attempt", WEBHOOK_ATTEMPTS)
@pytest.mark.parametrize("outsider", WEBHOOK_OUTSIDERS)
async def test_an_outsider_finds_none_of_the_merchants_webhooks(world: World, outsider: str, attempt: str):
    assert world.answers[(outsider, attempt)] == MISSING


async def test_webhook_lists_show_only_the_keys_tenant_and_mode(world: World):
    """A test-mode key never sees the live-mode endpoint or event, nor the live key the test-mode ones; another
    tenant sees neither."""
    owner_endpoints = await world.owner.call("GET", "/v1/webhook_endpoints?limit=100")
    owner_events = await world.owner.call("GET", "/v1/events?limit=100")
    assert owner_endpoints.status == owner_events.status == 200, (owner_endpoints.body, owner_events.body)
    assert [e["id"] for e in owner_endpoints.body["data"]] == [world.endpoint["id"]]
    owner_event_ids = [e["id"] for e in owner_events.body["data"]]
    assert world.event["id"] in owner_event_ids and world.live_event["id"] not in owner_event_ids
    assert all(e["livemode"] is False for e in owner_endpoints.body["data"] + owner_events.body["data"])
    for path in (f"/v1/webhook_endpoints/{world.live_endpoint['id']}", f"/v1/events/{world.live_event['id']}",
                 f"/v1/webhook_endpoints/{world.live_endpoint['id']}/deliveries"):
        r = await world.owner.call("GET", path)
        assert (r.status, r.error.get("code")) == MISSING, (path, r.body)
    for name in WEBHOOK_OUTSIDERS:
        client, _ = world.outsiders[name]
        endpoints = await client.call("GET", "/v1/webhook_endpoints?limit=100")
        events = await client.call("GET", "/v1/events?limit=100")
        assert endpoints.status == events.status == 200, (name, endpoints.body, events.body)
        assert world.endpoint["id"] not in [e["id"] for e in endpoints.body["data"]], name
        assert world.event["id"] not in [e["id"] for e in events.body["data"]], name
        assert all(e["livemode"] is name.startswith("other mode")
                   for e in endpoints.body["data"] + events.body["data"]), name
    live, _ = world.outsiders["other mode"]
    live_ids = [e["id"] for e in (await live.call("GET", "/v1/webhook_endpoints?limit=100")).body["data"]]
    assert live_ids == [world.live_endpoint["id"]]


async def test_the_objects_are_unchanged(world: World):
    assert world.answers, "the attempts ran"
    assert await snapshot(world) == world.before


async def test_lists_show_nothing_of_the_owner(world: World):
    only = world.shops.only_sku
    for name, (client, token) in world.outsiders.items():
        listed = await client.call("GET", "/v1/products?limit=100", token=token)
        assert listed.status == 200, listed.body
        skus = [p["sku"] for p in listed.body["data"]]
        assert (only in skus) is (name == "other customer"), (name, skus)
        assert all(p["livemode"] is name.startswith("other mode") for p in listed.body["data"]), name


async def test_contract_prices_are_the_customers_own(world: World):
    """The owner's contract price for rice (1,100) is nobody else's: another customer sees the list price."""
    owner = await world.owner.call("GET", "/v1/products/RICE-1KG", token=world.owner_token)
    client, token = world.outsiders["other customer"]
    other = await client.call("GET", "/v1/products/RICE-1KG", token=token)
    assert (owner.body["unit_price"], other.body["unit_price"]) == (1_100, 1_250)
    # the same customer id in the other tenant has no contract price there
    client, token = world.outsiders["other tenant, same customer id"]
    assert (await client.call("GET", "/v1/products/RICE-1KG", token=token)).body["unit_price"] == 1_250


async def test_refused_checkouts_leave_no_saga_behind(world: World, stack):
    """Each outsider's checkout of the owner's cart was 404 (stored as the key's answer by the gateway):
    orders keeps no checkout row for it, failed or otherwise."""
    assert [world.answers[(name, "check out cart")] for name in OUTSIDERS] == [MISSING] * len(OUTSIDERS)
    assert await checkouts_of(stack, world.cart["id"]) == []


async def test_order_lists_show_only_the_callers_orders(world: World, http):
    mine = await world.owner.call("GET", "/v1/orders", token=world.owner_token)
    assert world.order["id"] in [o["id"] for o in mine.body["data"]]
    number = world.order["order_number"]
    by_number = await world.owner.call("GET", f"/v1/orders?order_number={number}", token=world.owner_token)
    assert [o["id"] for o in by_number.body["data"]] == [world.order["id"]], by_number.body
    for name, (client, token) in world.outsiders.items():
        theirs = await client.call("GET", "/v1/orders", token=token)
        assert theirs.status == 200 and world.order["id"] not in [o["id"] for o in theirs.body["data"]], name
        # the same number in another tenant or mode is another order, or none; never the owner's
        numbered = await client.call("GET", f"/v1/orders?order_number={number}", token=token)
        assert numbered.status == 200 and world.order["id"] not in [o["id"] for o in numbered.body["data"]], name


async def test_invoice_lists_show_only_the_callers_invoices(world: World):
    mine = await world.owner.call("GET", "/v1/invoices", token=world.owner_token)
    assert world.invoice["id"] in [i["id"] for i in mine.body["data"]]
    for name, (client, token) in world.outsiders.items():
        for query in ("", f"?order_id={world.order['id']}", "?status=open"):
            theirs = await client.call("GET", f"/v1/invoices{query}", token=token)
            assert theirs.status == 200, (name, theirs.body)
            assert world.invoice["id"] not in [i["id"] for i in theirs.body["data"]], (name, query)


async def test_credit_shows_only_the_callers_own_account(world: World):
    """GET /v1/credit takes no id: each caller sees its own bill-to account, never the owner's open invoice."""
    mine = await world.owner.call("GET", "/v1/credit", token=world.owner_token)
    assert mine.status == 200 and world.invoice["id"] in [i["id"] for i in mine.body["open_invoices"]], mine.body
    for name, (client, token) in world.outsiders.items():
        theirs = await client.call("GET", "/v1/credit", token=token)
        assert theirs.status == 200, (name, theirs.body)
        assert world.invoice["id"] not in [i["id"] for i in theirs.body["open_invoices"]], name
        assert theirs.body["livemode"] is name.startswith("other mode"), name



async def checkouts_of(stack, cart_id: str) -> list[dict]:
    """Every checkout saga orders keeps for this cart id (any tenant or mode), read from its database."""
    conn = await connect_unscoped(stack.dsns["orders"])
    try:
        rows = await conn.fetch("SELECT tenant_id, livemode, state, created_at, step_deadline FROM checkouts "
                                "WHERE cart_id = $1 ORDER BY created_at", cart_id)
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def test_an_outsiders_checkout_of_my_cart_id_does_not_block_mine(world: World, stack):
    owner, token, tenant = world.owner, world.owner_token, world.shops.test.tenant_id
    outsider, outsider_token = world.outsiders["other tenant"]
    cart = await owner.cart_with(token, {"sku": "OIL-1L", "quantity": 1})
    key = new_id("k")
    # With the cart service paused (SIGSTOP: it reads nothing), each saga waits at its first step (freezing):
    # the outsider's is in flight when the owner's command arrives. SIGCONT brings it back at once, well within
    # the step deadline (4 s here), where a restart (≈ 4 s on 2 busy cores) would come after it.
    cart_pid = stack.pid("cart")
    assert cart_pid is not None
    os.kill(cart_pid, signal.SIGSTOP)
    tasks = []
    try:
        tasks.append(asyncio.create_task(outsider.checkout(outsider_token, cart["id"])))
        await until(lambda: checkouts_of(stack, cart["id"]), timeout=5, message="the outsider's saga started")
        tasks.append(asyncio.create_task(owner.checkout(token, cart["id"], key=key)))
        mine_then = await until(lambda: owner_started(stack, cart["id"], tenant), timeout=5,
                                message="the owner's saga started beside the outsider's")
        theirs_then = next(c for c in await checkouts_of(stack, cart["id"]) if c["tenant_id"] != tenant)
    finally:
        os.kill(cart_pid, signal.SIGCONT)
        back = datetime.now(UTC)
        theirs, mine = (await asyncio.gather(*tasks, return_exceptions=True) + [None])[:2]
    if theirs_then["state"] not in ("freezing", "pricing", "reserving"):
        pytest.skip(f"the outsider's saga was no longer in flight ({theirs_then['state']}) beside the owner's: "
                    "this machine is slower than the saga's step deadline")
    assert not isinstance(theirs, BaseException) and not isinstance(mine, BaseException), (theirs, mine)
    # Only a saga whose step deadline passed before the cart service went on may time out (504, by design):
    # this machine's slowness, measured here, and then the race was not checked. A 504 of a saga the cart
    # went on in time for fails below.
    late = {who: back - row["step_deadline"] for who, row in (("outsider's", theirs_then), ("owner's", mine_then))
            if back > row["step_deadline"] - DEADLINE_MARGIN}
    timed_out = {who for who, r in (("outsider's", theirs), ("owner's", mine)) if r.status == 504}
    if timed_out and timed_out <= set(late):
        pytest.skip("the cart service went on too late for the step deadline of the "
                    + ", ".join(f"{who} saga ({late[who].total_seconds():+.2f} s)" for who in sorted(timed_out))
                    + ": this machine is slower than the saga's step deadline")
    # Each side's answer is exact.
    assert (theirs.status, theirs.error.get("code")) == MISSING, theirs.body  # never an order, never a wait
    assert mine.status == 201, mine.body  # the outsider's saga on my cart id did not block mine
    again = await owner.checkout(token, cart["id"], key=key)
    assert (again.status, again.body["id"]) == (201, mine.body["id"]), again.body  # the key's answer, replayed


async def owner_started(stack, cart_id: str, tenant_id: str) -> dict | None:
    return next((c for c in await checkouts_of(stack, cart_id) if c["tenant_id"] == tenant_id), None)
