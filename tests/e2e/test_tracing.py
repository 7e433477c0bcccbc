"""One checkout is one trace: the services (separate processes) export their spans with OTLP/HTTP to a receiver
this test runs on loopback, and every hop — gateway → orders → cart → pricing → credit → orders → gateway — is in
the checkout request's trace, each hop's span a child of the span that sent its message (libs/runtime/tracing.py)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)

from libs.contracts.ids import new_id
from libs.stack.demo import ErpPublisher, create_tenant_with_keys
from libs.stack.processes import free_port
from libs.stack.supervisor import Stack
from tests.conftest import running_stack, until

from .conftest import erp_settled, publish_shop, shop_of
from .storefront import Storefront

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int


class Receiver:
    """An OTLP/HTTP trace receiver: what the services export, decoded from protobuf."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    async def _traces(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    self.spans.append(Span(attrs.get("service.name", "?"), s.name, s.trace_id.hex(), s.span_id.hex(),
                                           s.parent_span_id.hex(), s.kind))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def traced_stack(request: pytest.FixtureRequest, receiver: Receiver) -> AsyncIterator[Stack]:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
           "OTEL_BSP_SCHEDULE_DELAY": "100"}  # export within a tenth of a second, not the default five
    async with running_stack("harmon-traced-", lambda: request.session.testsfailed, fsync=False,
                             every_service_env=env) as stack:
        yield stack


async def test_one_checkout_is_one_trace_across_every_hop(traced_stack, receiver):
    keys = await create_tenant_with_keys(traced_stack.dsns["gateway"], f"Traced {new_id('t')}", False)
    shop = shop_of(keys)
    async with ErpPublisher(traced_stack.bootstrap) as erp:
        await publish_shop(erp, shop)
    await erp_settled(traced_stack.bootstrap)
    async with aiohttp.ClientSession(traced_stack.base_url) as http:
        store = Storefront(http, "", shop.secret_key)
        token = await store.token(shop.big)
        cart = await store.cart_with(token, {"sku": "RICE-1KG", "quantity": 3})
        placed = await store.checkout(token, cart["id"], key=new_id("k"))
        assert placed.status == 201, placed.body

    def checkout_trace() -> dict[str, Span] | None:
        sends = [s for s in receiver.spans if s.service == "harmon-gateway" and s.name == "orders.commands.v1 send PlaceOrder"]
        for send in sends:
            spans = {_hop(s): s for s in receiver.spans if s.trace_id == send.trace_id}
            # the request's server span ends last (after the reply came back): its export is awaited too
            server_done = any(s.span_id == send.parent_id for s in receiver.spans)
            if set(HOPS) <= set(spans) and "gateway: gateway.replies OrderView" in spans and server_done:
                return {**spans, "gateway: send PlaceOrder": send}
        return None
    hops = await until(checkout_trace, timeout=20, message="every hop of the checkout exported in one trace")
    trace = [s for s in receiver.spans if s.trace_id == hops["gateway: send PlaceOrder"].trace_id]
    by_id = {s.span_id: s for s in trace}

    # the request's server span → the command's producer span → each hop's handler, parent by parent
    send = hops["gateway: send PlaceOrder"]
    server = by_id[send.parent_id]
    assert server.service == "harmon-gateway" and server.kind == SERVER and not server.parent_id, server
    parent = send
    for hop in HOPS:
        assert hops[hop].parent_id == parent.span_id, f"{hop}: parent {by_id.get(hops[hop].parent_id)}, not {parent}"
        assert hops[hop].kind == CONSUMER, hops[hop]
        parent = hops[hop]
    # pricing also told orders it priced the checkout; the answer comes from whichever of the two arrived second
    priced = hops["orders: orders.replies.v1 CheckoutPriced"]
    assert priced.parent_id == hops["pricing: pricing.commands.v1 PriceCheckout"].span_id
    answer = hops["gateway: gateway.replies OrderView"]
    assert answer.parent_id in (priced.span_id, hops["orders: orders.replies.v1 CreditReserved"].span_id), answer
    # each handler's database work is inside its span
    for hop in HOPS:
        assert any(s.kind == CLIENT and s.parent_id == hops[hop].span_id for s in trace), f"{hop}: no SQL span"


SERVER, PRODUCER, CONSUMER, CLIENT = 2, 4, 5, 3  # opentelemetry.proto Span.SpanKind
HOPS = ["orders: orders.commands.v1 PlaceOrder", "cart: cart.commands.v1 FreezeCart",
        "pricing: pricing.commands.v1 PriceCheckout", "credit: credit.commands.v1 ReserveCredit",
        "orders: orders.replies.v1 CreditReserved"]


def _hop(s: Span) -> str:
    service = s.service.removeprefix("harmon-")
    if " process " not in s.name:
        return f"{service}: {s.name}"
    topic, kind = s.name.split(" process ")
    topic = "gateway.replies" if topic.startswith("gateway.replies.") else topic
    return f"{service}: {topic} {kind}"
