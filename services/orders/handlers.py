"""Orders' handlers: load, ask the domain, store what it decided, send what it says.

The checkout saga (docs/architecture.md, "The checkout saga"): PlaceOrder → FreezeCart(then) → cart →
PriceCheckout → pricing → ReserveCredit → credit; pricing's CheckoutPriced and credit's answer come
back here, in either order, and the second completes the order (or a Failure compensates).

After checkout (docs/architecture.md, "Order lifecycle and invoices"): the ERP's fulfilments, deliveries,
cancellations and payments, the shopper's cancel, and the overdue sweep; the rules are in lifecycle.py (the
order) and invoicing.py (invoices and payments).
"""

import logging

from collections.abc import Iterable

from libs.contracts import invoices as iv
from libs.contracts import orders as o
from libs.contracts import topics
from libs.contracts.base import Message, RecordRefused, Rejection
from libs.contracts.credit import ReleaseCredit
from libs.contracts.erp import (CustomerUpsert, DeliveryRecorded, FulfilmentRecorded, OrderCancellationRecorded,
                                PaymentRecorded)
from libs.contracts.errors import ErrorCode
from libs.contracts.ids import INVOICE
from libs.runtime.database import Scope

from .domain import Asker, Checkout, Customer, Send, Step, parse_correlation
from .invoicing import Invoice, allocate, apply_unapplied, invoice_for, invoice_number
from .lifecycle import Change, Order
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
    if step.order is not None:  # numbered from the tenant's counter in the order's own insert
        step = uow.saga.numbered(step, await uow.orders.add(step.order, co.checkout_id, co.order_prefix))
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
    orders, has_more = await uow.orders.page(q.customer_id, q.starting_after, q.limit, q.order_number)
    return o.OrderList(orders=orders, has_more=has_more)


async def upsert_customer(rec: CustomerUpsert, uow: OrdersUnitOfWork) -> None:
    await uow.customers.upsert(Customer(rec.customer_id, rec.bill_to_id or rec.customer_id, rec.terms))


# ---- after checkout: the order's lifecycle, invoices and payments -----------------------------------------

def _emit(uow: OrdersUnitOfWork, sends: Iterable[Send], scope: Scope | None = None) -> None:
    """Queue events (each names its aggregate and version) and commands that want no reply."""
    about = dict(tenant_id=scope.tenant_id, livemode=scope.livemode) if scope is not None else {}
    for m in sends:
        uow.outbox.add(m.topic, m.key, m.payload, aggregate_id=m.aggregate_id, aggregate_version=m.aggregate_version,
                       **about)


async def _order_of(uow: OrdersUnitOfWork, order_id: str) -> Order:
    """The order an ERP record names, locked; no such order in this tenant and mode: the record is refused."""
    order = await uow.orders.get_for_update(order_id)
    if order is None:
        raise RecordRefused(ErrorCode.RESOURCE_MISSING, f"no order {order_id}", "order_id")
    return order


async def record_fulfilment(rec: FulfilmentRecorded, uow: OrdersUnitOfWork) -> None:
    """A shipment: the order's lines and status, and one invoice for what it shipped, paid at once from the
    account's unapplied credit when there is some."""
    order = await _order_of(uow, rec.order_id)
    change = order.fulfil(rec, uow.saga.mint(INVOICE))
    if change is None:
        return None  # this record was applied before
    invoice = invoice_for(order, change.fulfilment, invoice_number(order.prefix, await uow.counters.take("invoice")))
    issued = invoice.issued()
    unapplied = await uow.payments.unapplied_for_update(invoice.view.bill_to_id)
    invoice, drawn, sends = apply_unapplied(invoice, unapplied)
    await uow.orders.save(change.order)
    await uow.invoices.add(invoice)
    await uow.payments.save_remaining(drawn)
    _emit(uow, [change.event, issued, *sends])
    return None


async def record_delivery(rec: DeliveryRecorded, uow: OrdersUnitOfWork) -> None:
    """A delivery: the fulfilments' delivered_at, and a cod invoice of each falls due."""
    order = await _order_of(uow, rec.order_id)
    change = order.deliver(rec)
    if change is None:
        return None
    sends, changed = [change.event], []
    if order.view.terms == "cod":
        ids = {f.invoice_id for f in change.order.view.fulfilments if f.fulfilment_id in change.delivered}
        for inv in await uow.invoices.of_order_for_update(order.order_id):
            due = inv.set_due(rec.delivered_at) if inv.invoice_id in ids else None
            if due is not None:
                changed.append(due[0])
                sends.append(due[1])
    await uow.orders.save(change.order)
    await uow.invoices.save_all(changed)
    _emit(uow, sends)
    return None


async def _cancelled(uow: OrdersUnitOfWork, change: Change, invoices: list[Invoice]) -> None:
    """Store a cancel: the order, every open invoice of it voided, and credit told to give back what it still
    holds (credit.commands.v1, keyed by the bill-to; nobody answers)."""
    order = change.order.view
    voided = [v for v in (inv.void(uow.now) for inv in invoices) if v is not None]
    await uow.orders.save(change.order)
    await uow.invoices.save_all([inv for inv, _ in voided])
    release = Send(topics.CREDIT_COMMANDS, order.bill_to_id,
                   ReleaseCredit(reservation_id=order.reservation_id, bill_to_id=order.bill_to_id))
    _emit(uow, [change.event, *(send for _, send in voided),
                *([release] if order.reservation_id is not None else [])])


async def cancel_order(cmd: o.CancelOrder, uow: OrdersUnitOfWork) -> o.OrderView:
    """The shopper's cancel: answered with the cancelled order (again, when it already was)."""
    order = await uow.orders.get_for_update(cmd.order_id)
    if order is None or order.view.customer_id != cmd.customer_id:
        raise Rejection(ErrorCode.RESOURCE_MISSING, f"no order {cmd.order_id}", "id")
    change = order.cancel_by_customer(uow.now, cmd.reason)
    if change is None:
        return order.view
    await _cancelled(uow, change, [])  # only a confirmed order: nothing shipped, nothing invoiced
    return change.order.view


async def record_cancellation(rec: OrderCancellationRecorded, uow: OrdersUnitOfWork) -> None:
    """The merchant's cancel (erp.order_cancellations.v1)."""
    order = await _order_of(uow, rec.order_id)
    invoices = await uow.invoices.of_order_for_update(order.order_id) if order.view.fulfilments else []
    change = order.cancel_by_merchant(rec, uow.now, any_paid=any(i.view.amount_paid > 0 for i in invoices))
    if change is not None:
        await _cancelled(uow, change, invoices)
    return None


async def record_payment(rec: PaymentRecorded, uow: OrdersUnitOfWork) -> None:
    """A payment, allocated once: to the invoice it names, else oldest due first; the rest is unapplied credit."""
    existing = await uow.payments.get(rec.payment_id)
    invoices = [] if existing is not None else await uow.invoices.for_payment(rec.customer_id, rec.invoice_id)
    allocation = allocate(rec, invoices, existing)
    if allocation is None:
        return None
    await uow.payments.add(allocation.payment, uow.now)
    await uow.invoices.save_all(list(allocation.invoices))
    _emit(uow, allocation.events)
    return None


async def get_invoice(q: iv.GetInvoice, uow: OrdersUnitOfWork) -> iv.InvoiceView:
    inv = await uow.invoices.get(q.invoice_id)
    if inv is None or (q.customer_id is not None and inv.view.customer_id != q.customer_id):
        raise Rejection(ErrorCode.RESOURCE_MISSING, f"no invoice {q.invoice_id}", "id")
    return inv.view


async def list_invoices(q: iv.ListInvoices, uow: OrdersUnitOfWork) -> iv.InvoiceList:
    found, has_more = await uow.invoices.page(q.customer_id, q.starting_after, q.limit, q.status, q.order_id)
    return iv.InvoiceList(invoices=[inv.view for inv in found], has_more=has_more)


async def mark_overdue(uow: OrdersUnitOfWork, limit: int = 100) -> int:
    """The overdue sweep (an Unscoped unit of work, entrypoint.watch_invoices): up to `limit` open invoices past
    due, of any tenant, marked overdue with one InvoiceOverdue each. Returns how many were found."""
    found = await uow.invoices.overdue(uow.now, limit)
    marked = [(scope, m) for scope, inv in found if (m := inv.mark_overdue(uow.now)) is not None]
    await uow.invoices.save_all([inv for _, (inv, _) in marked])
    for scope, (_, send) in marked:
        _emit(uow, [send], scope)
    return len(found)
