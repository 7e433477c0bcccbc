"""Invoices and payments, free of I/O (docs/architecture.md, "Order lifecycle and invoices").

A fulfilment issues one invoice for what it shipped (`invoice_lines`, `invoice_for`): each line's subtotal and tax
are the order line's in proportion (floored), and the invoice that ships the last of a line takes the remainder,
so a line's invoices add up exactly to the order line. An `Invoice` changes by one event per change (version +1,
InvoiceIssued is 1). A payment is allocated once (`allocate`): to the invoice it names, else to the account's open
invoices oldest due first; what is left is the account's unapplied credit, kept per payment (`Payment.remaining`)
and used by the next invoice issued (`apply_unapplied`, FIFO by received_at).
"""

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from libs.contracts import topics
from libs.contracts.base import Message, RecordRefused
from libs.contracts.erp import PaymentRecorded
from libs.contracts.errors import ErrorCode
from libs.contracts.invoices import (InvoiceDueDateSet, InvoiceIssued, InvoiceLine, InvoiceOverdue, InvoicePaid,
                                     InvoiceStatus, InvoiceView, InvoiceVoided, PaymentApplied, PaymentUnapplied)
from libs.contracts.orders import FulfilmentView, OrderView

from .domain import Send

if TYPE_CHECKING:
    from .lifecycle import Order

DEFAULT_CURRENCY = "JMD"  # an account with no invoice yet: the storefront's currency
I = InvoiceStatus


@dataclass(frozen=True)
class Invoiced:
    """What the order's invoices bill of one line so far (the remainder rule needs it)."""

    subtotal: int = 0
    tax: int = 0


def record_digest(record: Message) -> str:
    """A canonical digest of a record's content: the same record, however its times' offsets were written, gives
    the same digest (the same id with another digest is a conflict)."""
    def canonical(v):
        if isinstance(v, datetime):
            return v.astimezone(UTC).isoformat()
        if isinstance(v, dict):
            return {k: canonical(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [canonical(x) for x in v]
        return v
    text = json.dumps(canonical(record.model_dump(mode="python")), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def invoice_lines(view: OrderView, invoiced: Mapping[str, Invoiced], shipped: Mapping[str, int]) -> list[InvoiceLine]:
    """The invoice lines for `shipped` (line id → base units), the order being as it was before this shipment.
    Proportional and floored, except the shipment that completes a line: it takes what is left (never a
    re-rounding), so the line's invoices sum to the line exactly."""
    out = []
    for line in view.lines:
        q = shipped.get(line.line_id)
        if not q:
            continue
        before = invoiced.get(line.line_id, Invoiced())
        if line.quantity_fulfilled + q == line.base_quantity:
            subtotal, tax = line.subtotal - before.subtotal, line.tax - before.tax
        else:
            subtotal, tax = line.subtotal * q // line.base_quantity, line.tax * q // line.base_quantity
        out.append(InvoiceLine(line_id=line.line_id, sku=line.sku, base_uom=line.base_uom, quantity=q,
                               unit_price=line.unit_price, subtotal=subtotal, tax_category=line.tax_category,
                               tax_rate_bp=line.tax_rate_bp, tax=tax, total=subtotal + tax))
    return out


def invoice_number(prefix: str, n: int) -> str:
    """`<prefix>-INV-NNNNNN` (at least six digits)."""
    return f"{prefix}-INV-{n:06d}"


def due_at(terms: str, issued_at: datetime) -> datetime | None:
    """net_<d>: d days after issue; cod: unknown until the delivery is recorded."""
    return issued_at + timedelta(days=int(terms[4:])) if terms.startswith("net_") else None


@dataclass(frozen=True)
class Invoice:
    """One invoice as stored: its view and version; `reservation_id`: the order's (credit captures from it)."""

    view: InvoiceView
    version: int
    reservation_id: str | None = None

    @property
    def invoice_id(self) -> str:
        return self.view.invoice_id

    @property
    def open(self) -> bool:
        return self.view.status == I.OPEN

    def issued(self) -> Send:
        assert self.version == 1
        return self._event(InvoiceIssued(invoice=self.view, reservation_id=self.reservation_id), 1)

    def _event(self, payload: Message, version: int) -> Send:
        return Send(topics.INVOICES_EVENTS, self.invoice_id, payload, aggregate_id=self.invoice_id,
                    aggregate_version=version)

    def _changed(self, make, **update) -> tuple["Invoice", Send]:
        view = self.view.model_copy(update=update)
        inv = replace(self, view=view, version=self.version + 1)
        return inv, inv._event(make(view), inv.version)

    def apply(self, payment_id: str, amount: int, source: str, at: datetime) -> tuple["Invoice", list[Send]]:
        """`amount` (0 < amount ≤ amount_due) of a payment: PaymentApplied, and InvoicePaid when nothing is due."""
        v = self.view
        assert self.open and 0 < amount <= v.amount_due, (self.invoice_id, amount, v.amount_due)
        inv, applied = self._changed(
            lambda view: PaymentApplied(payment_id=payment_id, invoice_id=self.invoice_id, amount=amount,
                                        bill_to_id=v.bill_to_id, source=source, invoice=view),
            amount_paid=v.amount_paid + amount, amount_due=v.amount_due - amount)
        if inv.view.amount_due > 0:
            return inv, [applied]
        inv, paid = inv._changed(lambda view: InvoicePaid(invoice=view), status=str(I.PAID), paid_at=at, overdue=False)
        return inv, [applied, paid]

    def void(self, at: datetime) -> tuple["Invoice", Send] | None:
        """The order was cancelled: nothing is due any more (a paid or void invoice stays as it is)."""
        if not self.open:
            return None
        return self._changed(lambda view: InvoiceVoided(invoice=view), status=str(I.VOID), amount_due=0,
                             voided_at=at, overdue=False)

    def set_due(self, at: datetime) -> tuple["Invoice", Send] | None:
        """A cod invoice's delivery: due now. An invoice with a due date, or void, keeps it."""
        if self.view.due_at is not None or self.view.status == I.VOID:
            return None
        return self._changed(lambda view: InvoiceDueDateSet(invoice=view), due_at=at)

    def mark_overdue(self, now: datetime) -> tuple["Invoice", Send] | None:
        """Past due and unpaid: overdue, once."""
        v = self.view
        if not self.open or v.overdue or v.due_at is None or v.due_at >= now:
            return None
        return self._changed(lambda view: InvoiceOverdue(invoice=view), overdue=True)


def invoice_for(order: "Order", fulfilment: FulfilmentView, number: str) -> Invoice:
    """The invoice a fulfilment issues; `order` as it was before the fulfilment (what earlier invoices billed).
    issued_at = shipped_at; open, nothing paid."""
    o = order.view
    assert fulfilment.invoice_id is not None
    lines = invoice_lines(o, order.invoiced, {x.line_id: x.quantity for x in fulfilment.lines})
    subtotal, tax = sum(x.subtotal for x in lines), sum(x.tax for x in lines)
    view = InvoiceView(
        invoice_id=fulfilment.invoice_id, invoice_number=number, order_id=o.order_id, order_number=o.order_number,
        customer_id=o.customer_id, bill_to_id=o.bill_to_id, fulfilment_id=fulfilment.fulfilment_id,
        status=str(I.OPEN), terms=o.terms, currency=o.currency, subtotal=subtotal, tax=tax, total=subtotal + tax,
        amount_paid=0, amount_due=subtotal + tax, lines=lines, issued_at=fulfilment.shipped_at,
        due_at=due_at(o.terms, fulfilment.shipped_at))
    return Invoice(view, 1, o.reservation_id)


# ---- payments --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Payment:
    """A payment as stored: the record's content, its digest, and `remaining`: what is still unapplied."""

    payment_id: str
    bill_to_id: str
    amount: int
    currency: str
    received_at: datetime
    remaining: int
    digest: str
    invoice_id: str | None = None
    method: str = "other"
    reference: str | None = None


@dataclass(frozen=True)
class Allocation:
    """What a payment did: the payment as stored (with what it left unapplied), the invoices it changed (each at
    its last version) and the events, in order."""

    payment: Payment
    invoices: tuple[Invoice, ...]
    events: tuple[Send, ...]


def _oldest_due_first(inv: Invoice) -> tuple:
    v = inv.view
    return (v.due_at is None, v.due_at or v.issued_at, v.issued_at, v.invoice_id)


def account_currency(record: PaymentRecorded, invoices: Sequence[Invoice]) -> str:
    """The account's currency: the named invoice's, else its open invoices', else JMD."""
    named = [i for i in invoices if i.invoice_id == record.invoice_id]
    if named:
        return named[0].view.currency
    open_ = sorted((i for i in invoices if i.open), key=_oldest_due_first)
    return open_[0].view.currency if open_ else DEFAULT_CURRENCY


def allocate(record: PaymentRecorded, invoices: Sequence[Invoice], existing: Payment | None) -> Allocation | None:
    """Allocate a payment once. `invoices`: the named invoice when the record names one (if it is this account's),
    else the account's open invoices; `existing`: a payment stored with this id. None: this record was applied
    before."""
    digest = record_digest(record)
    if existing is not None:
        if existing.digest == digest:
            return None
        raise RecordRefused(ErrorCode.RECORD_CONFLICT, f"payment {record.payment_id} was recorded with other content")
    if record.invoice_id is not None:
        targets = [i for i in invoices if i.invoice_id == record.invoice_id and i.view.bill_to_id == record.customer_id]
        if not targets:
            raise RecordRefused(ErrorCode.INVOICE_UNKNOWN, f"{record.customer_id} has no invoice {record.invoice_id}")
    else:
        targets = sorted((i for i in invoices if i.open and i.view.bill_to_id == record.customer_id),
                         key=_oldest_due_first)
    currency = account_currency(record, targets)
    if record.currency != currency:
        raise RecordRefused(ErrorCode.CURRENCY_MISMATCH, f"payment in {record.currency}; the account is in {currency}")
    rest, changed, events = record.amount, [], []
    for inv in targets:
        if rest == 0:
            break
        amount = min(rest, inv.view.amount_due) if inv.open else 0
        if amount == 0:
            continue
        inv, sends = inv.apply(record.payment_id, amount, "payment", record.received_at)
        rest -= amount
        changed.append(inv)
        events += sends
    payment = Payment(record.payment_id, record.customer_id, record.amount, record.currency, record.received_at,
                      rest, digest, record.invoice_id, str(record.method), record.reference)
    if rest:
        events.append(Send(topics.INVOICES_EVENTS, record.customer_id, PaymentUnapplied(
            payment_id=record.payment_id, bill_to_id=record.customer_id, amount=rest, currency=record.currency),
            aggregate_id=record.payment_id, aggregate_version=1))
    return Allocation(payment, tuple(changed), tuple(events))


def apply_unapplied(invoice: Invoice, unapplied: Iterable[Payment]) -> tuple[Invoice, list[Payment], list[Send]]:
    """A new invoice takes the account's unapplied credit, oldest payment first (same currency only): returns the
    invoice, the payments it drew on (with what they have left) and the events (PaymentApplied with source
    `unapplied` per payment, InvoicePaid if it is paid)."""
    drawn, events = [], []
    for p in sorted(unapplied, key=lambda p: (p.received_at, p.payment_id)):
        due = invoice.view.amount_due
        if due == 0:
            break
        if p.remaining <= 0 or p.currency != invoice.view.currency:
            continue
        amount = min(due, p.remaining)
        invoice, sends = invoice.apply(p.payment_id, amount, "unapplied", invoice.view.issued_at)
        drawn.append(replace(p, remaining=p.remaining - amount))
        events += sends
    return invoice, drawn, events
