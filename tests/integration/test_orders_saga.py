"""The orders service as it runs (the runtime's dispatcher, its batches, outbox and queries) over the real broker
and PostgreSQL, with this test playing the cart, pricing, credit and the gateway: PlaceOrder → FreezeCart(then);
the credit answer before CheckoutPriced → the order, OrderConfirmed, CompleteCart without reply_to, the answer;
GetOrder answers the same view; a Failure compensates both steps.

    HARMON_TEST_SERVICES=orders python -m pytest tests/integration/test_orders_saga.py
"""

import time
from collections.abc import Callable

import pytest_asyncio
from aiokafka import AIOKafkaConsumer

from libs.contracts import topics
from libs.contracts.base import Failure
from libs.contracts.cart import CompleteCart, FreezeCart, ReleaseCart
from libs.contracts.credit import CreditReserved, ReleaseCredit
from libs.contracts.envelope import Envelope
from libs.contracts.erp import CustomerUpsert
from libs.contracts.ids import CART, CUSTOMER, new_id
from libs.contracts.orders import GetOrder, OrderConfirmed, OrderView, PlaceOrder
from libs.contracts.pricing import CheckoutPriced
from libs.runtime.database import Database, Unscoped
from libs.runtime.kafka import ensure_topics
from tests.conftest import until
from tests.unit.test_checkout_saga import FROZEN, TOTALS


class Reader:
    """Every record on some topics from now on, decoded."""

    def __init__(self, bootstrap: str, names: list[str]):
        self.consumer = AIOKafkaConsumer(*names, bootstrap_servers=bootstrap, group_id=None,
                                         auto_offset_reset="latest")
        self.seen: list[tuple[str, Envelope]] = []

    async def start(self) -> None:
        await self.consumer.start()
        await self.consumer.seek_to_end()
        for tp in self.consumer.assignment():
            await self.consumer.position(tp)

    async def next(self, match: Callable[[str, Envelope], bool], timeout: float = 15.0) -> tuple[str, Envelope]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for topic, env in self.seen:
                if match(topic, env):
                    self.seen.remove((topic, env))
                    return topic, env
            for records in (await self.consumer.getmany(timeout_ms=200)).values():
                self.seen += [(r.topic, Envelope.from_bytes(r.value)) for r in records]
        raise AssertionError(f"no such record within {timeout} s; seen {[(t, e.type) for t, e in self.seen]}")


@pytest_asyncio.fixture(loop_scope="session")
async def reader(stack):
    gateway = f"gateway.replies.test-{new_id('g').lower()[-8:]}"
    await ensure_topics(stack.bootstrap, [gateway], 1)
    r = Reader(stack.bootstrap, [topics.CART_COMMANDS.name, topics.CREDIT_COMMANDS.name, topics.ORDERS_EVENTS.name,
                                 gateway])
    r.gateway = gateway
    await r.start()
    yield r
    await r.consumer.stop()


async def test_a_checkout_through_the_running_service(stack, erp, reader):
    tenant, customer, parent, cart = new_id("ten"), new_id(CUSTOMER), new_id(CUSTOMER), new_id(CART)
    await erp.publish(None, CustomerUpsert(customer_id=customer, name="Buyer", bill_to_id=parent, terms="net_30"),
                      tenant)
    db = Database(stack.dsns["orders"], max_size=1)
    try:
        async def customer_copied():
            async with db.transaction(Unscoped("test: the customer copy")) as tx:
                return await tx.conn.fetchval("SELECT bill_to_id FROM customers WHERE customer_id = $1", customer)
        assert await until(customer_copied, timeout=15) == parent
    finally:
        await db.close()

    await erp.publish(topics.ORDERS_COMMANDS, PlaceOrder(cart_id=cart, customer_id=customer, idempotency_key="k1",
                                                         po_number="PO-9"),
                      tenant, key=cart, reply_to=reader.gateway, correlation_id="corr-1", request_id="req-1")
    _, freeze = await reader.next(lambda t, e: isinstance(e.payload, FreezeCart) and e.payload.cart_id == cart)
    assert (freeze.tenant_id, freeze.reply_to, freeze.request_id) == (tenant, "orders.replies.v1", "req-1")
    assert freeze.payload.then.bill_to_id == parent  # from orders' copy of the customer
    checkout_id = freeze.payload.checkout_id
    assert freeze.correlation_id == f"{checkout_id}:1"

    # credit answers first (it may: pricing hands credit the total as it answers the saga)
    reply = dict(key=freeze.correlation_id, correlation_id=freeze.correlation_id, request_id="req-1")
    await erp.publish(topics.ORDERS_REPLIES, CreditReserved(
        reservation_id=freeze.payload.then.reservation_id, bill_to_id="cus_hq", amount=TOTALS.total, limit=10**9,
        exposure=TOTALS.total, available=10**9 - TOTALS.total, currency="JMD"), tenant, **reply)
    await erp.publish(topics.ORDERS_REPLIES, CheckoutPriced(
        cart_id=cart, checkout_id=checkout_id, cart_version=3, lines=list(FROZEN),
        priced=TOTALS.model_copy(update={"cart_id": cart})), tenant, **reply)

    _, answer = await reader.next(lambda t, e: t == reader.gateway and e.correlation_id == "corr-1")
    order = answer.payload
    assert isinstance(order, OrderView)
    assert (order.cart_id, order.bill_to_id, order.terms, order.total, order.po_number) == (
        cart, "cus_hq", "net_30", TOTALS.total, "PO-9")
    _, event = await reader.next(lambda t, e: isinstance(e.payload, OrderConfirmed) and e.aggregate_id == order.order_id)
    assert event.payload.order == order and event.request_id == "req-1"
    _, complete = await reader.next(lambda t, e: isinstance(e.payload, CompleteCart) and e.payload.cart_id == cart)
    assert complete.payload.order_id == order.order_id and complete.reply_to is None

    await erp.publish(topics.ORDERS_COMMANDS, GetOrder(order_id=order.order_id, customer_id=customer), tenant,
                      key=order.order_id, reply_to=reader.gateway, correlation_id="corr-2")
    _, got = await reader.next(lambda t, e: t == reader.gateway and e.correlation_id == "corr-2")
    assert got.payload == order

    # the same key again: the stored answer, nothing sent to the cart
    await erp.publish(topics.ORDERS_COMMANDS, PlaceOrder(cart_id=cart, customer_id=customer, idempotency_key="k1",
                                                         po_number="PO-9"),
                      tenant, key=cart, reply_to=reader.gateway, correlation_id="corr-3")
    _, replay = await reader.next(lambda t, e: t == reader.gateway and e.correlation_id == "corr-3")
    assert replay.payload == order


async def test_a_failure_from_pricing_compensates_both_steps(stack, erp, reader):
    tenant, customer, cart = new_id("ten"), new_id(CUSTOMER), new_id(CART)
    await erp.publish(topics.ORDERS_COMMANDS, PlaceOrder(cart_id=cart, customer_id=customer, idempotency_key="k1"),
                      tenant, key=cart, reply_to=reader.gateway, correlation_id="corr-f")
    _, freeze = await reader.next(lambda t, e: isinstance(e.payload, FreezeCart) and e.payload.cart_id == cart)
    refused = Failure(code="amount_too_large", message="the cart's total is past the bound", param="cart_id")
    await erp.publish(topics.ORDERS_REPLIES, refused, tenant, key=freeze.correlation_id,
                      correlation_id=freeze.correlation_id)
    _, answer = await reader.next(lambda t, e: t == reader.gateway and e.correlation_id == "corr-f")
    assert answer.payload == refused
    _, release = await reader.next(lambda t, e: isinstance(e.payload, ReleaseCart) and e.payload.cart_id == cart)
    _, credit = await reader.next(lambda t, e: isinstance(e.payload, ReleaseCredit)
                                  and e.payload.reservation_id == freeze.payload.then.reservation_id)
    assert (release.reply_to, credit.reply_to, credit.payload.bill_to_id) == (None, None, customer)
