"""An order after checkout, free of I/O (docs/architecture.md, "Order lifecycle and invoices").

`Order` is the aggregate as loaded (its view, version, the prefix of its numbers, what its invoices cover per line
and a digest of each fulfilment record). Each method takes what happened — a fulfilment, a delivery, a cancel —
and returns the order after it with its one event (`aggregate_version` = the new version), or None when the same
record was applied before. A record that does not fit raises `RecordRefused`; a shopper's command that may not be
done raises `Rejection`. The handler stores and emits what it is given.

    confirmed ─fulfil(part)─▶ partially_fulfilled ─fulfil(rest)─▶ fulfilled ─deliver(all)─▶ delivered
    confirmed ─cancel (shopper or merchant)─▶ cancelled;  partially_fulfilled ─cancel (merchant, nothing paid)─▶ cancelled
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from libs.contracts import topics
from libs.contracts.base import Message, Rejection, RecordRefused
from libs.contracts.erp import DeliveryRecorded, FulfilmentRecorded, OrderCancellationRecorded
from libs.contracts.errors import ErrorCode
from libs.contracts.invoices import InvoiceLine
from libs.contracts.orders import (FulfilmentDelivered, FulfilmentLineView, FulfilmentView, OrderCancelled,
                                   OrderDelivered, OrderFulfilled, OrderLine, OrderPartiallyFulfilled, OrderStatus,
                                   OrderView, StatusTransition)

from .domain import Send
from .invoicing import Invoiced, invoice_lines, record_digest

DEFAULT_PREFIX = "ORD"
S = OrderStatus


def order_number(prefix: str | None, n: int) -> str:
    """`<prefix>-NNNNNN`: at least six digits, zero-padded (never truncated past a million)."""
    return f"{prefix or DEFAULT_PREFIX}-{n:06d}"


@dataclass(frozen=True)
class Change:
    """An order after one change, and the one event that says so. `fulfilment`: the fulfilment recorded (fulfil);
    `delivered`: the fulfilments delivered by this record (deliver); `invoice_lines`: what the fulfilment's invoice
    bills (fulfil)."""

    order: "Order"
    event: Send
    fulfilment: FulfilmentView | None = None
    delivered: tuple[str, ...] = ()
    invoice_lines: tuple[InvoiceLine, ...] = ()


@dataclass(frozen=True)
class Order:
    """The order aggregate as stored. `invoiced`: per line id, what its invoices bill so far; `digests`: per
    fulfilment id, the digest of the record that made it; `cancel_digest`: the merchant's cancellation record's."""

    view: OrderView
    version: int
    prefix: str = DEFAULT_PREFIX
    invoiced: Mapping[str, Invoiced] = field(default_factory=dict)
    digests: Mapping[str, str] = field(default_factory=dict)

    @property
    def status(self) -> OrderStatus:
        return OrderStatus(self.view.status)

    @property
    def order_id(self) -> str:
        return self.view.order_id

    def _changed(self, event_type: type[Message], *, view: OrderView, **more) -> tuple["Order", Send]:
        """The order at its next version and the event of the change (key and aggregate id: the order id)."""
        version = self.version + 1
        payload = event_type(order=view, **{k: v for k, v in more.items() if k == "fulfilment_id"})
        return replace(self, view=view, version=version), Send(
            topics.ORDERS_EVENTS, self.order_id, payload, aggregate_id=self.order_id, aggregate_version=version)

    def _transition(self, status: OrderStatus, at: datetime) -> list[StatusTransition]:
        ts = list(self.view.status_transitions)
        if status != self.status:
            ts.append(StatusTransition(status=status, at=at))
        return ts

    # -- fulfilment ----------------------------------------------------------------------------------------

    def fulfil(self, record: FulfilmentRecorded, invoice_id: str) -> Change | None:
        """Ship `record.lines` (base units); `invoice_id`: the id of the invoice it issues. None: this record was
        applied before."""
        digest = record_digest(record)
        known = self.digests.get(record.fulfilment_id)
        if known is not None:
            if known == digest:
                return None
            raise RecordRefused(ErrorCode.RECORD_CONFLICT, f"fulfilment {record.fulfilment_id} was recorded with "
                                "other content")
        if self.status is S.CANCELLED:
            raise RecordRefused(ErrorCode.ORDER_CANCELLED, f"order {self.order_id} is cancelled")
        shipped = shipped_quantities(self.view, record)
        billed = invoice_lines(self.view, self.invoiced, shipped)
        by_line = {x.line_id: x for x in billed}
        lines = [x.model_copy(update={"quantity_fulfilled": x.quantity_fulfilled + shipped[x.line_id]})
                 if x.line_id in shipped else x for x in self.view.lines]
        invoiced = dict(self.invoiced)
        for line_id, b in by_line.items():
            before = invoiced.get(line_id, Invoiced())
            invoiced[line_id] = Invoiced(before.subtotal + b.subtotal, before.tax + b.tax)
        complete = all(x.quantity_fulfilled == x.base_quantity for x in lines)
        status = S.FULFILLED if complete else S.PARTIALLY_FULFILLED
        fulfilment = FulfilmentView(
            fulfilment_id=record.fulfilment_id, shipped_at=record.shipped_at, carrier=record.carrier,
            tracking_number=record.tracking_number, invoice_id=invoice_id,
            lines=[FulfilmentLineView(line_id=line_id, quantity=q) for line_id, q in shipped.items()])
        view = self.view.model_copy(update=dict(
            status=str(status), lines=lines, fulfilments=[*self.view.fulfilments, fulfilment],
            status_transitions=self._transition(status, record.shipped_at)))
        order, event = replace(self, invoiced=invoiced, digests={**self.digests, record.fulfilment_id: digest}
                               )._changed(OrderFulfilled if complete else OrderPartiallyFulfilled, view=view,
                                          fulfilment_id=record.fulfilment_id)
        return Change(order, event, fulfilment=fulfilment, invoice_lines=tuple(billed))

    # -- delivery ------------------------------------------------------------------------------------------

    def deliver(self, record: DeliveryRecorded) -> Change | None:
        """One fulfilment delivered, or (no fulfilment_id) every one not delivered yet. None: already so."""
        if self.status is S.CANCELLED:
            raise RecordRefused(ErrorCode.ORDER_CANCELLED, f"order {self.order_id} is cancelled")
        fulfilments = list(self.view.fulfilments)
        if record.fulfilment_id is not None:
            targets = [i for i, f in enumerate(fulfilments) if f.fulfilment_id == record.fulfilment_id]
            if not targets:
                raise RecordRefused(ErrorCode.NOT_FULFILLED, f"order {self.order_id} has no fulfilment "
                                    f"{record.fulfilment_id}")
            f = fulfilments[targets[0]]
            if f.delivered_at is not None:
                if f.delivered_at == record.delivered_at:
                    return None
                raise RecordRefused(ErrorCode.RECORD_CONFLICT, f"fulfilment {f.fulfilment_id} was delivered at "
                                    f"{f.delivered_at.isoformat()}")
        else:
            if not fulfilments:
                raise RecordRefused(ErrorCode.NOT_FULFILLED, f"order {self.order_id} has no fulfilment to deliver")
            targets = [i for i, f in enumerate(fulfilments) if f.delivered_at is None]
            if not targets:
                if all(f.delivered_at == record.delivered_at for f in fulfilments):
                    return None  # the same "all delivered" again
                raise RecordRefused(ErrorCode.RECORD_CONFLICT, f"every fulfilment of {self.order_id} was "
                                    "delivered at another time")
        for i in targets:
            fulfilments[i] = fulfilments[i].model_copy(update={"delivered_at": record.delivered_at})
        delivered = tuple(fulfilments[i].fulfilment_id for i in targets)
        done = self.status is S.FULFILLED and all(f.delivered_at is not None for f in fulfilments)
        status = S.DELIVERED if done else self.status
        view = self.view.model_copy(update=dict(status=str(status), fulfilments=fulfilments,
                                                status_transitions=self._transition(status, record.delivered_at)))
        if done:
            order, event = self._changed(OrderDelivered, view=view)
        else:  # the event names one fulfilment: the latest shipped of those this record delivered
            order, event = self._changed(FulfilmentDelivered, view=view, fulfilment_id=delivered[-1])
        return Change(order, event, delivered=delivered)

    # -- cancel --------------------------------------------------------------------------------------------

    def cancel_by_customer(self, now: datetime, reason: str | None = None) -> Change | None:
        """The shopper's cancel: only while nothing was fulfilled. None: already cancelled (answer the view)."""
        if self.status is S.CANCELLED:
            return None
        if self.status is not S.CONFIRMED:
            raise Rejection(ErrorCode.ORDER_NOT_CANCELLABLE, f"order {self.order_id} is {self.status.value}; only a "
                            "confirmed order with nothing fulfilled may be cancelled", "id", status=self.status.value)
        return self._cancel("customer", reason, now)

    def cancel_by_merchant(self, record: OrderCancellationRecorded, now: datetime, *, any_paid: bool) -> Change | None:
        """The merchant's cancel: in confirmed or partially_fulfilled while no invoice of the order has been paid
        anything (`any_paid`). None: already cancelled with this reason."""
        if self.status is S.CANCELLED:
            if self.view.cancelled_by == "merchant" and self.view.cancellation_reason == record.reason:
                return None
            raise RecordRefused(ErrorCode.RECORD_CONFLICT, f"order {self.order_id} was cancelled "
                                f"(by the {self.view.cancelled_by}) for another reason")
        if self.status not in (S.CONFIRMED, S.PARTIALLY_FULFILLED):
            raise RecordRefused(ErrorCode.ORDER_NOT_CANCELLABLE, f"order {self.order_id} is {self.status.value}")
        if any_paid:
            raise RecordRefused(ErrorCode.ORDER_NOT_CANCELLABLE, f"an invoice of order {self.order_id} has been "
                                "paid")
        return self._cancel("merchant", record.reason, now)

    def _cancel(self, by: str, reason: str | None, now: datetime) -> Change:
        view = self.view.model_copy(update=dict(status=str(S.CANCELLED), cancelled_by=by, cancellation_reason=reason,
                                                status_transitions=self._transition(S.CANCELLED, now)))
        order, event = self._changed(OrderCancelled, view=view)
        return Change(order, event)


def shipped_quantities(view: OrderView, record: FulfilmentRecorded) -> dict[str, int]:
    """Base units shipped per line id (a line named twice counts twice), in the order's line order; refuses an
    unknown line or more than ordered, counting what earlier fulfilments shipped."""
    lines = {x.line_id: x for x in view.lines}
    asked: dict[str, int] = {}
    for x in record.lines:
        if x.line_id not in lines:
            raise RecordRefused(ErrorCode.LINE_UNKNOWN, f"order {view.order_id} has no line {x.line_id}")
        asked[x.line_id] = asked.get(x.line_id, 0) + x.quantity
    for line_id, q in asked.items():
        line: OrderLine = lines[line_id]
        if line.quantity_fulfilled + q > line.base_quantity:
            raise RecordRefused(ErrorCode.OVER_FULFILMENT, f"line {line_id}: {q} more would make "
                                f"{line.quantity_fulfilled + q} shipped of {line.base_quantity} ordered")
    return {x.line_id: asked[x.line_id] for x in view.lines if x.line_id in asked}
