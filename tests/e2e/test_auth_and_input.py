"""Doors and bad input: who may call what, and that a refused request writes nothing."""

import json
import time

import jwt
import pytest

from libs.contracts.ids import new_id
from libs.runtime.db import make_engine, make_sessionmaker
from services.gateway import admin
from services.gateway.auth import key_id_for

from .conftest import erp_settled, publish_shop, Shop

pytestmark = pytest.mark.e2e


def _token(secret: str, tenant_id: str, customer_id: str, *, exp_in: int = 300, aud: str | None = None,
           kid: str | None = None) -> str:
    now = int(time.time())
    claims = {"iss": "harmon", "aud": aud or f"harmon:{tenant_id}:test", "sub": customer_id, "iat": now - 10,
              "exp": now + exp_in, "jti": new_id("jti")}
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid or key_id_for(secret)})


async def test_shopper_tokens_must_be_ours_current_and_for_this_tenant(store, shop, stack, erp, new_tenant):
    secret = stack.signing_secret
    good = _token(secret, shop.tenant_id, shop.big)
    assert (await store.call("POST", "/v1/carts", json={}, token=good)).status == 201

    cases = {
        "expired": (_token(secret, shop.tenant_id, shop.big, exp_in=-120), "shopper_token_expired"),
        "forged": (_token("not-the-signing-secret-" * 2, shop.tenant_id, shop.big, kid=key_id_for(secret)),
                   "shopper_token_invalid"),
        "garbage": ("not.a.jwt", "shopper_token_invalid"),
        "live audience": (_token(secret, shop.tenant_id, shop.big, aud=f"harmon:{shop.tenant_id}:live"),
                          "shopper_token_invalid"),
    }
    for name, (token, code) in cases.items():
        r = await store.call("POST", "/v1/carts", json={}, token=token)
        assert (r.status, r.error.get("code")) == (401, code), name

    # a real token of another tenant opens nothing here
    other_keys = await new_tenant()
    other = Shop(tenant_id=other_keys.tenant_id, secret_key=other_keys.secret_key, publishable_key=other_keys.publishable_key)
    await publish_shop(erp, other)
    await erp_settled(stack.bootstrap)
    other_token = (await store.call("POST", "/v1/shopper_tokens", json={"customer_id": other.big},
                                    key=other.secret_key)).body["token"]
    r = await store.call("POST", "/v1/carts", json={}, token=other_token)
    assert (r.status, r.error["code"]) == (401, "shopper_token_invalid")

    missing = await store.call("POST", "/v1/carts", json={})
    assert (missing.status, missing.error["code"]) == (401, "shopper_token_missing")
    no_key = await store.call("POST", "/v1/carts", json={}, token=good, key="hk_test_sec_nope")
    assert (no_key.status, no_key.error["code"]) == (401, "api_key_invalid")


async def test_tokens_only_for_active_customers_of_the_tenant(store, shop):
    r = await store.call("POST", "/v1/shopper_tokens", json={"customer_id": shop.inactive})
    assert (r.status, r.error["code"]) == (404, "resource_missing")
    r = await store.call("POST", "/v1/shopper_tokens", json={"customer_id": "cus_NOBODY"})
    assert (r.status, r.error["code"]) == (404, "resource_missing")


async def test_bad_lines_get_catalogue_errors_and_write_nothing(store, shop):
    token = await store.token(shop.big)
    cart = await store.cart_with(token, {"sku": "OIL-1L", "quantity": 1})
    path = f"/v1/carts/{cart['id']}/lines"
    bad = [
        ({"sku": "NO-SUCH-SKU", "quantity": 1}, 400, "sku_unknown", "sku"),
        ({"sku": "OIL-1L", "quantity": 0}, 400, "quantity_invalid", "quantity"),
        ({"sku": "OIL-1L", "quantity": -3}, 400, "quantity_invalid", "quantity"),
        ({"sku": "OIL-1L", "quantity": 1_000_001}, 400, "quantity_invalid", "quantity"),
        ({"sku": "RICE-1KG", "order_uom": "CASE", "order_quantity": 100_000}, 400, "quantity_invalid", "order_quantity"),
        ({"sku": "RICE-1KG", "order_uom": "PALLET", "order_quantity": 1}, 400, "uom_unknown", "order_uom"),
        ({"sku": "OIL-1L"}, 400, "parameter_missing", "quantity"),
        ({"sku": "OIL-1L", "quantity": "two"}, 400, "quantity_invalid", "quantity"),
        ({"sku": 12, "quantity": 1}, 400, "parameter_invalid", "sku"),
        ({"sku": "OIL-1L", "quantity": 1, "unit_price": 1}, 400, "parameter_unknown", "unit_price"),
    ]
    for body, status, code, param in bad:
        r = await store.call("POST", path, json=body, token=token)
        assert (r.status, r.error.get("code"), r.error.get("param")) == (status, code, param), body
        assert r.error["request_id"] == r.headers["Request-Id"]

    malformed = await store.call("POST", path, data=b'{"sku": "OIL-1L", "quantity": ', token=token)
    assert (malformed.status, malformed.error["code"]) == (400, "json_invalid")

    after = await store.call("GET", f"/v1/carts/{cart['id']}", token=token)
    assert after.body["version"] == cart["version"] and after.body["lines"] == cart["lines"]


async def test_unknown_and_other_customers_carts_are_404(store, shop):
    mine = await store.token(shop.big)
    theirs = await store.token(shop.small)
    cart = await store.cart_with(mine, {"sku": "OIL-1L", "quantity": 1})
    for path in (f"/v1/carts/{cart['id']}", "/v1/carts/cart_NOSUCHCART"):
        r = await store.call("GET", path, token=theirs if "NOSUCH" not in path else mine)
        assert (r.status, r.error["code"]) == (404, "resource_missing"), path
    r = await store.call("POST", f"/v1/carts/{cart['id']}/lines", json={"sku": "OIL-1L", "quantity": 1}, token=theirs)
    assert r.status == 404
    r = await store.checkout(theirs, cart["id"], key=new_id("k"))
    assert (r.status, r.error["code"]) == (404, "resource_missing")
    untouched = await store.call("GET", f"/v1/carts/{cart['id']}", token=mine)
    assert (untouched.body["status"], untouched.body["version"]) == ("open", cart["version"])


async def test_an_order_id_alone_opens_nothing(store, shop):
    token = await store.token(shop.big)
    cart = await store.cart_with(token, {"sku": "OIL-1L", "quantity": 1})
    order = (await store.checkout(token, cart["id"], key=new_id("k"))).body
    other = await store.token(shop.small)
    r = await store.call("GET", f"/v1/orders/{order['id']}", token=other)
    assert (r.status, r.error["code"]) == (404, "resource_missing")


async def test_restricted_keys_reach_only_their_scopes(store, shop, stack):
    engine = make_engine(stack.dsns["gateway"], pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            catalog = (await admin.create_api_key(session, shop.tenant_id, False, "secret", scopes=["catalog:read"])).key
            carts = (await admin.create_api_key(session, shop.tenant_id, False, "secret",
                                                scopes=["shopper_tokens:write", "carts:write"])).key
    finally:
        await engine.dispose()

    assert (await store.call("GET", "/v1/products", key=catalog)).status == 200
    denied = await store.call("POST", "/v1/shopper_tokens", json={"customer_id": shop.big}, key=catalog)
    assert (denied.status, denied.error["type"], denied.error["code"]) == (403, "permission_error", "scope_missing")

    token = (await store.call("POST", "/v1/shopper_tokens", json={"customer_id": shop.big}, key=carts)).body["token"]
    cart = await store.call("POST", "/v1/carts", json={}, token=token, key=carts)
    assert cart.status == 201
    r = await store.call("POST", "/v1/checkout", json={"cart_id": cart.body["id"]}, token=token, key=carts)
    assert (r.status, r.error["code"]) == (403, "scope_missing")
    r = await store.call("GET", "/v1/products", key=carts)
    assert (r.status, r.error["code"]) == (403, "scope_missing")
    # the scope check comes before the shopper token: no token needed to be told
    r = await store.call("POST", "/v1/checkout", json={"cart_id": cart.body["id"]}, key=catalog)
    assert (r.status, r.error["code"]) == (403, "scope_missing")


async def test_control_characters_and_repeated_parameters_are_refused_at_the_door(store, shop, db):
    """Bytes a database refuses never reach a service: a 400 (or the path's 404) at once, nothing written.
    Let through, each of these was retried and dead-lettered by the service, and the client got a 504."""
    token = await store.token(shop.big)
    cart = await store.cart_with(token, {"sku": "OIL-1L", "quantity": 1})
    bodies = [
        (f"/v1/carts/{cart['id']}/lines", {"sku": "RICE\u00002KG", "quantity": 1}, "sku"),
        (f"/v1/carts/{cart['id']}/lines", {"sku": "RICE-1KG", "order_uom": "CA\u0007SE", "order_quantity": 1},
         "order_uom"),
        ("/v1/checkout", {"cart_id": cart["id"], "notes": "back\u0000door"}, "notes"),
        ("/v1/checkout", {"cart_id": cart["id"], "po_number": "PO\u001b1001"}, "po_number"),
        ("/v1/checkout", {"cart_id": cart["id"], "notes": "back\ud800door"}, "notes"),  # a lone surrogate
        ("/v1/shopper_tokens", {"customer_id": "cus_A\u0000B"}, "customer_id"),
    ]
    for path, body, param in bodies:
        # json.dumps keeps the escapes (\u0000) as JSON text: the gateway's parser turns them into the characters
        r = await store.call("POST", path, data=json.dumps(body).encode(), token=token,
                             headers={"Idempotency-Key": new_id("k")})
        assert (r.status, r.error.get("code"), r.error.get("param")) == (400, "parameter_invalid", param), (path, r.body)
        assert r.error["type"] == "invalid_request_error" and r.error["request_id"] == r.headers["Request-Id"]

    queries = [
        ("/v1/products?limit=1&limit=100000", "limit"),
        ("/v1/products?starting_after=RICE%00", "starting_after"),
        ("/v1/orders?limit=1&limit=100", "limit"),
        ("/v1/orders?starting_after=ord_01J%00", "starting_after"),
    ]
    for path, param in queries:
        r = await store.call("GET", path, token=token)
        assert (r.status, r.error.get("code"), r.error.get("param")) == (400, "parameter_invalid", param), (path, r.body)

    for path, param in [("/v1/products/RICE%00", "sku"), ("/v1/products/RICE%202KG", "sku"),
                        (f"/v1/carts/{cart['id']}%00", "cart_id"), ("/v1/orders/ord_01J%00", "order_id")]:
        r = await store.call("GET", path, token=token)
        assert (r.status, r.error.get("code"), r.error.get("param")) == (404, "resource_missing", param), (path, r.body)

    after = await store.call("GET", f"/v1/carts/{cart['id']}", token=token)
    assert (after.body["status"], after.body["version"], after.body["lines"]) == ("open", cart["version"], cart["lines"])
    assert await db("orders", "SELECT id FROM checkouts WHERE tenant_id = $1", shop.tenant_id) == []

    # free text keeps its line breaks and tabs
    placed = await store.checkout(token, cart["id"], key=new_id("k"), notes="Back door\n\tring twice",
                                  po_number="PO 1001")
    assert placed.status == 201, placed.body
    assert (placed.body["notes"], placed.body["po_number"]) == ("Back door\n\tring twice", "PO 1001")
