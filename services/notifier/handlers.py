"""Notifier handlers: record each public event once (the order or invoice as it is after the change)."""

import logging

from libs.contracts.base import Message
from libs.contracts.invoices import InvoiceIssued, InvoiceOverdue, InvoicePaid, InvoiceVoided
from libs.contracts.orders import (OrderCancelled, OrderConfirmed, OrderDelivered, OrderFulfilled,
                                   OrderPartiallyFulfilled)

from .domain import PublicEvent
from .unit_of_work import NotifierUnitOfWork

log = logging.getLogger("harmon.notifier")

OrderEvent = OrderConfirmed | OrderPartiallyFulfilled | OrderFulfilled | OrderDelivered | OrderCancelled
InvoiceEvent = InvoiceIssued | InvoicePaid | InvoiceVoided | InvoiceOverdue


async def _record(evt: Message, aggregate_id: str, data: dict, uow: NotifierUnitOfWork) -> None:
    event = PublicEvent.of(evt.type, aggregate_id, uow.message.aggregate_version, data,
                           occurred_at=uow.message.occurred_at, received_at=uow.now)
    if await uow.events.record(event):
        log.info("recorded %s for %s", event.type, aggregate_id)


async def record_order_event(evt: OrderEvent, uow: NotifierUnitOfWork) -> None:
    await _record(evt, evt.order.order_id, evt.order.model_dump(mode="json"), uow)


async def record_invoice_event(evt: InvoiceEvent, uow: NotifierUnitOfWork) -> None:
    await _record(evt, evt.invoice.invoice_id, evt.invoice.model_dump(mode="json"), uow)


async def not_public(evt: Message, uow: NotifierUnitOfWork) -> None:
    """An event on a topic the notifier reads that subscribers are not shown: read and passed over (routed, so
    the dispatcher does not dead-letter it as an unhandled type)."""
    return None
