"""Notifier handlers: record each public event once."""

import logging

from libs.contracts.orders import OrderConfirmed

from .domain import PublicEvent
from .unit_of_work import NotifierUnitOfWork

log = logging.getLogger("harmon.notifier")


async def record_order_confirmed(evt: OrderConfirmed, uow: NotifierUnitOfWork) -> None:
    event = PublicEvent.of(evt.type, evt.order.order_id, uow.message.aggregate_version,
                           evt.order.model_dump(mode="json"), occurred_at=uow.message.occurred_at, received_at=uow.now)
    if await uow.events.record(event):
        log.info("recorded order.confirmed for %s", evt.order.order_id)
