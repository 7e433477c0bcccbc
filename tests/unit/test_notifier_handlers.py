"""The notifier's handlers over an in-memory unit of work: no broker, no database.

The in-memory repository has the real one's method (services/notifier/repository.py) and its unique key
(tenant, mode, aggregate, version, type; the tenant and mode are the unit of work's scope).
"""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from libs.contracts import public, topics
from libs.contracts.envelope import Envelope
from libs.contracts.invoices import (InvoiceDueDateSet, InvoiceIssued, InvoiceLine, InvoiceOverdue, InvoicePaid,
                                     InvoiceView, InvoiceVoided, PaymentApplied, PaymentUnapplied)
from libs.contracts.money import TaxCategory
from libs.contracts.orders import (FulfilmentDelivered, OrderCancelled, OrderConfirmed, OrderDelivered,
                                   OrderFulfilled, OrderLine, OrderPartiallyFulfilled, OrderView)
from libs.runtime.database import Scope
from services.notifier import entrypoint, handlers
from services.notifier.domain import PUBLIC_NAMES, Attempt, Endpoint, PublicEvent, public_event_type
from services.notifier.unit_of_work import NotifierUnitOfWork

TENANT = "ten_A"
OCCURRED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class InMemoryEndpoints:
    """services/notifier/repository.py Endpoints in memory (secrets in the clear: sealing is the repository's)."""

    def __init__(self):
        self.rows: dict[str, Endpoint] = {}

    async def add(self, endpoint: Endpoint) -> bool:
        if endpoint.id in self.rows:
            return False
        self.rows[endpoint.id] = endpoint
        return True

    async def get(self, endpoint_id: str, *, for_update: bool = False) -> Endpoint | None:
        return self.rows.get(endpoint_id)

    async def save(self, endpoint: Endpoint, *, secrets_changed: bool = False) -> None:
        self.rows[endpoint.id] = endpoint

    async def delete(self, endpoint_id: str) -> bool:
        return self.rows.pop(endpoint_id, None) is not None

    async def page(self, limit: int, starting_after: str | None) -> list[Endpoint]:
        rows = sorted(self.rows.values(), key=lambda e: e.id, reverse=True)
        return [e for e in rows if starting_after is None or e.id < starting_after][:limit]

    async def subscribed(self, event_type: str) -> list[str]:
        return sorted(e.id for e in self.rows.values() if e.subscribed(event_type))


class InMemoryDeliveries:
    def __init__(self):
        self.rows: dict[tuple[str, str], dict] = {}  # (endpoint, event) → delivery
        self.attempt_rows: list[Attempt] = []

    async def enqueue(self, event: PublicEvent, endpoint_ids: list[str], now: datetime) -> int:
        new = [e for e in endpoint_ids if (e, event.id) not in self.rows]
        for e in new:
            self.rows[(e, event.id)] = {"status": "pending", "event_type": event.type, "next_attempt_at": now}
        return len(new)

    async def cancel_for(self, endpoint_id: str) -> int:
        pending = [d for (e, _), d in self.rows.items() if e == endpoint_id and d["status"] == "pending"]
        for d in pending:
            d["status"] = "cancelled"
        return len(pending)

    async def attempts(self, endpoint_id: str, limit: int, starting_after: str | None) -> list[Attempt]:
        rows = sorted((a for a in self.attempt_rows if a.endpoint_id == endpoint_id), key=lambda a: a.id,
                      reverse=True)
        return [a for a in rows if starting_after is None or a.id < starting_after][:limit]


class InMemoryEvents:
    def __init__(self):
        self.rows: dict[tuple, PublicEvent] = {}
        # the rest of the unit of work, so a test passes only the events (and reads the others when it cares)
        self.endpoints = InMemoryEndpoints()
        self.deliveries = InMemoryDeliveries()

    def bind(self, uow: NotifierUnitOfWork) -> None:
        uow.events, uow.endpoints, uow.deliveries = self, self.endpoints, self.deliveries

    async def get(self, event_id: str) -> PublicEvent | None:
        return next((e for e in self.rows.values() if e.id == event_id), None)

    async def page(self, limit: int, starting_after: str | None, event_type: str | None) -> list[PublicEvent]:
        rows = sorted(self.rows.values(), key=lambda e: e.id, reverse=True)
        return [e for e in rows if (starting_after is None or e.id < starting_after)
                and (event_type is None or e.type == event_type)][:limit]

    async def record(self, event: PublicEvent) -> bool:
        key = (event.aggregate_id, event.aggregate_version, event.type)
        if key in self.rows:
            return False
        self.rows[key] = event
        return True


def order(order_id: str = "ord_1") -> OrderView:
    line = OrderLine(line_id="cli_1", sku="RICE", order_uom="CS", order_quantity=1, factor=24, base_uom="EA",
                     base_quantity=24, unit_price=1_100, price_source="customer", subtotal=26_400,
                     tax_category=TaxCategory.ZERO_RATED, tax_rate_bp=0, tax=0, total=26_400)
    return OrderView(order_id=order_id, cart_id="cart_1", customer_id="cus_A", bill_to_id="cus_P", status="confirmed",
                     terms="net_30", currency="JMD", subtotal=26_400, tax=0, total=26_400, notes=None, po_number="PO-7",
                     lines=[line], created_at=OCCURRED)


async def deliver(events: InMemoryEvents, evt: OrderConfirmed, **envelope) -> NotifierUnitOfWork:
    env = Envelope(tenant_id=TENANT, livemode=False, payload=evt, occurred_at=OCCURRED, **envelope)
    uow = NotifierUnitOfWork(None, Scope(TENANT, False), env, now=OCCURRED + timedelta(seconds=1))
    events.bind(uow)
    assert await handlers.record_order_event(evt, uow) is None  # an event: nobody to answer
    assert uow.outbox.envelopes == []
    return uow


async def test_an_order_confirmed_is_recorded_as_the_public_event_subscribers_see():
    events = InMemoryEvents()
    evt = OrderConfirmed(order=order())
    await deliver(events, evt, aggregate_id="ord_1", aggregate_version=3)
    [event] = events.rows.values()
    assert event.id.startswith("evt_")
    assert (event.type, event.aggregate_id, event.aggregate_version) == ("order.confirmed", "ord_1", 3)
    assert event.data == {"object": public.order(evt.order, False)}  # the order exactly as the API shows it
    assert event.data["object"]["object"] == "order" and event.data["object"]["livemode"] is False
    assert (event.occurred_at, event.received_at) == (OCCURRED, OCCURRED + timedelta(seconds=1))


async def test_an_event_without_a_version_is_version_1():
    events = InMemoryEvents()
    await deliver(events, OrderConfirmed(order=order()))
    assert [e.aggregate_version for e in events.rows.values()] == [1]


async def test_the_same_event_sent_again_is_recorded_once_and_another_version_again():
    events = InMemoryEvents()
    evt = OrderConfirmed(order=order())
    await deliver(events, evt, aggregate_version=1)
    first = dict(events.rows)
    await deliver(events, evt, aggregate_version=1)  # the outbox relay re-sent it: a new message id, the same event
    assert events.rows == first
    await deliver(events, evt, aggregate_version=2)
    await deliver(events, OrderConfirmed(order=order("ord_2")), aggregate_version=1)
    assert sorted((e.aggregate_id, e.aggregate_version) for e in events.rows.values()) == [
        ("ord_1", 1), ("ord_1", 2), ("ord_2", 1)]
    assert len({e.id for e in events.rows.values()}) == 3


def test_only_public_events_have_a_public_name():
    assert public_event_type("OrderConfirmed") == "order.confirmed"
    assert public_event_type("CreditReserved") is None
    with pytest.raises(ValueError):
        PublicEvent.of("CreditReserved", "res_1", 1, {}, OCCURRED, OCCURRED)


# --- the lifecycle's events (issue 14) ----------------------------------------------------------------------

def invoice(invoice_id: str = "inv_1", status: str = "open") -> InvoiceView:
    line = InvoiceLine(line_id="cli_1", sku="RICE", base_uom="EA", quantity=12, unit_price=1_100, subtotal=13_200,
                       tax_category=TaxCategory.ZERO_RATED, tax_rate_bp=0, tax=0, total=13_200)
    paid = 13_200 if status == "paid" else 0
    return InvoiceView(invoice_id=invoice_id, invoice_number="ACME-INV-000001", order_id="ord_1",
                       order_number="ACME-000001", customer_id="cus_A", bill_to_id="cus_P", fulfilment_id="f-1",
                       status=status, terms="net_30", currency="JMD", subtotal=13_200, tax=0, total=13_200,
                       amount_paid=paid, amount_due=13_200 - paid if status == "open" else 0, lines=[line],
                       issued_at=OCCURRED, due_at=OCCURRED + timedelta(days=30))


ORDER_EVENTS = [
    (OrderConfirmed(order=order()), "order.confirmed"),
    (OrderPartiallyFulfilled(order=order().model_copy(update={"status": "partially_fulfilled"}), fulfilment_id="f-1"),
     "order.partially_fulfilled"),
    (OrderFulfilled(order=order().model_copy(update={"status": "fulfilled"}), fulfilment_id="f-2"), "order.fulfilled"),
    (OrderDelivered(order=order().model_copy(update={"status": "delivered"})), "order.delivered"),
    (OrderCancelled(order=order().model_copy(update={"status": "cancelled", "cancelled_by": "customer"})),
     "order.cancelled"),
]
INVOICE_EVENTS = [
    (InvoiceIssued(invoice=invoice(), reservation_id="res_1"), "invoice.issued"),
    (InvoicePaid(invoice=invoice(status="paid")), "invoice.paid"),
    (InvoiceVoided(invoice=invoice(status="void")), "invoice.voided"),
    (InvoiceOverdue(invoice=invoice().model_copy(update={"overdue": True})), "invoice.overdue"),
]


async def record(events: InMemoryEvents, handler, evt, version: int) -> None:
    env = Envelope(tenant_id=TENANT, livemode=False, payload=evt, occurred_at=OCCURRED, aggregate_version=version)
    uow = NotifierUnitOfWork(None, Scope(TENANT, False), env, now=OCCURRED)
    events.bind(uow)
    assert await handler(evt, uow) is None
    assert uow.outbox.envelopes == []


async def test_every_public_order_event_is_recorded_under_its_public_name_with_the_order_as_data():
    events = InMemoryEvents()
    for version, (evt, _) in enumerate(ORDER_EVENTS, start=1):
        await record(events, handlers.record_order_event, evt, version)
    got = sorted(events.rows.values(), key=lambda e: e.aggregate_version)
    assert [(e.type, e.aggregate_id, e.aggregate_version) for e in got] == [
        (name, "ord_1", v) for v, (_, name) in enumerate(ORDER_EVENTS, start=1)]
    assert [e.data["object"]["status"] for e in got] == ["confirmed", "partially_fulfilled", "fulfilled", "delivered",
                                               "cancelled"]
    assert got[-1].data == {"object": public.order(ORDER_EVENTS[-1][0].order, False)}


async def test_every_public_invoice_event_is_recorded_per_invoice_with_the_invoice_as_data():
    events = InMemoryEvents()
    for version, (evt, _) in enumerate(INVOICE_EVENTS, start=1):
        await record(events, handlers.record_invoice_event, evt, version)
    got = sorted(events.rows.values(), key=lambda e: e.aggregate_version)
    assert [(e.type, e.aggregate_id) for e in got] == [(name, "inv_1") for _, name in INVOICE_EVENTS]
    assert got[0].data == {"object": public.invoice(INVOICE_EVENTS[0][0].invoice, False)}
    assert (got[1].data["object"]["status"], got[1].data["object"]["amount_due"]) == ("paid", 0)


async def test_an_invoice_event_sent_again_is_recorded_once():
    events = InMemoryEvents()
    evt = INVOICE_EVENTS[0][0]
    await record(events, handlers.record_invoice_event, evt, 1)
    await record(events, handlers.record_invoice_event, evt, 1)
    assert [e.type for e in events.rows.values()] == ["invoice.issued"]


def test_the_public_names_are_the_designs_nine():
    assert set(PUBLIC_NAMES.values()) == {
        "order.confirmed", "order.partially_fulfilled", "order.fulfilled", "order.delivered", "order.cancelled",
        "invoice.issued", "invoice.paid", "invoice.voided", "invoice.overdue"}
    for internal in ("FulfilmentDelivered", "InvoiceDueDateSet", "PaymentApplied", "PaymentUnapplied"):
        assert public_event_type(internal) is None


def routes() -> dict:
    ctx = SimpleNamespace(routes={})  # subscribe() only records routes
    entrypoint.register(ctx)
    return ctx.routes


def test_every_type_on_the_topics_it_reads_is_routed_so_none_is_dead_lettered():
    r = routes()
    assert set(r) == {topics.ORDERS_EVENTS.name, topics.INVOICES_EVENTS.name, topics.NOTIFIER_COMMANDS.name}
    assert set(r[topics.NOTIFIER_COMMANDS.name]) == set(topics.NOTIFIER_COMMANDS.carries)
    for spec in (topics.ORDERS_EVENTS, topics.INVOICES_EVENTS):
        assert set(r[spec.name]) == set(spec.carries), spec.name
        for type_, route in r[spec.name].items():
            # public events are recorded (claimed in the inbox); the others are read and passed over
            assert route.query is (public_event_type(type_) is None), type_


async def test_an_event_that_is_not_public_is_passed_over():
    events = InMemoryEvents()
    for evt in (FulfilmentDelivered(order=order(), fulfilment_id="f-1"), InvoiceDueDateSet(invoice=invoice()),
                PaymentApplied(payment_id="p-1", invoice_id="inv_1", amount=100, bill_to_id="cus_P",
                               invoice=invoice()),
                PaymentUnapplied(payment_id="p-1", bill_to_id="cus_P", amount=100, currency="JMD")):
        await record(events, handlers.not_public, evt, 1)
    assert events.rows == {}
