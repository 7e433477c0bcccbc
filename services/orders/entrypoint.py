"""Subscriptions and background jobs of the orders service."""

import asyncio
import logging

from libs.contracts import cart as c
from libs.contracts import credit as cr
from libs.contracts import orders as o
from libs.contracts import pricing as p
from libs.contracts import topics
from libs.contracts.base import Failure
from libs.contracts import invoices as iv
from libs.contracts.erp import (CustomerUpsert, DeliveryRecorded, FulfilmentRecorded, OrderCancellationRecorded,
                                PaymentRecorded)
from libs.runtime.context import ServiceContext, subscribe
from libs.runtime.database import Unscoped
from libs.runtime.failures import FailureClass, classify
from libs.runtime.jobs import run_unscoped

from . import handlers

log = logging.getLogger("harmon.orders")

# Every reply the saga may get on orders.replies.v1; the ones it does not await (acknowledgements, a reply to
# the three-step saga of earlier versions) change nothing.
SAGA_REPLIES = (p.CheckoutPriced, cr.CreditReserved, cr.CreditRejected, Failure,
                c.CartFrozen, c.CartCompleted, c.CartReleased, cr.CreditReleased, p.LinesPriced)

SWEEP = Unscoped("sweeper: overdue checkouts of every tenant and mode")
RESUME = Unscoped("restart: unfinished checkouts of every tenant and mode")
OVERDUE = Unscoped("overdue sweep: open invoices past due of every tenant and mode")

IN_FLIGHT_EVERY_S = 5.0  # the sagas-in-flight gauge: one count on the active-checkouts index this often

def register(ctx: ServiceContext) -> None:
    subscribe(ctx, topics.ORDERS_COMMANDS, {o.PlaceOrder: handlers.place_order, o.CancelOrder: handlers.cancel_order},
              queries={o.GetOrder: handlers.get_order, o.ListOrders: handlers.list_orders,
                       iv.GetInvoice: handlers.get_invoice, iv.ListInvoices: handlers.list_invoices})
    subscribe(ctx, topics.ORDERS_REPLIES, {t: handlers.advance_checkout for t in SAGA_REPLIES})
    subscribe(ctx, topics.ERP_CUSTOMERS, {CustomerUpsert: handlers.upsert_customer})
    subscribe(ctx, topics.ERP_FULFILMENTS, {FulfilmentRecorded: handlers.record_fulfilment})
    subscribe(ctx, topics.ERP_DELIVERIES, {DeliveryRecorded: handlers.record_delivery})
    subscribe(ctx, topics.ERP_ORDER_CANCELLATIONS, {OrderCancellationRecorded: handlers.record_cancellation})
    subscribe(ctx, topics.ERP_PAYMENTS, {PaymentRecorded: handlers.record_payment})


async def expire_overdue(ctx: ServiceContext, batch: int = 100) -> int:
    """Every saga past its deadline, a batch per transaction."""
    total = 0
    while True:
        found = await run_unscoped(ctx, SWEEP, lambda uow: handlers.expire_overdue(uow, batch))
        total += found
        if found < batch:
            return total


async def count_in_flight(ctx: ServiceContext) -> int:
    """Sagas in flight, for the gauge (libs/runtime/metrics.py): the active checkouts' partial index answers it."""
    async with ctx.db.transaction(SWEEP) as tx:
        return await tx.conn.fetchval("SELECT count(*) FROM checkouts WHERE state IN ('freezing', 'pricing', 'reserving')")


async def resume_checkouts(ctx: ServiceContext, batch: int = 100) -> int:
    """Every unfinished saga, a page per transaction."""
    total, after = 0, ""
    while True:
        found, after = await run_unscoped(ctx, RESUME,
                                      lambda uow, after=after: handlers.resume_checkouts(uow, after, batch))
        total += found
        if found < batch:
            if total:
                log.info("resumed %d unfinished checkout(s)", total)
            return total


async def watch_deadlines(ctx: ServiceContext) -> None:
    """Resume unfinished sagas once at start, then expire overdue ones, for as long as the service runs."""
    while True:
        try:
            await resume_checkouts(ctx)
            break
        except Exception as e:
            log.log(logging.WARNING if classify(e) is FailureClass.DOWN else logging.ERROR,
                    "could not resume unfinished checkouts (%s: %s); retrying", type(e).__name__, e)
            await asyncio.sleep(1.0)
    failing = False
    sampled = 0.0
    while True:
        await asyncio.sleep(ctx.settings.sweep_interval_s)
        try:
            await expire_overdue(ctx)
            if (now := asyncio.get_running_loop().time()) >= sampled + IN_FLIGHT_EVERY_S:
                sampled = now
                ctx.metrics.saga().in_flight.set(await count_in_flight(ctx))
            if failing:
                log.warning("deadline sweep works again")
            failing = False
        except Exception as e:
            if not failing:  # once per outage, not four times a second
                log.log(logging.WARNING if classify(e) is FailureClass.DOWN else logging.ERROR,
                        "deadline sweep failed (%s: %s); retrying until it works", type(e).__name__, e)
            failing = True


async def mark_overdue(ctx: ServiceContext, batch: int = 100) -> int:
    """Every open invoice past due, a batch per transaction."""
    total = 0
    while True:
        found = await run_unscoped(ctx, OVERDUE, lambda uow: handlers.mark_overdue(uow, batch))
        total += found
        if found < batch:
            return total


async def watch_invoices(ctx: ServiceContext) -> None:
    """Mark invoices overdue every `HARMON_ORDERS_OVERDUE_SWEEP_INTERVAL_S`, for as long as the service runs."""
    failing = False
    while True:
        await asyncio.sleep(getattr(ctx.settings, "overdue_sweep_interval_s", 60.0))
        try:
            marked = await mark_overdue(ctx)
            if marked:
                log.info("marked %d invoice(s) overdue", marked)
            if failing:
                log.warning("overdue sweep works again")
            failing = False
        except Exception as e:
            if not failing:
                log.log(logging.WARNING if classify(e) is FailureClass.DOWN else logging.ERROR,
                        "overdue sweep failed (%s: %s); retrying until it works", type(e).__name__, e)
            failing = True
