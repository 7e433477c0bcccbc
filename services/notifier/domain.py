"""Notifier rules, free of I/O: what an internal event is called on the public API, and the event subscribers see."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from libs.contracts.ids import EVENT, new_id

# Internal event type → the public name subscribers see (docs/api.md, "Events"). The others on these topics
# (FulfilmentDelivered, InvoiceDueDateSet, PaymentApplied, PaymentUnapplied) are for the ERP and credit only.
PUBLIC_NAMES = {
    "OrderConfirmed": "order.confirmed",
    "OrderPartiallyFulfilled": "order.partially_fulfilled",
    "OrderFulfilled": "order.fulfilled",
    "OrderDelivered": "order.delivered",
    "OrderCancelled": "order.cancelled",
    "InvoiceIssued": "invoice.issued",
    "InvoicePaid": "invoice.paid",
    "InvoiceVoided": "invoice.voided",
    "InvoiceOverdue": "invoice.overdue",
}


def public_event_type(message_type: str) -> str | None:
    """`order.confirmed` for OrderConfirmed; None for events subscribers are not shown."""
    return PUBLIC_NAMES.get(message_type)


@dataclass(frozen=True)
class PublicEvent:
    """An event as subscribers will see it (`evt_…`), kept for /v1/events and webhook deliveries; one per
    (aggregate, version, type), so a redelivered or re-sent internal event is recorded once."""

    id: str
    type: str
    aggregate_id: str
    aggregate_version: int
    data: Mapping[str, Any]
    occurred_at: datetime
    received_at: datetime

    @classmethod
    def of(cls, message_type: str, aggregate_id: str, aggregate_version: int | None, data: Mapping[str, Any],
           occurred_at: datetime, received_at: datetime) -> "PublicEvent":
        """The public event for an internal one; a type subscribers are not shown is a bug of the caller."""
        public = public_event_type(message_type)
        if public is None:
            raise ValueError(f"{message_type} is not a public event")
        return cls(new_id(EVENT), public, aggregate_id, aggregate_version or 1, data, occurred_at, received_at)
