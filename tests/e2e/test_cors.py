"""CORS on the real stack: a browser origin (an `Origin` other than the API's own) may use publishable keys
on the catalog; a secret key from a browser is 403 at the key-kind step; preflights are public."""

import pytest

from libs.contracts.ids import new_id

from .storefront import Reply

pytestmark = pytest.mark.e2e

SHOP = "https://shop.example"
ACAO = "Access-Control-Allow-Origin"


def vary(reply) -> set[str]:
    return {v.strip().lower() for v in reply.headers.get("Vary", "").split(",")}


async def test_a_publishable_key_from_a_browser_reads_the_catalog(store, shop):
    for path in ("/v1/products?limit=1", "/v1/products/OIL-1L"):
        r = await store.call("GET", path, key=shop.publishable_key, headers={"Origin": SHOP})
        assert r.status == 200, r.body
        assert r.headers[ACAO] == SHOP and "origin" in vary(r)
        exposed = {h.strip() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"Request-Id", "Retry-After", "Idempotent-Replayed"} <= exposed
        assert "Access-Control-Allow-Credentials" not in r.headers  # keys, never cookies


async def test_a_secret_key_from_a_browser_is_refused_at_the_key_kind_step(store, shop, stack):
    r = await store.call("GET", "/v1/products?limit=1", headers={"Origin": SHOP})
    assert (r.status, r.error["type"], r.error["code"]) == (403, "permission_error", "secret_key_from_browser")
    assert r.headers[ACAO] == SHOP  # the page can read why
    restricted = await _restricted_key(stack, shop.tenant_id)
    r = await store.call("GET", "/v1/products?limit=1", key=restricted, headers={"Origin": "null"})
    assert (r.status, r.error["code"]) == (403, "secret_key_from_browser")
    # a publishable key where it may not go is refused first for its kind, as from a server
    r = await store.call("POST", "/v1/carts", json={}, key=shop.publishable_key, headers={"Origin": SHOP})
    assert (r.status, r.error["code"]) == (403, "publishable_key_not_allowed")
    assert ACAO not in r.headers  # not a browser route at all


async def test_a_secret_key_from_a_browser_writes_nothing(store, shop):
    token = await store.token(shop.big)
    key = new_id("cors")
    r = await store.call("POST", "/v1/carts", json={}, token=token, headers={"Origin": SHOP, "Idempotency-Key": key})
    assert (r.status, r.error["code"]) == (403, "secret_key_from_browser")
    assert ACAO not in r.headers
    r = await store.call("POST", "/v1/carts", json={}, token=token, headers={"Idempotency-Key": key})
    assert r.status == 201 and "Idempotent-Replayed" not in r.headers


async def test_same_origin_is_not_a_browser_origin(store, shop, stack):
    # what /docs' "Try it" sends: the API's own origin, with a secret key
    token = await store.token(shop.big)
    for method, path, body in (("GET", "/v1/products?limit=1", None), ("POST", "/v1/carts", {})):
        r = await store.call(method, path, json=body, token=token, headers={"Origin": stack.base_url})
        assert r.status in (200, 201), r.body
        assert ACAO not in r.headers


async def test_preflights_are_public_and_open_only_publishable_routes(store):
    async def preflight(path: str, method: str):  # as a browser sends it: no key
        async with store.http.options(store.base_url + path, headers={
                "Origin": SHOP, "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "authorization, x-storefront-shopper-token"}) as r:
            assert await r.read() == b""
            return Reply(r.status, {}, dict(r.headers))

    for path in ("/v1/products", "/v1/products/OIL-1L"):
        r = await preflight(path, "GET")
        assert r.status == 204 and r.headers[ACAO] == SHOP, (path, r.headers)
        assert {m.strip() for m in r.headers["Access-Control-Allow-Methods"].split(",")} == {"GET", "HEAD"}
        allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "x-storefront-shopper-token", "content-type"} <= allowed
        assert int(r.headers["Access-Control-Max-Age"]) > 0 and "origin" in vary(r)
    # secret-only routes, methods a route does not serve, unknown paths: 204 with no CORS header (refused)
    for path, method in (("/v1/carts", "POST"), ("/v1/shopper_tokens", "POST"), ("/v1/products", "POST"),
                         ("/v1/checkout", "POST"), ("/v1/nowhere", "GET")):
        r = await preflight(path, method)
        assert r.status == 204, (path, method, r.status)
        assert not [h for h in r.headers if h.lower().startswith("access-control-")], (path, method, r.headers)


async def _restricted_key(stack, tenant_id: str) -> str:
    from libs.runtime.db import make_engine, make_sessionmaker
    from services.gateway import admin

    engine = make_engine(stack.dsns["gateway"], pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            return (await admin.create_api_key(session, tenant_id, False, "restricted", scopes=["catalog:read"])).key
    finally:
        await engine.dispose()
