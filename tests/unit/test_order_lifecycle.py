"""The order's lifecycle, pure (services/orders/lifecycle.py): each transition with its one event at the next
version, the status transitions, every refusal code, the same record twice and the same id with other content."""

from datetime import UTC, datetime, timedelta

import pytest

from libs.contracts.base import RecordRefused, Rejection
from libs.contracts.erp import DeliveryRecorded, OrderCancellationRecorded
from libs.contracts.errors import ErrorCode
from libs.contracts.orders import (FulfilmentDelivered, OrderCancelled, OrderDelivered, OrderFulfilled,
                                   OrderPartiallyFulfilled)
from services.orders.lifecycle import order_number

from .test_invoicing import T0, line, order, shipment

D1, D2 = T0 + timedelta(days=1), T0 + timedelta(days=2)


def an_order():
    return order([line("cli_1", 24, 26_400, 3_960), line("cli_2", 3, 2_697, 405)])


def test_fulfilling_part_then_the_rest():
    o = an_order()
    part = o.fulfil(shipment("f1", T0, cli_1=10), "inv_1")
    p = part.order
    assert (p.view.status, p.version, [x.quantity_fulfilled for x in p.view.lines]) == (
        "partially_fulfilled", 2, [10, 0])
    assert [(t.status, t.at) for t in p.view.status_transitions] == [("confirmed", T0), ("partially_fulfilled", T0)]
    assert (part.fulfilment.fulfilment_id, part.fulfilment.invoice_id, part.fulfilment.shipped_at) == ("f1", "inv_1",
                                                                                                        T0)
    e = part.event
    assert (e.topic.name, e.key, e.aggregate_id, e.aggregate_version) == ("orders.events.v1", "ord_1", "ord_1", 2)
    assert e.payload == OrderPartiallyFulfilled(order=p.view, fulfilment_id="f1")
    again = p.fulfil(shipment("f2", D1, cli_1=4, cli_2=2), "inv_2").order  # still partial: no new transition
    assert (again.view.status, again.version, len(again.view.status_transitions)) == ("partially_fulfilled", 3, 2)
    done = again.fulfil(shipment("f3", D2, cli_1=10, cli_2=1), "inv_3")
    assert (done.order.view.status, done.order.version) == ("fulfilled", 4)
    assert done.order.view.status_transitions[-1].status == "fulfilled" and done.order.view.status_transitions[-1].at == D2
    assert done.event.payload == OrderFulfilled(order=done.order.view, fulfilment_id="f3")
    assert [f.fulfilment_id for f in done.order.view.fulfilments] == ["f1", "f2", "f3"]


def test_one_fulfilment_of_everything_goes_straight_to_fulfilled():
    done = an_order().fulfil(shipment("f1", T0, cli_1=24, cli_2=3), "inv_1").order
    assert [t.status for t in done.view.status_transitions] == ["confirmed", "fulfilled"]


def test_the_same_fulfilment_again_is_nothing_and_other_content_a_conflict():
    o = an_order().fulfil(shipment("f1", T0, cli_1=10), "inv_1").order
    assert o.fulfil(shipment("f1", T0, cli_1=10), "inv_x") is None
    for other in (shipment("f1", T0, cli_1=11), shipment("f1", D1, cli_1=10)):
        with pytest.raises(RecordRefused) as conflict:
            o.fulfil(other, "inv_x")
        assert conflict.value.code is ErrorCode.RECORD_CONFLICT


def test_refusals_of_a_fulfilment():
    o = an_order()
    cases = [(shipment("f1", T0, cli_9=1), ErrorCode.LINE_UNKNOWN),
             (shipment("f1", T0, cli_2=4), ErrorCode.OVER_FULFILMENT)]
    shipped = o.fulfil(shipment("f1", T0, cli_2=2), "inv_1").order
    cases.append((shipment("f2", T0, cli_2=2), ErrorCode.OVER_FULFILMENT))  # counting what f1 shipped
    for record, code in cases:
        with pytest.raises(RecordRefused) as refused:
            (shipped if record.fulfilment_id == "f2" else o).fulfil(record, "inv_x")
        assert refused.value.code is code, record
    cancelled = o.cancel_by_customer(T0).order
    with pytest.raises(RecordRefused) as gone:
        cancelled.fulfil(shipment("f1", T0, cli_1=1), "inv_x")
    assert gone.value.code is ErrorCode.ORDER_CANCELLED


def delivery(at: datetime, fid: str | None = None) -> DeliveryRecorded:
    return DeliveryRecorded(order_id="ord_1", fulfilment_id=fid, delivered_at=at)


def test_deliveries_of_each_fulfilment_then_the_order():
    o = an_order().fulfil(shipment("f1", T0, cli_1=24), "inv_1").order
    one = o.deliver(delivery(D1, "f1"))
    assert (one.order.view.status, one.order.version, one.delivered) == ("partially_fulfilled", 3, ("f1",))
    assert one.event.payload == FulfilmentDelivered(order=one.order.view, fulfilment_id="f1")
    assert one.order.deliver(delivery(D1, "f1")) is None  # the same delivery again
    with pytest.raises(RecordRefused) as conflict:
        one.order.deliver(delivery(D2, "f1"))
    assert conflict.value.code is ErrorCode.RECORD_CONFLICT
    rest = one.order.fulfil(shipment("f2", D1, cli_2=3), "inv_2").order
    done = rest.deliver(delivery(D2))  # every fulfilment not delivered yet: f2
    assert (done.order.view.status, done.order.version, done.delivered) == ("delivered", 5, ("f2",))
    assert done.event.payload == OrderDelivered(order=done.order.view)
    assert done.order.view.status_transitions[-1].status == "delivered"
    assert [f.delivered_at for f in done.order.view.fulfilments] == [D1, D2]


def test_refusals_of_a_delivery():
    o = an_order()
    for record in (delivery(D1), delivery(D1, "f1")):
        with pytest.raises(RecordRefused) as nothing:
            o.deliver(record)
        assert nothing.value.code is ErrorCode.NOT_FULFILLED
    shipped = o.fulfil(shipment("f1", T0, cli_1=1), "inv_1").order
    with pytest.raises(RecordRefused) as unknown:
        shipped.deliver(delivery(D1, "f9"))
    assert unknown.value.code is ErrorCode.NOT_FULFILLED
    with pytest.raises(RecordRefused) as gone:
        o.cancel_by_customer(T0).order.deliver(delivery(D1))
    assert gone.value.code is ErrorCode.ORDER_CANCELLED


def test_the_shopper_cancels_a_confirmed_order_only():
    o = an_order()
    c = o.cancel_by_customer(D1, "changed my mind")
    v = c.order.view
    assert (v.status, v.cancelled_by, v.cancellation_reason, c.order.version) == ("cancelled", "customer",
                                                                                 "changed my mind", 2)
    assert v.status_transitions[-1].status == "cancelled" and v.status_transitions[-1].at == D1
    assert c.event.payload == OrderCancelled(order=v) and c.event.aggregate_version == 2
    assert c.order.cancel_by_customer(D2) is None  # already cancelled: the view again
    shipped = o.fulfil(shipment("f1", T0, cli_1=1), "inv_1").order
    with pytest.raises(Rejection) as no:
        shipped.cancel_by_customer(D1)
    assert (no.value.code, no.value.status) == (ErrorCode.ORDER_NOT_CANCELLABLE, "partially_fulfilled")


def test_the_merchant_cancels_while_nothing_is_paid_and_not_after_fulfilment():
    o = an_order()
    record = OrderCancellationRecorded(order_id="ord_1", reason="out of stock")
    shipped = o.fulfil(shipment("f1", T0, cli_1=1), "inv_1").order
    c = shipped.cancel_by_merchant(record, D1, any_paid=False)
    assert (c.order.view.status, c.order.view.cancelled_by, c.order.version) == ("cancelled", "merchant", 3)
    assert c.order.cancel_by_merchant(record, D2, any_paid=False) is None  # the same record again
    with pytest.raises(RecordRefused) as conflict:
        c.order.cancel_by_merchant(OrderCancellationRecorded(order_id="ord_1", reason="other"), D2, any_paid=False)
    assert conflict.value.code is ErrorCode.RECORD_CONFLICT
    with pytest.raises(RecordRefused) as shopper_cancelled:  # cancelled by the shopper: another cancellation
        o.cancel_by_customer(D1).order.cancel_by_merchant(record, D2, any_paid=False)
    assert shopper_cancelled.value.code is ErrorCode.RECORD_CONFLICT
    fulfilled = o.fulfil(shipment("f1", T0, cli_1=24, cli_2=3), "inv_1").order
    for state, paid in ((shipped, True), (fulfilled, False),
                        (fulfilled.deliver(delivery(D1)).order, False)):
        with pytest.raises(RecordRefused) as no:
            state.cancel_by_merchant(record, D1, any_paid=paid)
        assert no.value.code is ErrorCode.ORDER_NOT_CANCELLABLE


def test_order_numbers_are_zero_padded_to_six_digits_and_never_cut():
    assert (order_number("ACME", 42), order_number(None, 1), order_number("X", 12_345_678)) == (
        "ACME-000042", "ORD-000001", "X-12345678")
