"""Orders' lifecycle handlers over the in-memory unit of work of test_orders_handlers.py: order numbers at
confirmation, fulfilments and their invoices, deliveries, both cancels, payments and unapplied credit, the overdue
sweep and the invoice queries — what each stores, emits (aggregate and version) and answers, its refusals and
its repeats, and the statements it takes."""

from datetime import timedelta

import pytest

from libs.contracts import topics
from libs.contracts.base import RecordRefused, Rejection
from libs.contracts.credit import ReleaseCredit
from libs.contracts.erp import (CustomerUpsert, DeliveryRecorded, FulfilmentRecorded, OrderCancellationRecorded,
                                PaymentRecorded)
from libs.contracts.errors import ErrorCode
from libs.contracts.invoices import GetInvoice, InvoiceIssued, ListInvoices
from libs.contracts.orders import CancelOrder, ListOrders, PlaceOrder
from libs.runtime.database import Unscoped
from services.orders import handlers

from .test_orders_handlers import (A, B, CART, CUSTOMER, NOW, PARENT, World, answer_to, ask, priced_reply,
                                   reserved_reply)

SHIPPED = NOW + timedelta(days=1)


async def confirmed(world: World, scope=A, terms: str = "net_30", prefix: str | None = None, cart: str = CART,
                    n: int = 1):
    """A confirmed order (ord_<n>) of CUSTOMER billed to PARENT on `terms`; returns its view."""
    await world.handle(handlers.upsert_customer, ask(CustomerUpsert(customer_id=CUSTOMER, name="Buyer",
                                                                    bill_to_id=PARENT, terms=terms), scope))
    _, out = await world.handle(handlers.place_order, ask(PlaceOrder(
        cart_id=cart, customer_id=CUSTOMER, idempotency_key=f"key_{n}", order_prefix=prefix), scope))
    freeze = out[0][2]
    await world.handle(handlers.advance_checkout, answer_to(freeze, priced_reply(f"chk_{n}")))
    _, out = await world.handle(handlers.advance_checkout, answer_to(freeze, reserved_reply(f"res_{n}")))
    return out[-1][2].payload


def fulfilment(fid: str = "f1", order_id: str = "ord_1", at=SHIPPED, **quantities) -> FulfilmentRecorded:
    return FulfilmentRecorded(fulfilment_id=fid, order_id=order_id, shipped_at=at,
                              lines=[{"line_id": k, "quantity": q} for k, q in quantities.items()])


def payment(amount: int, pid: str = "pay_1", invoice_id: str | None = None, currency: str = "JMD",
            at=NOW + timedelta(days=5)) -> PaymentRecorded:
    return PaymentRecorded(payment_id=pid, customer_id=PARENT, amount=amount, currency=currency, invoice_id=invoice_id,
                           received_at=at, method="cheque")


def events(out) -> list[tuple[str, str, str, str, int]]:
    return [(t, k, e.type, e.aggregate_id, e.aggregate_version) for t, k, e in out]


async def refused(world: World, handler, record, scope=A) -> ErrorCode:
    with pytest.raises(RecordRefused) as r:
        await world.handle(handler, ask(record, scope))
    return r.value.code


# ---- order numbers ------------------------------------------------------------------------------------------

async def test_an_order_is_numbered_at_confirmation_per_tenant_and_mode_and_filterable():
    world = World()
    first = await confirmed(world, prefix="ACME")
    assert (first.order_number, first.reservation_id) == ("ACME-000001", "res_1")
    assert [(t.status, t.at) for t in first.status_transitions] == [("confirmed", NOW)]
    assert world.checkout("chk_1").result == first  # the same key again answers the numbered order
    second = await confirmed(world, cart="cart_2", n=2)  # no prefix given: ORD; the tenant's counter goes on
    assert second.order_number == "ORD-000002"
    theirs = await confirmed(world, B, n=3)
    assert theirs.order_number == "ORD-000001"  # tenant B counts on its own
    listed, _ = await world.handle(handlers.list_orders, ask(ListOrders(customer_id=CUSTOMER,
                                                                        order_number="ACME-000001")))
    assert [o.order_id for o in listed.orders] == ["ord_1"]
    none, _ = await world.handle(handlers.list_orders, ask(ListOrders(customer_id=CUSTOMER, order_number="X-000009")))
    assert none.orders == []


# ---- fulfilments and invoices ----------------------------------------------------------------------------------

async def test_fulfilling_part_then_the_rest_issues_one_invoice_each_that_add_up_to_the_order():
    world = World()
    order = await confirmed(world, prefix="ACME")
    _, out = await world.handle(handlers.record_fulfilment, ask(fulfilment(cli_1=10, cli_2=1)))
    assert world.store.statements == ["get_order_for_update", "take_invoice", "unapplied", "save_order",
                                      "add_invoice"]
    assert events(out) == [("orders.events.v1", "ord_1", "OrderPartiallyFulfilled", "ord_1", 2),
                           ("invoices.events.v1", "inv_1", "InvoiceIssued", "inv_1", 1)]
    issued: InvoiceIssued = out[1][2].payload
    inv = issued.invoice
    assert (inv.invoice_number, inv.order_number, inv.subtotal, inv.tax, inv.total, inv.amount_due) == (
        "ACME-INV-000001", "ACME-000001", 11_899, 1_785, 13_684, 13_684)  # 11 000 + 899; 1 650 + 135
    assert (issued.reservation_id, inv.issued_at, inv.due_at) == ("res_1", SHIPPED, SHIPPED + timedelta(days=30))
    view = out[0][2].payload.order
    assert (view.status, view.fulfilments[0].invoice_id, [x.quantity_fulfilled for x in view.lines]) == (
        "partially_fulfilled", "inv_1", [10, 1])

    _, out = await world.handle(handlers.record_fulfilment, ask(fulfilment("f2", cli_1=14, cli_2=2)))
    assert [e[2:] for e in events(out)] == [("OrderFulfilled", "ord_1", 3), ("InvoiceIssued", "inv_2", 1)]
    second = out[1][2].payload.invoice
    assert (second.invoice_number, second.subtotal, second.tax) == ("ACME-INV-000002", 15_400 + 1_798, 2_310 + 270)
    assert inv.total + second.total == order.total
    for x in order.lines:  # each line's invoices add up to it exactly
        assert sum(y.total for i in (inv, second) for y in i.lines if y.line_id == x.line_id) == x.total

    got, _ = await world.handle(handlers.get_invoice, ask(GetInvoice(invoice_id="inv_1", customer_id=CUSTOMER)))
    assert got == inv
    listed, _ = await world.handle(handlers.list_invoices, ask(ListInvoices(customer_id=CUSTOMER, limit=1)))
    assert ([i.invoice_id for i in listed.invoices], listed.has_more) == (["inv_2"], True)
    after, _ = await world.handle(handlers.list_invoices, ask(ListInvoices(customer_id=CUSTOMER,
                                                                           starting_after="inv_2", order_id="ord_1")))
    assert [i.invoice_id for i in after.invoices] == ["inv_1"]
    for q in (GetInvoice(invoice_id="inv_1", customer_id="cus_other"), GetInvoice(invoice_id="inv_9")):
        with pytest.raises(Rejection) as missing:
            await world.handle(handlers.get_invoice, ask(q))
        assert missing.value.code is ErrorCode.RESOURCE_MISSING
    with pytest.raises(Rejection):  # another tenant's invoice is not there
        await world.handle(handlers.get_invoice, ask(GetInvoice(invoice_id="inv_1"), B))


async def test_the_same_fulfilment_again_changes_nothing_and_records_that_do_not_fit_are_refused():
    world = World()
    await confirmed(world)
    await world.handle(handlers.record_fulfilment, ask(fulfilment(cli_2=1)))
    _, out = await world.handle(handlers.record_fulfilment, ask(fulfilment(cli_2=1)))
    assert out == [] and world.store.statements == ["get_order_for_update"] and len(world.store.invoices) == 1
    assert await refused(world, handlers.record_fulfilment, fulfilment(cli_2=2)) is ErrorCode.RECORD_CONFLICT
    assert await refused(world, handlers.record_fulfilment, fulfilment("f2", cli_2=3)) is ErrorCode.OVER_FULFILMENT
    assert await refused(world, handlers.record_fulfilment, fulfilment("f2", cli_9=1)) is ErrorCode.LINE_UNKNOWN
    assert await refused(world, handlers.record_fulfilment, fulfilment("f2", "ord_9", cli_1=1)) is \
        ErrorCode.RESOURCE_MISSING
    assert await refused(world, handlers.record_fulfilment, fulfilment("f2", cli_1=1), B) is \
        ErrorCode.RESOURCE_MISSING  # another tenant's order


# ---- deliveries -------------------------------------------------------------------------------------------

async def test_a_cod_invoice_falls_due_on_delivery_and_the_order_is_delivered():
    world = World()
    await confirmed(world, terms="cod")
    _, out = await world.handle(handlers.record_fulfilment, ask(fulfilment(cli_1=24, cli_2=3)))
    assert out[1][2].payload.invoice.due_at is None
    delivered_at = SHIPPED + timedelta(hours=5)
    _, out = await world.handle(handlers.record_delivery, ask(DeliveryRecorded(order_id="ord_1",
                                                                              delivered_at=delivered_at)))
    assert events(out) == [("orders.events.v1", "ord_1", "OrderDelivered", "ord_1", 3),
                           ("invoices.events.v1", "inv_1", "InvoiceDueDateSet", "inv_1", 2)]
    assert out[1][2].payload.invoice.due_at == delivered_at
    assert world.store.invoices["inv_1"][1].view.due_at == delivered_at
    _, out = await world.handle(handlers.record_delivery, ask(DeliveryRecorded(order_id="ord_1",
                                                                              delivered_at=delivered_at)))
    assert out == []  # the same delivery again
    assert await refused(world, handlers.record_delivery, DeliveryRecorded(
        order_id="ord_1", delivered_at=delivered_at + timedelta(hours=1))) is ErrorCode.RECORD_CONFLICT


async def test_a_delivery_before_any_fulfilment_is_refused_and_a_net_invoice_keeps_its_due_date():
    world = World()
    await confirmed(world)
    assert await refused(world, handlers.record_delivery, DeliveryRecorded(order_id="ord_1", delivered_at=SHIPPED)) \
        is ErrorCode.NOT_FULFILLED
    await world.handle(handlers.record_fulfilment, ask(fulfilment(cli_1=1)))
    _, out = await world.handle(handlers.record_delivery, ask(DeliveryRecorded(order_id="ord_1", fulfilment_id="f1",
                                                                              delivered_at=SHIPPED)))
    assert events(out) == [("orders.events.v1", "ord_1", "FulfilmentDelivered", "ord_1", 3)]
    assert "invoices_of_order" not in world.store.statements  # net terms: no invoice to date


# ---- cancels ----------------------------------------------------------------------------------------------

async def test_the_shopper_cancels_a_confirmed_order_and_credit_is_told_to_release_it():
    world = World()
    await confirmed(world)
    reply, out = await world.handle(handlers.cancel_order, ask(CancelOrder(order_id="ord_1", customer_id=CUSTOMER,
                                                                           reason="wrong size")))
    assert (reply.status, reply.cancelled_by, reply.cancellation_reason) == ("cancelled", "customer", "wrong size")
    assert events(out) == [("orders.events.v1", "ord_1", "OrderCancelled", "ord_1", 2),
                           ("credit.commands.v1", PARENT, "ReleaseCredit", None, None)]
    release = out[1][2]
    assert (release.payload, release.reply_to) == (ReleaseCredit(reservation_id="res_1", bill_to_id=PARENT), None)
    again, out = await world.handle(handlers.cancel_order, ask(CancelOrder(order_id="ord_1", customer_id=CUSTOMER)))
    assert (again, out) == (reply, [])  # idempotent: the view again, nothing sent
    for cmd in (CancelOrder(order_id="ord_1", customer_id="cus_other"), CancelOrder(order_id="ord_9",
                                                                                    customer_id=CUSTOMER)):
        with pytest.raises(Rejection) as missing:
            await world.handle(handlers.cancel_order, ask(cmd))
        assert missing.value.code is ErrorCode.RESOURCE_MISSING
    assert await refused(world, handlers.record_fulfilment, fulfilment(cli_1=1)) is ErrorCode.ORDER_CANCELLED


async def test_the_shopper_may_not_cancel_after_a_fulfilment():
    world = World()
    await confirmed(world)
    await world.handle(handlers.record_fulfilment, ask(fulfilment(cli_1=1)))
    with pytest.raises(Rejection) as no:
        await world.handle(handlers.cancel_order, ask(CancelOrder(order_id="ord_1", customer_id=CUSTOMER)))
    assert (no.value.code, no.value.status) == (ErrorCode.ORDER_NOT_CANCELLABLE, "partially_fulfilled")


async def test_the_merchant_cancels_a_partly_shipped_order_voiding_its_open_invoices():
    world = World()
    await confirmed(world)
    await world.handle(handlers.record_fulfilment, ask(fulfilment(cli_1=1)))
    record = OrderCancellationRecorded(order_id="ord_1", reason="customer went away")
    _, out = await world.handle(handlers.record_cancellation, ask(record))
    assert events(out) == [("orders.events.v1", "ord_1", "OrderCancelled", "ord_1", 3),
                           ("invoices.events.v1", "inv_1", "InvoiceVoided", "inv_1", 2),
                           ("credit.commands.v1", PARENT, "ReleaseCredit", None, None)]
    inv = world.store.invoices["inv_1"][1].view
    assert (inv.status, inv.amount_due, inv.voided_at) == ("void", 0, NOW)
    _, out = await world.handle(handlers.record_cancellation, ask(record))
    assert out == []
    assert await refused(world, handlers.record_cancellation, OrderCancellationRecorded(
        order_id="ord_1", reason="another")) is ErrorCode.RECORD_CONFLICT


async def test_the_merchant_may_not_cancel_once_an_invoice_was_paid_anything():
    world = World()
    await confirmed(world)
    await world.handle(handlers.record_fulfilment, ask(fulfilment(cli_1=1)))
    await world.handle(handlers.record_payment, ask(payment(100)))
    assert await refused(world, handlers.record_cancellation, OrderCancellationRecorded(
        order_id="ord_1", reason="late")) is ErrorCode.ORDER_NOT_CANCELLABLE


# ---- payments ----------------------------------------------------------------------------------------------

async def test_payments_named_oldest_first_and_an_overpayment_used_by_the_next_invoice():
    world = World()
    await confirmed(world)
    # inv_1: 26 400 × 12/24 = 13 200 + 1 980 GCT = 15 180
    await world.handle(handlers.record_fulfilment, ask(fulfilment("f1", at=SHIPPED, cli_1=12)))
    await world.handle(handlers.record_fulfilment, ask(fulfilment("f2", at=SHIPPED + timedelta(days=1), cli_1=6)))
    # inv_2: 26 400 × 6/24 = 6 600 + 990
    _, out = await world.handle(handlers.record_payment, ask(payment(7_590, "pay_1", invoice_id="inv_2")))
    assert world.store.statements == ["get_payment", "invoices_for_payment", "add_payment", "save_invoices"]
    assert events(out) == [("invoices.events.v1", "inv_2", "PaymentApplied", "inv_2", 2),
                           ("invoices.events.v1", "inv_2", "InvoicePaid", "inv_2", 3)]
    assert out[0][2].payload.source == "payment"
    _, out = await world.handle(handlers.record_payment, ask(payment(20_000, "pay_2")))  # no invoice: inv_1 first
    assert events(out) == [("invoices.events.v1", "inv_1", "PaymentApplied", "inv_1", 2),
                           ("invoices.events.v1", "inv_1", "InvoicePaid", "inv_1", 3),
                           ("invoices.events.v1", PARENT, "PaymentUnapplied", "pay_2", 1)]
    assert out[2][2].payload.amount == 20_000 - 15_180
    # the next invoice takes the unapplied credit at once
    _, out = await world.handle(handlers.record_fulfilment, ask(fulfilment("f3", cli_1=6, cli_2=3)))
    # cli_1's rest: 26 400 − 13 200 − 6 600 = 6 600 and 3 960 − 1 980 − 990 = 990; cli_2: 2 697 + 405. 10 692 due,
    # 4 820 of it paid from pay_2
    assert [e[2:] for e in events(out)] == [("OrderFulfilled", "ord_1", 4), ("InvoiceIssued", "inv_3", 1),
                                            ("PaymentApplied", "inv_3", 2)]
    applied = out[2][2].payload
    assert (applied.payment_id, applied.amount, applied.source, applied.invoice.amount_due) == (
        "pay_2", 4_820, "unapplied", 10_692 - 4_820)
    assert world.store.payments[(A, "pay_2")].remaining == 0
    assert world.store.statements[-1] == "save_remaining"


async def test_the_same_payment_again_changes_nothing_and_wrong_ones_are_refused():
    world = World()
    await confirmed(world)
    await world.handle(handlers.record_fulfilment, ask(fulfilment(cli_1=1)))
    await world.handle(handlers.record_payment, ask(payment(100)))
    _, out = await world.handle(handlers.record_payment, ask(payment(100)))
    assert out == [] and world.store.statements == ["get_payment"]
    assert await refused(world, handlers.record_payment, payment(101)) is ErrorCode.RECORD_CONFLICT
    assert await refused(world, handlers.record_payment, payment(5, "pay_2", currency="USD")) is \
        ErrorCode.CURRENCY_MISMATCH
    assert await refused(world, handlers.record_payment, payment(5, "pay_3", invoice_id="inv_9")) is \
        ErrorCode.INVOICE_UNKNOWN
    assert await refused(world, handlers.record_payment, payment(5, "pay_4", invoice_id="inv_1"), B) is \
        ErrorCode.INVOICE_UNKNOWN  # another tenant's invoice


# ---- the overdue sweep ------------------------------------------------------------------------------------

async def test_the_sweep_marks_every_tenants_invoices_past_due_once_in_batches():
    world = World()
    for scope, n in ((A, 1), (B, 2)):
        await confirmed(world, scope, n=n)
        await world.handle(handlers.record_fulfilment, ask(fulfilment(order_id=f"ord_{n}", cli_1=1), scope))
    world.now = SHIPPED + timedelta(days=30)  # due exactly now: not yet past
    assert await handlers.mark_overdue(world.uow(None, Unscoped("test")), 10) == 0
    world.now += timedelta(seconds=1)
    sweeper = world.uow(None, Unscoped("test: the overdue sweep"))
    assert await handlers.mark_overdue(sweeper, 1) == 1
    [(topic, key, env)] = sweeper.outbox.envelopes
    assert (topic, env.type, env.aggregate_version, env.tenant_id, env.payload.invoice.overdue) == (
        topics.INVOICES_EVENTS.name, "InvoiceOverdue", 2, A.tenant_id, True)
    assert await handlers.mark_overdue(world.uow(None, Unscoped("test")), 10) == 1  # B's
    assert await handlers.mark_overdue(world.uow(None, Unscoped("test")), 10) == 0  # once
    assert {inv.view.overdue for _, inv in world.store.invoices.values()} == {True}
