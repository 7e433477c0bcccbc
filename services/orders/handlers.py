"""Orders' handlers: load the checkout, ask the saga (domain.py), store what it decided, send what it says.

The checkout saga (docs/architecture.md, "The checkout saga"): PlaceOrder → FreezeCart(then) → cart →
PriceCheckout → pricing → ReserveCredit → credit; pricing's CheckoutPriced and credit's answer come
back here, in either order, and the second completes the order (or a Failure compensates).
"""

import logging

from libs.contracts import orders as o
from libs.contracts import topics
from libs.contracts.base import Message, Rejection
from libs.contracts.erp import CustomerUpsert
from libs.contracts.errors import ErrorCode
from libs.runtime.database import Scope

from .domain import Asker, Checkout, Customer, Step, parse_correlation
from .unit_of_work import OrdersUnitOfWork

log = logging.getLogger("harmon.orders.saga")


# ---- sending what a step says --------------------------------------------------------------------------

def _send(uow: OrdersUnitOfWork, co: Checkout, step: Step, scope: Scope | None = None) -> None:
    """Queue the step's commands and events. `scope`: the checkout's tenant and mode, when the transaction is
    cross-tenant (the sweeper); a handler's messages take the incoming message's."""
    about = _about(co, scope)
    for m in step.send:
        reply = dict(reply_to=topics.ORDERS_REPLIES.name) if m.replies else {}
        uow.outbox.add(m.topic, m.key, m.payload, correlation_id=co.correlation_id, aggregate_id=m.aggregate_id,
                       aggregate_version=m.aggregate_version, **reply, **about)


def _answer(uow: OrdersUnitOfWork, co: Checkout, step: Step, scope: Scope | None = None) -> None:
    """Queue the step's answer to whoever waits for the checkout (the latest PlaceOrder's gateway)."""
    if step.answer is not None and co.asker.reply_to:
        uow.outbox.add(co.asker.reply_to, co.asker.correlation_id, step.answer,
                       correlation_id=co.asker.correlation_id, **_about(co, scope))


def _about(co: Checkout, scope: Scope | None) -> dict:
    about: dict = dict(request_id=co.asker.request_id)
    if scope is not None:
        about.update(tenant_id=scope.tenant_id, livemode=scope.livemode)
    return about


async def _apply(uow: OrdersUnitOfWork, co: Checkout, step: Step, scope: Scope | None = None) -> None:
    """Store the step (the order first: its lines refer to it), then send what it says."""
    if step.order is not None:
        await uow.orders.add(step.order, co.checkout_id)
    if step.state is None:
        await uow.checkouts.delete(co.checkout_id)
    elif step.changed:
        await uow.checkouts.save(step.state, uow.now)
    _send(uow, step.state or co, step, scope)
    _answer(uow, step.state or co, step, scope)
    _observe_end(uow, step)


def _observe_end(uow: OrdersUnitOfWork, step: Step) -> None:
    """A saga that ended (confirmed or compensated) counts in harmon_sagas_ended once its transaction commits."""
    if step.changed and step.state is not None and not step.state.state.active:
        uow.observe(lambda m, outcome=step.state.state.value: m.saga().ended(outcome))


# ---- PlaceOrder and the saga's replies -----------------------------------------------------------------

async def place_order(cmd: o.PlaceOrder, uow: OrdersUnitOfWork) -> Message | None:
    """Start a checkout (answered when it ends), or answer a known idempotency key with its stored result."""
    found = await uow.checkouts.for_placing(cmd.idempotency_key, cmd.cart_id, cmd.customer_id)
    env = uow.message
    asker = Asker(env.reply_to, env.correlation_id, env.request_id) if env else Asker(None, None, None)
    step = uow.saga.place(cmd, asker, found, uow.now)
    assert step.state is not None
    if step.changed:
        if found.checkout is None:
            await uow.checkouts.add(step.state, uow.now)
        else:
            await uow.checkouts.save(step.state, uow.now)
            if step.state.attempt != found.checkout.attempt:
                log.info("checkout %s retried (attempt %d)", step.state.checkout_id, step.state.attempt)
    _send(uow, step.state, step)
    return step.answer  # only a stored final answer is given now; the rest is answered when the saga ends


async def advance_checkout(reply: Message, uow: OrdersUnitOfWork) -> None:
    """Any reply on orders.replies.v1: the checkout it names takes its next step, or ignores it."""
    ref = parse_correlation(uow.message.correlation_id if uow.message else None)
    if ref is None:
        log.warning("reply %s without a checkout correlation; ignored", reply.type)
        return None
    checkout_id, attempt = ref
    co = await uow.checkouts.get_for_update(checkout_id)
    if co is None:
        log.debug("reply %s for %s: no such checkout; ignored", reply.type, checkout_id)
        return None
    step = uow.saga.on(co, reply, attempt=attempt, now=uow.now)
    if not step.changed and not step.send:
        log.debug("reply %s for %s:%d not awaited in %s; ignored", reply.type, checkout_id, attempt, co.state)
    await _apply(uow, co, step)
    return None


# ---- deadlines and restarts (run on an Unscoped unit of work by entrypoint.watch_deadlines) ---------------

async def expire_overdue(uow: OrdersUnitOfWork, limit: int = 100) -> int:
    """Compensate up to `limit` sagas past their step deadline, of any tenant; the waiting client gets 504 and may
    retry with its key. Returns how many were found (the caller goes on while a whole batch was)."""
    found = await uow.checkouts.overdue(uow.now, limit)
    steps = [(scope, co, uow.saga.expire(co, uow.now)) for scope, co in found]
    await uow.checkouts.save_all([step.state for _, _, step in steps if step.changed and step.state], uow.now)
    for scope, co, step in steps:
        if step.changed:
            log.warning("checkout %s timed out in %s, waiting for %s (attempt %d); compensated", co.checkout_id,
                        co.state.value, co.state.waits_for, co.attempt)
        _send(uow, co, step, scope)
        _answer(uow, co, step, scope)
        _observe_end(uow, step)
    return len(found)


async def resume_checkouts(uow: OrdersUnitOfWork, after_id: str = "", limit: int = 100) -> tuple[int, str]:
    """After a restart: ask again for what each of a page of unfinished sagas awaits (every step is idempotent).
    Returns (how many, the last id: the next page starts after it)."""
    found = await uow.checkouts.active(after_id, limit)
    steps = [(scope, co, uow.saga.resume(co, uow.now)) for scope, co in found]
    await uow.checkouts.save_all([step.state for _, _, step in steps if step.changed and step.state], uow.now)
    for scope, _, step in steps:
        _send(uow, step.state, step, scope)
    return len(found), (found[-1][1].checkout_id if found else after_id)


# ---- queries and master data ------------------------------------------------------------------------------

async def get_order(q: o.GetOrder, uow: OrdersUnitOfWork) -> o.OrderView:
    order = await uow.orders.get(q.order_id)
    if order is None or (q.customer_id is not None and order.customer_id != q.customer_id):
        raise Rejection(ErrorCode.RESOURCE_MISSING, f"no order {q.order_id}", "id")
    return order


async def list_orders(q: o.ListOrders, uow: OrdersUnitOfWork) -> o.OrderList:
    orders, has_more = await uow.orders.page(q.customer_id, q.starting_after, q.limit)
    return o.OrderList(orders=orders, has_more=has_more)


async def upsert_customer(rec: CustomerUpsert, uow: OrdersUnitOfWork) -> None:
    await uow.customers.upsert(Customer(rec.customer_id, rec.bill_to_id or rec.customer_id, rec.terms))
