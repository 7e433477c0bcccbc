"""A property-based run over the SERVED /openapi.json against the real stack (schemathesis).

Every operation is called with a real secret key and shopper token, half the time on objects that exist (a
real cart, line, order and sku) and otherwise on generated ids. Every answer must be documented: no 5xx, a
documented status and content type, a body and headers that match the document. A second run sends only
requests the document forbids (invalid bodies, parameters, headers) to the same real objects: each must be
refused with a 4xx and leave every row of the tenant's carts, lines, orders, checkouts, reservations and
idempotency records as it was.

Bounded (examples per operation, no deadline) and derandomized, so CI runs the same cases every time.
"""

import collections
from datetime import UTC, datetime
import functools
import itertools

import pytest
import pytest_asyncio
import requests
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (content_type_conformance, negative_data_rejection, not_a_server_error,
                                 response_headers_conformance, response_schema_conformance, status_code_conformance)

from libs.contracts.erp import FulfilmentLine, FulfilmentRecorded
from libs.contracts.fields import CartId, CustomerId, Sku, accepts
from libs.contracts.ids import new_id
from services.gateway.openapi import OPERATIONS

from tests.conftest import until

from .conftest import Shop, erp_settled, publish_shop
from .storefront import Storefront

pytestmark = pytest.mark.e2e

CONFORMANCE = [not_a_server_error, status_code_conformance, content_type_conformance,
               response_schema_conformance, response_headers_conformance]
EXAMPLES = 15  # per operation and run: about a minute for both runs on two cores

# Body fields that name an object, and when a generated value is one the document accepts (its kind's rule).
BODY_IDS = {
    "cart_id": functools.partial(accepts, CartId),
    "customer_id": functools.partial(accepts, CustomerId),
    "sku": functools.partial(accepts, Sku),
}
# What the before_call hook below puts in place of generated ids; filled by the `fuzz` fixture.
REAL: dict[str, str] = {}


class Fuzz:
    def __init__(self, shop: Shop, token: str):
        self.shop = shop
        self.headers = {"Authorization": f"Bearer {shop.secret_key}", "X-Storefront-Shopper-Token": token}
        self.session = requests.Session()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fuzz(stack, http, erp, new_tenant):
    """A tenant of its own with real objects to aim at: a cart with a line, a second cart, an order, its invoice
    and its order.confirmed event, a webhook endpoint (which the delete operation's valid cases delete: the
    operations after it answer its documented 404)."""
    keys = await new_tenant()
    shop = Shop(tenant_id=keys.tenant_id, secret_key=keys.secret_key, publishable_key=keys.publishable_key)
    await publish_shop(erp, shop)
    await erp_settled(stack.bootstrap)
    store = Storefront(http, "", shop.secret_key)
    token = await store.token(shop.big)
    cart = await store.cart_with(token, {"sku": "RICE-1KG", "quantity": 2})
    checkout_cart = await store.cart_with(token, {"sku": "OIL-1L", "quantity": 1})
    ordered = await store.cart_with(token, {"sku": "FLOUR-2KG", "quantity": 1})
    order = await store.checkout(token, ordered["id"], key=new_id("k"))
    assert order.status == 201, order.body
    # shipped, so it has an invoice to read (and a cancel of it is refused, never done)
    line = order.body["lines"][0]["id"]
    await erp.publish(None, FulfilmentRecorded(fulfilment_id=new_id("ful"), order_id=order.body["id"],
                                               lines=[FulfilmentLine(line_id=line, quantity=1)],
                                               shipped_at=datetime.now(UTC)), shop.tenant_id, key=order.body["id"])

    async def invoiced():
        return await store.invoices(token, order_id=order.body["id"]) or None
    [invoice] = await until(invoiced, timeout=20, message="the order's invoice issued")
    # a webhook endpoint (test mode: a loopback receiver that is never there, for an event the fuzz never causes)
    endpoint = await store.call("POST", "/v1/webhook_endpoints",
                                json={"url": "http://127.0.0.1:9/fuzz", "enabled_events": ["invoice.voided"]})
    assert endpoint.status == 201, endpoint.body

    async def confirmed():
        r = await store.call("GET", "/v1/events?type=order.confirmed")
        return next((e for e in r.body.get("data", ()) if e["data"]["object"]["id"] == order.body["id"]), None)
    event = await until(confirmed, timeout=20, message="the order's order.confirmed event recorded")
    REAL.update(cart_id=cart["id"], line_id=cart["lines"][0]["id"], order_id=order.body["id"], sku="RICE-1KG",
                invoice_id=invoice["id"], endpoint_id=endpoint.body["id"], event_id=event["id"],
                body_cart_id=checkout_cart["id"], body_customer_id=shop.big, body_sku="OIL-1L")
    f = Fuzz(shop, token)
    yield f
    f.session.close()
    REAL.clear()


@pytest.fixture(scope="module")
def served(stack) -> dict[str, schemathesis.APIOperation]:
    """The operations of the document as the gateway serves it, by operationId."""
    config = schemathesis.Config.from_dict({"base-url": stack.base_url,
                                            "generation": {"with-security-parameters": False}})
    schema = schemathesis.openapi.from_url(f"{stack.base_url}/openapi.json", config=config)
    operations = [result.ok() for result in schema.get_all_operations()]
    return {schema.get_operation_id(op): op for op in operations}


def test_every_route_is_fuzzed(served):
    assert sorted(served) == sorted(OPERATIONS)


def run(operation: schemathesis.APIOperation, mode: GenerationMode, fuzz, checks) -> None:
    """`EXAMPLES` generated cases of one operation, each sent and its answer checked against the document."""

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate, Phase.shrink])
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case):
        case.call_and_validate(session=fuzz.session, headers=fuzz.headers, checks=checks)

    check()


def _aim_at_real_objects(case) -> bool:
    """Every invalid case, and every other valid one of an operation (in the derandomized order, so the same
    cases every run)."""
    if case.meta.generation.mode.is_negative:
        return True
    return next(_turns[case.operation.label]) % 2 == 0


_turns: dict[str, itertools.count] = collections.defaultdict(itertools.count)


@schemathesis.hook
def before_call(context, case, kwargs):
    """Put real ids where the generated ones are valid, so what the document allows reaches real objects.

    Only values the document accepts are swapped for other accepted values, so an invalid case stays invalid.
    """
    if not REAL or case.meta is None or not _aim_at_real_objects(case):
        return
    negative = {location.value for location, c in case.meta.components.items() if c.mode.is_negative}
    if case.path_parameters and "path" not in negative:
        case.path_parameters.update({name: REAL[name] for name in case.path_parameters})
    if isinstance(case.body, dict):
        for name, accepts in BODY_IDS.items():
            value = case.body.get(name)
            if isinstance(value, str) and accepts(value):
                case.body[name] = REAL[f"body_{name}"]


async def tenant_rows(db, tenant_id: str) -> dict[str, list]:
    """Every row the API can write for a tenant, as plain tuples."""
    queries = {
        "cart": ["SELECT id, status, version FROM carts WHERE tenant_id = $1",
                 "SELECT id, cart_id, base_quantity, order_quantity FROM cart_lines WHERE tenant_id = $1"],
        "orders": ["SELECT id FROM orders WHERE tenant_id = $1",
                   "SELECT id, state, attempt FROM checkouts WHERE tenant_id = $1"],
        "credit": ["SELECT reservation_id, status, amount FROM reservations WHERE tenant_id = $1"],
        "gateway": ["SELECT key, status, response_status FROM idempotency_records WHERE tenant_id = $1"],
    }
    return {q: sorted(tuple(r) for r in await db(service, q, tenant_id))
            for service, qs in queries.items() for q in qs}


@pytest_asyncio.fixture(loop_scope="session")
async def nothing_written(fuzz, db):
    """Fails the test if any row of the fuzz tenant changed while it ran."""
    before = await tenant_rows(db, fuzz.shop.tenant_id)
    yield
    after = await tenant_rows(db, fuzz.shop.tenant_id)
    changed = {q: (before[q], after[q]) for q in before if before[q] != after[q]}
    assert not changed, f"invalid requests wrote rows: {changed}"


@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_every_answer_is_documented(served, fuzz, operation_id):
    run(served[operation_id], GenerationMode.POSITIVE, fuzz, CONFORMANCE)


# operations that take no parameter and no body: there is no invalid request of them to generate
NO_INPUT = {"get_credit"}


def test_the_operations_without_input_take_none(served):
    for operation_id in NO_INPUT:
        definition = served[operation_id].definition.raw
        assert not definition.get("parameters") and "requestBody" not in definition, operation_id


@pytest.mark.parametrize("operation_id", [op for op in OPERATIONS if op not in NO_INPUT])
def test_invalid_requests_are_refused_and_write_nothing(served, fuzz, nothing_written, operation_id):
    run(served[operation_id], GenerationMode.NEGATIVE, fuzz, [*CONFORMANCE, negative_data_rejection])
