"""The running pricing service hands a checkout on: PriceCheckout in, CheckoutPriced to the saga's reply_to and
ReserveCredit to credit on the saga's correlation, or only a Failure when the cart cannot be priced.

    HARMON_TEST_SERVICES=pricing python -m pytest tests/integration/test_pricing_service.py
"""
from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer

from libs.contracts import topics
from libs.contracts.base import Failure
from libs.contracts.cart import CartLine, CheckoutContinuation
from libs.contracts.credit import ReserveCredit
from libs.contracts.envelope import Envelope
from libs.contracts.erp import CustomerUpsert, PriceUpsert, ProductUpsert
from libs.contracts.ids import new_id
from libs.contracts.money import TaxCategory
from libs.contracts.pricing import CheckoutPriced, PriceCheckout
from libs.runtime.database import Database, Scope
from services.pricing.unit_of_work import PricingUnitOfWork
from tests.conftest import until


async def replies(bootstrap: str, topic: str, correlation_ids: set[str], want: int,
                  timeout: float = 30.0, types: tuple[type, ...] = (object,)) -> list[Envelope]:
    """Envelopes on `topic` whose correlation id is one of `correlation_ids` (and payload one of `types`), from the
    topic's start."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    found: list[Envelope] = []
    try:
        deadline = time.monotonic() + timeout
        while len(found) < want and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    env = Envelope.from_bytes(r.value)
                    if env.correlation_id in correlation_ids and isinstance(env.payload, types):
                        found.append(env)
    finally:
        await consumer.stop()
    return found


def line(line_id: str, sku: str, cases: int) -> CartLine:
    return CartLine(line_id=line_id, sku=sku, order_uom="CS", order_quantity=cases, factor=24, base_uom="EA",
                    base_quantity=24 * cases)


async def test_a_priced_checkout_answers_the_saga_and_asks_credit_an_unpriceable_one_only_answers(stack, erp):
    tenant, customer, bill_to = new_id("ten"), new_id("cus"), new_id("cus")
    for record in [ProductUpsert(sku="RICE", name="Rice", base_uom="EA", units={"CS": 24},
                                 tax_category=TaxCategory.STANDARD),
                   PriceUpsert(price_id="rice-list", sku="RICE", unit_amount=1_250),
                   PriceUpsert(price_id="rice-wholesale", sku="RICE", unit_amount=1_000, price_list_id="wholesale"),
                   CustomerUpsert(customer_id=customer, name="A", price_list_id="wholesale")]:
        await erp.publish(None, record, tenant)
    db = Database(stack.dsns["pricing"], max_size=1)
    try:
        async def loaded() -> bool:
            async with db.transaction(Scope(tenant, False)) as tx:
                book = await PricingUnitOfWork(tx.conn, tx.scope).products.price_book(["RICE"], customer)
            return book.unit_price("RICE") == (1_000, "price_list", "JMD")

        await until(loaded, timeout=30, message="the ERP records applied")

        def checkout(checkout_id: str, lines: list[CartLine]) -> PriceCheckout:
            return PriceCheckout(cart_id=new_id("cart"), customer_id=customer, checkout_id=checkout_id, cart_version=3,
                                 lines=lines, then=CheckoutContinuation(reservation_id=new_id("res"),
                                                                        bill_to_id=bill_to))

        good, bad = checkout(new_id("chk"), [line("cli_1", "RICE", 2)]), checkout(new_id("chk"),
                                                                                 [line("cli_1", "NOPE", 1)])
        for cmd in (good, bad):
            await erp.publish(topics.PRICING_COMMANDS, cmd, tenant, key=cmd.cart_id,
                              reply_to=topics.ORDERS_REPLIES.name, correlation_id=f"{cmd.checkout_id}:1")
        # pricing's answers to the saga (on the whole stack credit answers the good one too, on the same topic)
        answers = {e.correlation_id: e for e in await replies(
            stack.bootstrap, topics.ORDERS_REPLIES.name, {f"{good.checkout_id}:1", f"{bad.checkout_id}:1"}, 2,
            types=(CheckoutPriced, Failure))}
        priced = answers[f"{good.checkout_id}:1"].payload
        assert isinstance(priced, CheckoutPriced)
        assert (priced.checkout_id, priced.cart_version, priced.lines) == (good.checkout_id, 3, good.lines)
        assert (priced.priced.subtotal, priced.priced.tax, priced.priced.total) == (48_000, 7_200, 55_200)
        refused = answers[f"{bad.checkout_id}:1"].payload
        assert isinstance(refused, Failure) and refused.code == "sku_unknown"

        [ask] = await replies(stack.bootstrap, topics.CREDIT_COMMANDS.name, {f"{good.checkout_id}:1"}, 1)
        assert ask.payload == ReserveCredit(reservation_id=good.then.reservation_id, checkout_id=good.checkout_id,
                                            customer_id=customer, bill_to_id=bill_to, amount=55_200, currency="JMD")
        assert (ask.tenant_id, ask.reply_to) == (tenant, topics.ORDERS_REPLIES.name)
        # the refused checkout asked credit nothing: its outbox holds the one ReserveCredit and the two answers
        async with db.transaction(Scope(tenant, False)) as tx:
            queued = sorted(r["topic"] for r in await tx.conn.fetch("SELECT topic FROM outbox"))
        assert queued == [topics.CREDIT_COMMANDS.name, topics.ORDERS_REPLIES.name, topics.ORDERS_REPLIES.name]
    finally:
        await db.close()
