"""Invoices and payments, pure (services/orders/invoicing.py): the cents of each invoice worked by hand, the
remainder rule across two and three partial fulfilments (1/3 splits included), due dates by terms, each change
one event at the next version, allocation oldest due first, unapplied credit, and every refusal."""

from datetime import UTC, datetime, timedelta

import pytest

from libs.contracts.base import RecordRefused
from libs.contracts.erp import FulfilmentRecorded, PaymentRecorded
from libs.contracts.errors import ErrorCode
from libs.contracts.invoices import (InvoiceDueDateSet, InvoiceIssued, InvoiceOverdue, InvoicePaid, InvoiceVoided,
                                     PaymentApplied, PaymentUnapplied)
from libs.contracts.orders import OrderLine, OrderView, StatusTransition
from services.orders.invoicing import (Invoice, Payment, allocate, apply_unapplied, invoice_for, invoice_number,
                                       record_digest)
from services.orders.lifecycle import Order

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BILL_TO = "cus_parent"


def line(line_id: str, base: int, subtotal: int, tax: int, unit_price: int = 0) -> OrderLine:
    return OrderLine(line_id=line_id, sku=f"SKU{line_id[-1]}", order_uom="EA", order_quantity=base, factor=1,
                     base_uom="EA", base_quantity=base, unit_price=unit_price or subtotal // base,
                     price_source="list", subtotal=subtotal, tax_category="standard", tax_rate_bp=1500, tax=tax,
                     total=subtotal + tax)


def order(lines: list[OrderLine], terms: str = "net_30") -> Order:
    view = OrderView(order_id="ord_1", cart_id="cart_1", customer_id="cus_buyer", bill_to_id=BILL_TO,
                     status="confirmed", terms=terms, currency="JMD", subtotal=sum(x.subtotal for x in lines),
                     tax=sum(x.tax for x in lines), total=sum(x.total for x in lines), notes=None, po_number=None,
                     lines=lines, created_at=T0, order_number="ACME-000042", reservation_id="res_1",
                     status_transitions=[StatusTransition(status="confirmed", at=T0)])
    return Order(view, 1, "ACME")


def shipment(fid: str, at: datetime, **quantities: int) -> FulfilmentRecorded:
    return FulfilmentRecorded(fulfilment_id=fid, order_id="ord_1", shipped_at=at,
                              lines=[{"line_id": k, "quantity": q} for k, q in quantities.items()])


def ship(o: Order, fid: str, at: datetime, n: int = 1, **quantities: int) -> tuple[Order, Invoice]:
    """Fulfil, then issue the fulfilment's invoice numbered n, as the handler does."""
    change = o.fulfil(shipment(fid, at, **quantities), f"inv_{n}")
    return change.order, invoice_for(o, change.fulfilment, invoice_number(o.prefix, n))


def cents(inv: Invoice) -> list[tuple[str, int, int, int, int]]:
    return [(x.line_id, x.quantity, x.subtotal, x.tax, x.total) for x in inv.view.lines]


# ---- the remainder rule ---------------------------------------------------------------------------------

def test_two_partial_fulfilments_the_second_takes_the_remainder():
    # cli_1: 24 units, 26 400 + 3 960 GCT; cli_2: 3 units, 2 697 + 405
    o = order([line("cli_1", 24, 26_400, 3_960), line("cli_2", 3, 2_697, 405)])
    o, first = ship(o, "f1", T0, 1, cli_1=10, cli_2=1)
    # 26 400 × 10/24 = 11 000; 3 960 × 10/24 = 1 650; 2 697 × 1/3 = 899; 405 × 1/3 = 135
    assert cents(first) == [("cli_1", 10, 11_000, 1_650, 12_650), ("cli_2", 1, 899, 135, 1_034)]
    assert (first.view.subtotal, first.view.tax, first.view.total) == (11_899, 1_785, 13_684)
    o, second = ship(o, "f2", T0 + timedelta(days=1), 2, cli_1=14, cli_2=2)
    # the rest of each line: 26 400 − 11 000, 3 960 − 1 650, 2 697 − 899, 405 − 135
    assert cents(second) == [("cli_1", 14, 15_400, 2_310, 17_710), ("cli_2", 2, 1_798, 270, 2_068)]
    assert first.view.total + second.view.total == o.view.total == 33_462


def test_thirds_floor_twice_and_the_last_takes_what_rounding_left():
    # 1 000 + 155 GCT over 3 units: 333.33… + 51.66… each
    o = order([line("cli_1", 3, 1_000, 155)])
    o, a = ship(o, "f1", T0, 1, cli_1=1)
    o, b = ship(o, "f2", T0, 2, cli_1=1)
    o, c = ship(o, "f3", T0, 3, cli_1=1)
    assert [cents(i) for i in (a, b, c)] == [[("cli_1", 1, 333, 51, 384)], [("cli_1", 1, 333, 51, 384)],
                                            [("cli_1", 1, 334, 53, 387)]]
    assert sum(i.view.subtotal for i in (a, b, c)) == 1_000 and sum(i.view.tax for i in (a, b, c)) == 155
    assert o.invoiced["cli_1"].subtotal == 1_000 and o.invoiced["cli_1"].tax == 155


def test_a_line_completed_in_the_second_of_three_shipments_is_not_billed_again():
    o = order([line("cli_1", 3, 1_000, 155), line("cli_2", 7, 7_001, 1_050)])
    o, a = ship(o, "f1", T0, 1, cli_1=2, cli_2=3)
    o, b = ship(o, "f2", T0, 2, cli_1=1, cli_2=3)
    o, c = ship(o, "f3", T0, 3, cli_2=1)
    # cli_1: 2 000/3 = 666, 310/3 = 103; then 334, 52. cli_2: 21 003/7 = 3 000, 3 150/7 = 450 twice; then 1 001, 150
    assert cents(a) == [("cli_1", 2, 666, 103, 769), ("cli_2", 3, 3_000, 450, 3_450)]
    assert cents(b) == [("cli_1", 1, 334, 52, 386), ("cli_2", 3, 3_000, 450, 3_450)]
    assert cents(c) == [("cli_2", 1, 1_001, 150, 1_151)]
    assert sum(i.view.total for i in (a, b, c)) == o.view.total


def test_an_invoice_carries_the_order_and_its_number_and_is_due_by_its_terms():
    o = order([line("cli_1", 2, 2_000, 300)], terms="net_30")
    _, inv = ship(o, "f1", T0, 7, cli_1=1)
    v = inv.view
    assert (v.invoice_id, v.invoice_number, v.order_id, v.order_number, v.customer_id, v.bill_to_id) == (
        "inv_7", "ACME-INV-000007", "ord_1", "ACME-000042", "cus_buyer", BILL_TO)
    assert (v.status, v.amount_paid, v.amount_due, v.issued_at, v.due_at, v.fulfilment_id) == (
        "open", 0, 1_150, T0, T0 + timedelta(days=30), "f1")
    assert (inv.version, inv.reservation_id) == (1, "res_1")
    issued = inv.issued()
    assert (issued.topic.name, issued.key, issued.aggregate_id, issued.aggregate_version) == (
        "invoices.events.v1", "inv_7", "inv_7", 1)
    assert issued.payload == InvoiceIssued(invoice=v, reservation_id="res_1")
    _, cod = ship(order([line("cli_1", 2, 2_000, 300)], terms="cod"), "f1", T0, 1, cli_1=1)
    assert cod.view.due_at is None
    assert invoice_number("ORD", 1_234_567) == "ORD-INV-1234567"  # never truncated


# ---- changes of an invoice --------------------------------------------------------------------------------

def an_invoice(total_lines=None, terms="net_30", n=1, at=T0) -> Invoice:
    o = order(total_lines or [line("cli_1", 2, 2_000, 300)], terms=terms)
    return ship(o, f"f{n}", at, n, cli_1=2)[1]  # 2 300 due


def test_each_change_is_one_event_at_the_next_version():
    inv = an_invoice(terms="cod")
    dated, due = inv.set_due(T0 + timedelta(days=2))
    assert (dated.version, due.aggregate_version, type(due.payload)) == (2, 2, InvoiceDueDateSet)
    assert dated.set_due(T0 + timedelta(days=9)) is None  # it has its due date
    late, overdue = dated.mark_overdue(T0 + timedelta(days=3))
    assert (late.view.overdue, late.version, type(overdue.payload)) == (True, 3, InvoiceOverdue)
    assert late.mark_overdue(T0 + timedelta(days=4)) is None  # once
    assert dated.mark_overdue(T0 + timedelta(days=2)) is None  # not past due yet
    part, [applied] = late.apply("pay_1", 300, "payment", T0)
    assert (part.view.amount_paid, part.view.amount_due, part.version) == (300, 2_000, 4)
    assert applied.payload == PaymentApplied(payment_id="pay_1", invoice_id="inv_1", amount=300, bill_to_id=BILL_TO,
                                             source="payment", invoice=part.view)
    paid, [applied, done] = part.apply("pay_2", 2_000, "payment", T0 + timedelta(days=5))
    assert (paid.view.status, paid.view.amount_due, paid.view.paid_at, paid.view.overdue, paid.version) == (
        "paid", 0, T0 + timedelta(days=5), False, 6)
    assert [(type(e.payload), e.aggregate_version) for e in (applied, done)] == [(PaymentApplied, 5),
                                                                                 (InvoicePaid, 6)]
    assert paid.void(T0) is None and paid.mark_overdue(T0 + timedelta(days=99)) is None
    void, voided = part.void(T0 + timedelta(days=1))
    assert (void.view.status, void.view.amount_due, void.view.voided_at, voided.aggregate_version) == (
        "void", 0, T0 + timedelta(days=1), 5)
    assert type(voided.payload) is InvoiceVoided and void.set_due(T0) is None


# ---- payments ---------------------------------------------------------------------------------------------

def pay(amount: int, pid: str = "pay_1", invoice_id: str | None = None, currency: str = "JMD",
        at: datetime = T0 + timedelta(days=10), customer_id: str = BILL_TO) -> PaymentRecorded:
    return PaymentRecorded(payment_id=pid, customer_id=customer_id, amount=amount, currency=currency,
                           invoice_id=invoice_id, received_at=at, method="bank_transfer")


def test_a_payment_naming_an_invoice_pays_it_and_the_rest_is_unapplied():
    inv = an_invoice()
    a = allocate(pay(3_000, invoice_id="inv_1"), [inv], None)
    [paid] = a.invoices
    assert (paid.view.status, paid.view.amount_paid, paid.view.paid_at) == ("paid", 2_300, T0 + timedelta(days=10))
    assert [type(e.payload) for e in a.events] == [PaymentApplied, InvoicePaid, PaymentUnapplied]
    unapplied = a.events[-1]
    assert (unapplied.key, unapplied.aggregate_id, unapplied.aggregate_version, unapplied.payload) == (
        BILL_TO, "pay_1", 1, PaymentUnapplied(payment_id="pay_1", bill_to_id=BILL_TO, amount=700, currency="JMD"))
    assert (a.payment.remaining, a.payment.amount, a.payment.digest) == (700, 3_000, record_digest(
        pay(3_000, invoice_id="inv_1")))


def test_a_payment_without_an_invoice_pays_the_oldest_due_first():
    lines = [line("cli_1", 2, 2_000, 300)]
    newer = an_invoice(lines, n=1, at=T0 + timedelta(days=5))  # due T0 + 35
    older = an_invoice(lines, n=2, at=T0)  # due T0 + 30
    cod = an_invoice(lines, terms="cod", n=3, at=T0 - timedelta(days=9))  # no due date: last
    a = allocate(pay(3_000), [cod, newer, older], None)
    assert [(i.invoice_id, i.view.amount_paid, i.view.status) for i in a.invoices] == [
        ("inv_2", 2_300, "paid"), ("inv_1", 700, "open")]
    assert [type(e.payload) for e in a.events] == [PaymentApplied, InvoicePaid, PaymentApplied]
    assert a.payment.remaining == 0
    everything = allocate(pay(10_000, "pay_2"), [cod, newer, older], None)
    assert [i.invoice_id for i in everything.invoices] == ["inv_2", "inv_1", "inv_3"]
    assert everything.payment.remaining == 10_000 - 3 * 2_300


def test_a_paid_or_void_named_invoice_leaves_the_whole_payment_unapplied():
    paid, _ = an_invoice().apply("pay_0", 2_300, "payment", T0)
    a = allocate(pay(500, invoice_id="inv_1"), [paid], None)
    assert a.invoices == () and a.payment.remaining == 500
    assert [type(e.payload) for e in a.events] == [PaymentUnapplied]


def test_the_same_payment_again_changes_nothing_and_other_content_is_a_conflict():
    stored = allocate(pay(1_000), [an_invoice()], None).payment
    assert allocate(pay(1_000), [], stored) is None
    same_instant = pay(1_000, at=(T0 + timedelta(days=10)).astimezone(__import__("zoneinfo").ZoneInfo(
        "America/Jamaica")))
    assert allocate(same_instant, [], stored) is None  # the same time, written with another offset
    with pytest.raises(RecordRefused) as conflict:
        allocate(pay(1_001), [], stored)
    assert conflict.value.code is ErrorCode.RECORD_CONFLICT


def test_refusals_unknown_invoice_and_currency_mismatch():
    inv = an_invoice()
    for record, invoices in ((pay(100, invoice_id="inv_9"), [inv]),  # not there
                             (pay(100, invoice_id="inv_1", customer_id="cus_other"), [inv])):  # another account's
        with pytest.raises(RecordRefused) as unknown:
            allocate(record, invoices, None)
        assert unknown.value.code is ErrorCode.INVOICE_UNKNOWN
    for record, invoices in ((pay(100, invoice_id="inv_1", currency="USD"), [inv]),  # the named invoice's
                             (pay(100, currency="USD"), [inv]),  # the open invoices'
                             (pay(100, currency="USD"), [])):  # none: JMD
        with pytest.raises(RecordRefused) as mismatch:
            allocate(record, invoices, None)
        assert mismatch.value.code is ErrorCode.CURRENCY_MISMATCH


def test_a_new_invoice_takes_unapplied_credit_oldest_payment_first():
    inv = an_invoice()  # 2 300 due
    older = Payment("pay_a", BILL_TO, 5_000, "JMD", T0 - timedelta(days=2), 1_000, "d1")
    newer = Payment("pay_b", BILL_TO, 5_000, "JMD", T0 - timedelta(days=1), 4_000, "d2")
    usd = Payment("pay_u", BILL_TO, 5_000, "USD", T0 - timedelta(days=3), 5_000, "d3")
    after, drawn, events = apply_unapplied(inv, [newer, usd, older])
    assert [(p.payment_id, p.remaining) for p in drawn] == [("pay_a", 0), ("pay_b", 2_700)]
    assert (after.view.status, after.view.amount_paid, after.view.paid_at, after.version) == ("paid", 2_300, T0, 4)
    assert [(type(e.payload), e.payload.payment_id if hasattr(e.payload, "payment_id") else None,
             getattr(e.payload, "source", None), e.aggregate_version) for e in events] == [
        (PaymentApplied, "pay_a", "unapplied", 2), (PaymentApplied, "pay_b", "unapplied", 3), (InvoicePaid, None, None, 4)]
    untouched, none, no_events = apply_unapplied(inv, [usd])
    assert (untouched, none, no_events) == (inv, [], [])
