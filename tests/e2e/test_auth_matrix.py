"""The auth matrix: every route × every kind of API key × every kind of shopper token, one exact answer each.

The routes come from the gateway's own route table (each with its `@endpoint` requirements), checked
against the served /openapi.json, so a new route joins the matrix by itself and fails it until CASES
says what it does. `expected()` is the order of checks of docs/api.md ("Authentication") written out once; every cell
asserts the exact status and error code it gives. All cells run once, concurrently in small batches,
in a module fixture; each cell is then its own test item, so a product bug is one precise xfail.
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
import pytest_asyncio

from libs.contracts import topics
from libs.contracts.erp import FulfilmentLine, FulfilmentRecorded
from libs.contracts.ids import new_id
from services.gateway.app import create_app
from services.gateway.auth import SHOPPER_HEADER
from services.gateway.config import Settings
from services.gateway.state import KIND_PUBLISHABLE, KIND_SECRET, SCOPES, Endpoint

from .conftest import Shops, issue_key, publish_shops
from .storefront import Storefront
from tests.conftest import until

pytestmark = pytest.mark.e2e

KEYS = ("no key", "publishable", "secret", "restricted in scope", "restricted out of scope", "revoked",
        "other tenant's", "other mode's")
TOKENS = ("no token", "valid", "expired", "wrong audience", "wrong signature", "alg none", "unknown kid")
FOREIGN = ("other tenant's", "other mode's")  # a key of another tenant or mode, with a valid token of its own
CONCURRENCY = 8


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str
    endpoint: Endpoint


def gateway_routes() -> list[Route]:
    """Every /v1 route of the gateway's app as built by create_app (nothing started)."""
    settings = Settings(signing_secret="matrix-" + "x1y2z3w4" * 5, database_url="postgresql://unused@127.0.0.1/unused")
    app = create_app(settings)
    routes = []
    for r in app.router.routes():
        path = r.resource.canonical if r.resource is not None else ""
        if path.startswith("/v1/") and r.method != "HEAD":
            routes.append(Route(r.handler.__name__, r.method, path, r.handler.endpoint))
    return sorted(routes, key=lambda r: (r.path, r.method))


ROUTES = gateway_routes()


@dataclass
class Objects:
    """The first tenant's objects a cell names in its path or body."""

    cart_id: str
    line_id: str
    order_id: str
    sku: str
    customer_id: str
    invoice_id: str
    endpoint_id: str  # a webhook endpoint of the first tenant's test mode
    event_id: str  # the order.confirmed event of the shared order


@dataclass(frozen=True)
class Case:
    """What a route does once every check passes: for the objects' own caller, and for another tenant or mode."""

    ok: int
    foreign: tuple[int, str | None]
    body: Callable[[Objects], dict] | None = None
    fresh: bool = False  # the operation changes its cart (or needs it open): each cell that reaches it gets its own
    fresh_order: bool = False  # the operation changes its order (cancels it): the caller's own cells get their own
    fresh_endpoint: bool = False  # the operation changes its webhook endpoint: the caller's own cells get their own
    live: tuple[int, str | None] | None = None  # the other mode's answer, when it is not `foreign`'s


MISSING = (404, "resource_missing")
CASES: dict[str, Case] = {
    "create_shopper_token": Case(201, MISSING, lambda o: {"customer_id": o.customer_id}),
    "list_products": Case(200, (200, None)),  # another tenant's own (empty) catalog
    "get_product": Case(200, MISSING),
    "create_cart": Case(201, (201, None), lambda o: {}),  # a cart of the caller's own customer
    "get_cart": Case(200, MISSING, fresh=True),
    "add_line": Case(200, MISSING, lambda o: {"sku": "OIL-1L", "quantity": 1}, fresh=True),
    "change_line": Case(200, MISSING, lambda o: {"quantity": 2}, fresh=True),
    "remove_line": Case(200, MISSING, fresh=True),
    "price_cart": Case(200, MISSING, lambda o: {}, fresh=True),
    "checkout": Case(201, MISSING, lambda o: {"cart_id": o.cart_id}, fresh=True),
    "list_orders": Case(200, (200, None)),  # another tenant's or mode's own list
    "get_order": Case(200, MISSING),
    "cancel_order": Case(200, MISSING, lambda o: {}, fresh_order=True),  # a confirmed order, nothing shipped
    "list_invoices": Case(200, (200, None)),  # another tenant's or mode's own (empty) list
    "get_invoice": Case(200, MISSING),  # the invoice of the shared order's fulfilment
    "get_credit": Case(200, (200, None)),  # another tenant's or mode's customer's own credit account
    # webhooks: the merchant's, no shopper token. A test-mode endpoint may be on a loopback address, a live one not
    "create_webhook_endpoint": Case(201, (201, None), lambda o: dict(MATRIX_ENDPOINT),
                                    live=(400, "url_invalid")),
    "list_webhook_endpoints": Case(200, (200, None)),  # another tenant's or mode's own list
    "get_webhook_endpoint": Case(200, MISSING),
    "update_webhook_endpoint": Case(200, MISSING, lambda o: {"description": "changed by the matrix"},
                                    fresh_endpoint=True),
    "delete_webhook_endpoint": Case(200, MISSING, fresh_endpoint=True),
    "rotate_webhook_secret": Case(200, MISSING, lambda o: {"expires_in_s": 0}, fresh_endpoint=True),
    "list_webhook_deliveries": Case(200, MISSING),
    "list_events": Case(200, (200, None)),  # another tenant's or mode's own events
    "get_event": Case(200, MISSING),
}
# subscribed to an event the matrix never causes (no invoice is voided), so no delivery is ever attempted
MATRIX_ENDPOINT = {"url": "https://127.0.0.1:9/matrix", "enabled_events": ["invoice.voided"]}

# Cells whose answer is a product bug: (route name, key, token) → reason. Strict: fixing the bug fails the run.
KNOWN_BUGS: dict[tuple[str, str, str], str] = {}


def refusal(route: Route, key: str, token: str) -> tuple[int, str] | None:
    """The checks before the operation, in their order: API key → key kind → scope → shopper token."""
    ep = route.endpoint
    if key == "no key":
        return 401, "api_key_missing"
    if key == "revoked":
        return 401, "api_key_revoked"
    if (KIND_PUBLISHABLE if key == "publishable" else KIND_SECRET) not in ep.keys:
        return 403, "publishable_key_not_allowed"
    if key == "restricted out of scope":
        return 403, "scope_missing"
    if ep.shopper != "none":
        if token == "no token" and ep.shopper == "required":
            return 401, "shopper_token_missing"
        if token == "expired":
            return 401, "shopper_token_expired"
        if token not in ("no token", "valid"):
            return 401, "shopper_token_invalid"
    return None


def expected(route: Route, key: str, token: str) -> tuple[int, str | None]:
    """What the cell answers: the first check that refuses, else the operation on the first tenant's objects."""
    case = CASES[route.name]
    if key == "other mode's" and case.live is not None:
        return refusal(route, key, token) or case.live
    return refusal(route, key, token) or (case.foreign if key in FOREIGN else (case.ok, None))


def cells() -> list:
    params = []
    for route in ROUTES:
        for key in KEYS:
            for token in TOKENS:
                reason = KNOWN_BUGS.get((route.name, key, token))
                marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                params.append(pytest.param(route, key, token, marks=marks,
                                           id=f"{route.name}|{key}|{token}".replace(" ", "_")))
    return params


def forge(valid: str, secret: str, defect: str) -> str:
    """A token like `valid` (same claims, kid and customer) but for the one defect named."""
    header = jwt.get_unverified_header(valid)
    claims = {**jwt.decode(valid, options={"verify_signature": False}), "jti": new_id("jti")}
    kid = header["kid"]
    now = int(time.time())
    if defect == "expired":
        return jwt.encode({**claims, "iat": now - 3600, "exp": now - 600}, secret, "HS256", headers={"kid": kid})
    if defect == "wrong audience":  # the same tenant's other mode
        tenant_aud, mode = claims["aud"].rsplit(":", 1)
        aud = f"{tenant_aud}:{'test' if mode == 'live' else 'live'}"
        return jwt.encode({**claims, "aud": aud}, secret, "HS256", headers={"kid": kid})
    if defect == "wrong signature":
        return jwt.encode(claims, "not-the-signing-secret-" + "q" * 24, "HS256", headers={"kid": kid})
    if defect == "alg none":
        return jwt.encode(claims, None, "none", headers={"kid": kid})
    if defect == "unknown kid":
        return jwt.encode(claims, secret, "HS256", headers={"kid": "hs256-0000000000000000"})
    raise ValueError(defect)


@dataclass
class Matrix:
    shops: Shops
    keys: dict[str, str | None]  # key row → a full key (restricted rows: per scope, see key_for)
    restricted: dict[tuple[str, bool], str]  # (scope, in scope?) → key
    tokens: dict[tuple[str, str], str | None]  # (test | live | other, token column) → token
    shared: Objects
    answers: dict[tuple[str, str, str], tuple[int, str | None, Any]]

    def key_for(self, route: Route, key: str) -> str | None:
        if key.startswith("restricted"):
            return self.restricted[(route.endpoint.scope, key == "restricted in scope")]
        return self.keys[key]

    def token_for(self, key: str, token: str) -> str | None:
        principal = {"other tenant's": "other", "other mode's": "live"}.get(key, "test")
        return self.tokens[(principal, token)]


async def fresh_objects(store: Storefront, shared: Objects, token: str) -> Objects:
    cart = await store.cart_with(token, {"sku": "OIL-1L", "quantity": 1})
    return replace(shared, cart_id=cart["id"], line_id=cart["lines"][0]["id"])


async def fresh_order(store: Storefront, shared: Objects, token: str) -> Objects:
    cart = await store.cart_with(token, {"sku": "OIL-1L", "quantity": 1})
    placed = await store.checkout(token, cart["id"])
    assert placed.status == 201, placed.body
    return replace(shared, order_id=placed.body["id"])


async def fresh_endpoint(store: Storefront, shared: Objects) -> Objects:
    created = await store.call("POST", "/v1/webhook_endpoints", json=MATRIX_ENDPOINT)
    assert created.status == 201, created.body
    return replace(shared, endpoint_id=created.body["id"])


async def confirmed_event(store: Storefront, order_id: str) -> str:
    """The id of the order.confirmed event notifier recorded for the order."""
    async def recorded() -> str | None:
        r = await store.call("GET", "/v1/events?type=order.confirmed&limit=100")
        if r.status != 200:
            return None
        return next((e["id"] for e in r.body["data"] if e["data"]["object"]["id"] == order_id), None)

    return await until(recorded, timeout=20, message="the order's order.confirmed event was recorded")


async def invoiced(store: Storefront, erp, tenant_id: str, token: str, order: dict) -> str:
    """The ERP ships the order's first line, as it would (erp.fulfilments.v1); the id of the invoice it issues."""
    line = order["lines"][0]
    await erp.publish(topics.ERP_FULFILMENTS, FulfilmentRecorded(
        fulfilment_id=f"SHIP-{new_id('f')[-8:]}", order_id=order["id"],
        lines=[FulfilmentLine(line_id=line["id"], quantity=line["quantity"])], shipped_at=datetime.now(UTC)),
        tenant_id, key=order["id"])

    async def issued() -> str | None:
        r = await store.call("GET", f"/v1/invoices?order_id={order['id']}", token=token)
        return r.body["data"][0]["id"] if r.status == 200 and r.body.get("data") else None

    return await until(issued, timeout=20, message="the fulfilment's invoice was issued")


async def call(http, route: Route, objects: Objects, key: str | None, token: str | None) -> tuple:
    path = route.path.format(cart_id=objects.cart_id, line_id=objects.line_id, order_id=objects.order_id,
                             sku=objects.sku, invoice_id=objects.invoice_id, endpoint_id=objects.endpoint_id,
                             event_id=objects.event_id)
    body = CASES[route.name].body
    headers = {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if token is not None:
        headers[SHOPPER_HEADER] = token
    async with http.request(route.method, path, json=body(objects) if body else None, headers=headers) as r:
        payload = await r.json(content_type=None)
    return r.status, (payload.get("error") or {}).get("code"), payload


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def matrix(stack, erp, http, new_tenant) -> Matrix:
    shops = await publish_shops(stack, erp, new_tenant)
    t = shops.test.tenant_id
    keys: dict[str, str | None] = {
        "no key": None,
        "publishable": shops.test.publishable_key,
        "secret": shops.test.secret_key,
        "revoked": await issue_key(stack, t, False, "secret", revoked=True),
        "other tenant's": shops.other.secret_key,
        "other mode's": shops.live.secret_key,
    }
    restricted = {}
    for scope in SCOPES:
        restricted[(scope, True)] = await issue_key(stack, t, False, "restricted", scopes=(scope,))
        restricted[(scope, False)] = await issue_key(stack, t, False, "restricted",
                                                     scopes=tuple(s for s in SCOPES if s != scope))
    tokens: dict[tuple[str, str], str | None] = {}
    for principal, shop in (("test", shops.test), ("live", shops.live), ("other", shops.other)):
        valid = await Storefront(http, "", shop.secret_key).token(shop.big)
        tokens[(principal, "no token")] = None
        tokens[(principal, "valid")] = valid
        for defect in TOKENS[2:]:
            tokens[(principal, defect)] = forge(valid, stack.signing_secret, defect)

    store = Storefront(http, "", shops.test.secret_key)
    valid = tokens[("test", "valid")]
    cart = await store.cart_with(valid, {"sku": "OIL-1L", "quantity": 1})
    ordered = await store.cart_with(valid, {"sku": "OIL-1L", "quantity": 1})
    placed = await store.checkout(valid, ordered["id"])
    assert placed.status == 201, placed.body
    invoice_id = await invoiced(store, erp, t, valid, placed.body)
    endpoint = await store.call("POST", "/v1/webhook_endpoints", json=MATRIX_ENDPOINT)
    assert endpoint.status == 201, endpoint.body
    event_id = await confirmed_event(store, placed.body["id"])
    shared = Objects(cart["id"], cart["lines"][0]["id"], placed.body["id"], shops.only_sku, shops.test.big,
                     invoice_id, endpoint.body["id"], event_id)
    m = Matrix(shops, keys, restricted, tokens, shared, {})

    gate = asyncio.Semaphore(CONCURRENCY)

    async def run(route: Route, key: str, token: str) -> None:
        async with gate:
            objects = shared
            # cells that reach the operation never share a cart: one's change must not decide another's answer
            if CASES[route.name].fresh and refusal(route, key, token) is None:
                objects = await fresh_objects(store, shared, valid)
            # the shared order is fulfilled (it has the invoice): a cancel that reaches it needs a confirmed one
            if CASES[route.name].fresh_order and refusal(route, key, token) is None and key not in FOREIGN:
                objects = await fresh_order(store, shared, valid)
            if CASES[route.name].fresh_endpoint and refusal(route, key, token) is None and key not in FOREIGN:
                objects = await fresh_endpoint(store, shared)
            m.answers[(route.name, key, token)] = await call(http, route, objects, m.key_for(route, key),
                                                             m.token_for(key, token))

    await asyncio.gather(*(run(r, k, tok) for r in ROUTES if r.name in CASES for k in KEYS for tok in TOKENS))
    return m


async def test_every_served_route_is_in_the_matrix(http):
    async with http.get("/openapi.json") as r:
        document = await r.json()
    served = {(method.upper(), path, op["operationId"])
              for path, ops in document["paths"].items() for method, op in ops.items()}
    assert served == {(r.method, r.path, r.name) for r in ROUTES}
    assert set(CASES) == {r.name for r in ROUTES}, "every route needs a Case: what it answers once every check passes"
    assert not set(KNOWN_BUGS) - {(r.name, k, t) for r in ROUTES for k in KEYS for t in TOKENS}


@pytest.mark.parametrize(("route", "key", "token"), cells())
async def test_cell(matrix: Matrix, route: Route, key: str, token: str):
    assert route.name in CASES, f"{route.method} {route.path} ({route.name}) has no Case in the matrix"
    status, code, body = matrix.answers[(route.name, key, token)]
    assert (status, code) == expected(route, key, token), body
    if status < 400 and "livemode" in body:
        assert body["livemode"] is (key == "other mode's"), body
