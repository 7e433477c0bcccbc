"""The notifier's handler over an in-memory unit of work: no broker, no database.

The in-memory repository has the real one's method (services/notifier/repository.py) and its unique key
(tenant, mode, aggregate, version, type; the tenant and mode are the unit of work's scope).
"""

from datetime import UTC, datetime, timedelta

import pytest

from libs.contracts.envelope import Envelope
from libs.contracts.money import TaxCategory
from libs.contracts.orders import OrderConfirmed, OrderLine, OrderView
from libs.runtime.database import Scope
from services.notifier import handlers
from services.notifier.domain import PublicEvent, public_event_type
from services.notifier.unit_of_work import NotifierUnitOfWork

TENANT = "ten_A"
OCCURRED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class InMemoryEvents:
    def __init__(self):
        self.rows: dict[tuple, PublicEvent] = {}

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
    uow.events = events
    assert await handlers.record_order_confirmed(evt, uow) is None  # an event: nobody to answer
    assert uow.outbox.envelopes == []
    return uow


async def test_an_order_confirmed_is_recorded_as_the_public_event_subscribers_see():
    events = InMemoryEvents()
    evt = OrderConfirmed(order=order())
    await deliver(events, evt, aggregate_id="ord_1", aggregate_version=3)
    [event] = events.rows.values()
    assert event.id.startswith("evt_")
    assert (event.type, event.aggregate_id, event.aggregate_version) == ("order.confirmed", "ord_1", 3)
    assert event.data == evt.order.model_dump(mode="json")
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
