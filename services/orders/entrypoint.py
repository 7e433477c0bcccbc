"""Subscriptions and background jobs of the orders service."""

import asyncio
import logging

from libs.contracts import cart as c
from libs.contracts import credit as cr
from libs.contracts import orders as o
from libs.contracts import pricing as p
from libs.contracts import topics
from libs.contracts.base import Failure
from libs.contracts.erp import CustomerUpsert
from libs.runtime.failures import FailureClass, classify
from libs.runtime.messaging import ServiceContext, subscribe

from . import handlers

log = logging.getLogger("harmon.orders")


def register(ctx: ServiceContext) -> None:
    subscribe(ctx, topics.ORDERS_COMMANDS, {o.PlaceOrder: handlers.place_order, o.GetOrder: handlers.get_order,
                                            o.ListOrders: handlers.list_orders})
    saga_replies = (c.CartFrozen, c.CartCompleted, c.CartReleased, p.LinesPriced, cr.CreditReserved,
                    cr.CreditRejected, cr.CreditReleased, Failure)
    subscribe(ctx, topics.ORDERS_REPLIES, {t: handlers.advance_checkout for t in saga_replies})
    subscribe(ctx, topics.ERP_CUSTOMERS, {CustomerUpsert: handlers.upsert_customer})


async def watch_deadlines(ctx: ServiceContext) -> None:
    """Resume unfinished sagas once at start, then expire overdue ones, for as long as the service runs."""
    while True:
        try:
            await handlers.resume_checkouts(ctx)
            break
        except Exception as e:
            log.log(logging.WARNING if classify(e) is FailureClass.DOWN else logging.ERROR,
                    "could not resume unfinished checkouts (%s: %s); retrying", type(e).__name__, e)
            await asyncio.sleep(1.0)
    failing = False
    while True:
        await asyncio.sleep(ctx.settings.sweep_interval_s)
        try:
            await handlers.expire_overdue(ctx)
            if failing:
                log.warning("deadline sweep works again")
            failing = False
        except Exception as e:
            if not failing:  # once per outage, not four times a second
                log.log(logging.WARNING if classify(e) is FailureClass.DOWN else logging.ERROR,
                        "deadline sweep failed (%s: %s); retrying until it works", type(e).__name__, e)
            failing = True
