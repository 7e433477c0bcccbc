"""Notifier handlers: record each public event once."""

import logging
from datetime import UTC, datetime

from libs.contracts.envelope import Envelope
from libs.contracts.ids import EVENT, new_id
from libs.contracts.orders import OrderConfirmed
from libs.runtime.messaging import ServiceContext

from .domain import public_event_type
from .repository import EventRepository

log = logging.getLogger("harmon.notifier")


async def record_order_confirmed(evt: OrderConfirmed, env: Envelope, ctx: ServiceContext) -> None:
    async with ctx.uow(env) as uow:
        await uow.claim()
        stored = await EventRepository(uow.session, env.tenant_id, env.livemode).record(
            id=new_id(EVENT), type=public_event_type(evt.type), aggregate_id=evt.order.order_id,
            aggregate_version=env.aggregate_version or 1, data=evt.order.model_dump(mode="json"),
            occurred_at=env.occurred_at, received_at=datetime.now(UTC),
        )
        await uow.commit()
    if stored:
        log.info("recorded order.confirmed for %s", evt.order.order_id)
