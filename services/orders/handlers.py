"""The checkout saga (docs/architecture.md, "The checkout saga"): PlaceOrder → FreezeCart → PriceLines → ReserveCredit → order, or compensation.

Each step runs in one transaction: the checkout row is locked, moved to its next state, and the
next command (and any reply to the waiting gateway) is written to the outbox with it.
"""

import logging
from datetime import UTC, datetime, timedelta

from pydantic import TypeAdapter

from libs.contracts import cart as c
from libs.contracts import credit as cr
from libs.contracts import orders as o
from libs.contracts import pricing as p
from libs.contracts import topics
from libs.contracts.base import Failure, Message, Rejection
from libs.contracts.envelope import AnyMessage, Envelope
from libs.contracts.erp import CustomerUpsert
from libs.contracts.ids import CHECKOUT, ORDER, ORDER_LINE, RESERVATION, new_id
from libs.runtime.messaging import ServiceContext, UnitOfWork, answer_command

from . import domain as d
from .repository import OrdersRepository, active_checkouts, overdue_checkouts
from .tables import Checkout, Order, OrderLine

log = logging.getLogger("harmon.orders.saga")
_payload = TypeAdapter(AnyMessage)


def _now() -> datetime:
    return datetime.now(UTC)


def _deadline(ctx: ServiceContext) -> datetime:
    return _now() + timedelta(seconds=ctx.settings.step_timeout_s)


def order_view(order: Order, lines: list[OrderLine]) -> o.OrderView:
    return o.OrderView(
        order_id=order.id, cart_id=order.cart_id, customer_id=order.customer_id, bill_to_id=order.bill_to_id,
        status=order.status, channel=order.channel, terms=order.terms, currency=order.currency,
        subtotal=order.subtotal, tax=order.tax, total=order.total, notes=order.notes, po_number=order.po_number,
        created_at=order.created_at,
        lines=[o.OrderLine(**{k: getattr(x, k) for k in o.OrderLine.model_fields}) for x in lines],
    )


# ---- talking to the other services and to the waiting gateway -------------------------------------------

def _about(co: Checkout) -> dict:
    """Envelope fields of everything the saga sends: the checkout's tenant, mode and request."""
    return dict(tenant_id=co.tenant_id, livemode=co.livemode, request_id=co.request_id)


def _command(co: Checkout) -> dict:
    """Envelope fields of a saga command: replies come back on orders.replies.v1, naming this attempt."""
    return dict(_about(co), reply_to=topics.ORDERS_REPLIES.name, correlation_id=d.correlation(co.id, co.attempt))


def _send_step(uow: UnitOfWork, co: Checkout) -> None:
    """Send the command of the step the checkout is in (also used to resume after a restart)."""
    meta = _command(co)
    if co.state == d.FREEZING:
        uow.send(topics.CART_COMMANDS.name, co.cart_id,
                 c.FreezeCart(cart_id=co.cart_id, customer_id=co.customer_id, checkout_id=co.id), **meta)
    elif co.state == d.PRICING:
        lines = [p.LineToPrice(line_id=x["line_id"], sku=x["sku"], base_quantity=x["base_quantity"])
                 for x in co.frozen_lines or []]
        uow.send(topics.PRICING_COMMANDS.name, co.cart_id,
                 p.PriceLines(cart_id=co.cart_id, customer_id=co.customer_id, lines=lines), **meta)
    elif co.state == d.RESERVING:
        priced = p.LinesPriced.model_validate(co.priced)
        uow.send(topics.CREDIT_COMMANDS.name, co.bill_to_id,
                 cr.ReserveCredit(reservation_id=co.reservation_id, checkout_id=co.id, customer_id=co.customer_id,
                                  bill_to_id=co.bill_to_id, amount=priced.total, currency=priced.currency), **meta)


def _release_cart(uow: UnitOfWork, co: Checkout) -> None:
    uow.send(topics.CART_COMMANDS.name, co.cart_id, c.ReleaseCart(cart_id=co.cart_id, checkout_id=co.id),
             **_command(co))


def _release_credit(uow: UnitOfWork, co: Checkout) -> None:
    uow.send(topics.CREDIT_COMMANDS.name, co.bill_to_id,
             cr.ReleaseCredit(reservation_id=co.reservation_id, bill_to_id=co.bill_to_id), **_command(co))


def _answer(uow: UnitOfWork, co: Checkout, payload: Message, *, final: bool) -> None:
    """Reply to whoever waits for this checkout; a final answer is kept and replayed to later asks."""
    if final:
        co.result = payload.model_dump(mode="json")
    if co.reply_to:
        uow.send(co.reply_to, co.reply_correlation_id, payload, correlation_id=co.reply_correlation_id, **_about(co))


def _move(co: Checkout, state: str, ctx: ServiceContext) -> None:
    co.state = state
    co.updated_at = _now()
    co.step_deadline = _deadline(ctx)


# ---- PlaceOrder ------------------------------------------------------------------------------------------

async def place_order(cmd: o.PlaceOrder, env: Envelope, ctx: ServiceContext) -> None:
    async def decide(uow: UnitOfWork) -> Message | None:
        repo = OrdersRepository(uow.session, env.tenant_id, env.livemode)
        co = await repo.checkout_by_key(cmd.idempotency_key) if cmd.idempotency_key else None
        if co is not None:
            if co.state in d.FINAL:
                return _payload.validate_python(co.result)
            # the latest ask is the one a gateway still waits on
            co.reply_to, co.reply_correlation_id, co.request_id = env.reply_to, env.correlation_id, env.request_id
            if co.state == d.EXPIRED:
                co.attempt += 1
                co.reservation_id = None
                _move(co, d.FREEZING, ctx)
                _send_step(uow, co)
                log.info("checkout %s retried (attempt %d)", co.id, co.attempt)
            return None
        order = await repo.order_for_cart(cmd.cart_id)
        if order is not None:
            raise Rejection("cart_checked_out", "this cart was already checked out", "cart_id", order_id=order.id)
        if await repo.active_checkout_for_cart(cmd.cart_id) is not None:
            raise Rejection("cart_frozen", "this cart is being checked out; try again shortly", "cart_id")
        now = _now()
        co = Checkout(
            id=new_id(CHECKOUT), tenant_id=env.tenant_id, livemode=env.livemode, cart_id=cmd.cart_id,
            customer_id=cmd.customer_id, idempotency_key=cmd.idempotency_key, notes=cmd.notes,
            po_number=cmd.po_number, state=d.FREEZING, reply_to=env.reply_to, reply_correlation_id=env.correlation_id,
            request_id=env.request_id, step_deadline=_deadline(ctx), created_at=now, updated_at=now,
        )
        uow.session.add(co)
        _send_step(uow, co)
        return None

    await answer_command(ctx, env, decide)


# ---- the saga's steps ------------------------------------------------------------------------------------

async def _cart_frozen(uow: UnitOfWork, co: Checkout, msg: c.CartFrozen, ctx: ServiceContext) -> None:
    co.frozen_lines = [line.model_dump(mode="json") for line in msg.lines]
    _move(co, d.PRICING, ctx)
    _send_step(uow, co)


async def _lines_priced(uow: UnitOfWork, co: Checkout, msg: p.LinesPriced, ctx: ServiceContext) -> None:
    repo = OrdersRepository(uow.session, co.tenant_id, co.livemode)
    customer = await repo.customer(co.customer_id)
    co.bill_to_id = customer.bill_to_id if customer else co.customer_id
    co.terms = customer.terms if customer else "cod"
    co.priced = msg.model_dump(mode="json")
    co.reservation_id = new_id(RESERVATION)
    _move(co, d.RESERVING, ctx)
    _send_step(uow, co)


async def _credit_reserved(uow: UnitOfWork, co: Checkout, msg: cr.CreditReserved, ctx: ServiceContext) -> None:
    priced = p.LinesPriced.model_validate(co.priced)
    frozen = [c.CartLine.model_validate(x) for x in co.frozen_lines or []]
    co.bill_to_id = msg.bill_to_id  # credit's answer names the account it charged: the authority on billing
    order = Order(
        id=new_id(ORDER), tenant_id=co.tenant_id, livemode=co.livemode, cart_id=co.cart_id, checkout_id=co.id,
        customer_id=co.customer_id, bill_to_id=co.bill_to_id, terms=co.terms or "cod", currency=priced.currency,
        subtotal=priced.subtotal, tax=priced.tax, total=priced.total, notes=co.notes, po_number=co.po_number,
        created_at=_now(),
    )
    lines = [OrderLine(id=new_id(ORDER_LINE), order_id=order.id, tenant_id=co.tenant_id, livemode=co.livemode, **x)
             for x in d.assemble_lines(frozen, priced)]
    uow.session.add(order)
    await uow.session.flush()
    uow.session.add_all(lines)
    co.order_id = order.id
    _move(co, d.CONFIRMED, ctx)
    view = order_view(order, lines)
    uow.send(topics.ORDERS_EVENTS.name, order.id, o.OrderConfirmed(order=view),
             aggregate_id=order.id, aggregate_version=order.version, **_about(co))
    uow.send(topics.CART_COMMANDS.name, co.cart_id,
             c.CompleteCart(cart_id=co.cart_id, checkout_id=co.id, order_id=order.id), **_command(co))
    _answer(uow, co, view, final=True)


async def _credit_rejected(uow: UnitOfWork, co: Checkout, msg: cr.CreditRejected, ctx: ServiceContext) -> None:
    _move(co, d.REJECTED, ctx)
    _release_cart(uow, co)
    _answer(uow, co, o.OverCreditLimit(
        cart_id=co.cart_id, limit=msg.limit, exposure=msg.exposure, available=msg.available,
        order_total=msg.order_total, shortfall=msg.shortfall, currency=msg.currency,
    ), final=True)


async def _step_failed(uow: UnitOfWork, co: Checkout, msg: Failure, ctx: ServiceContext) -> None:
    """A step said no: give the cart back (unless freezing it was what failed) and pass the reason on."""
    if co.state == d.RESERVING:
        _release_credit(uow, co)
    if co.state != d.FREEZING:
        _release_cart(uow, co)
    if co.state == d.FREEZING and msg.code == "resource_missing":
        # no such cart for this customer (another's, or none): a 404 keeps no saga; the gateway stores the answer
        _answer(uow, co, msg, final=False)
        await uow.session.delete(co)
        return
    _move(co, d.FAILED, ctx)
    _answer(uow, co, msg, final=True)


STEPS = {
    (d.FREEZING, "CartFrozen"): _cart_frozen,
    (d.FREEZING, "Failure"): _step_failed,
    (d.PRICING, "LinesPriced"): _lines_priced,
    (d.PRICING, "Failure"): _step_failed,
    (d.RESERVING, "CreditReserved"): _credit_reserved,
    (d.RESERVING, "CreditRejected"): _credit_rejected,
    (d.RESERVING, "Failure"): _step_failed,
}


async def advance_checkout(msg: Message, env: Envelope, ctx: ServiceContext) -> None:
    """Any reply on orders.replies.v1: move the checkout it names one step on, or ignore it if stale."""
    ref = d.parse_correlation(env.correlation_id)

    async def decide(uow: UnitOfWork) -> None:
        if ref is None:
            log.warning("reply %s without a checkout correlation; ignored", env.type)
            return None
        co = await OrdersRepository(uow.session, env.tenant_id, env.livemode).checkout_for_update(ref[0])
        step = STEPS.get((co.state, msg.type)) if co is not None and co.attempt == ref[1] else None
        if step is None:
            # acknowledgements of compensation, and late replies to attempts that already ended
            log.debug("reply %s for %s not awaited; ignored", env.type, env.correlation_id)
            return None
        await step(uow, co, msg, ctx)
        return None

    await answer_command(ctx, env, decide)


# ---- deadlines and restarts -----------------------------------------------------------------------------

async def expire_overdue(ctx: ServiceContext) -> int:
    """Compensate every saga past its step deadline; the waiting client gets 504 and may retry with its key."""
    async with ctx.uow(unscoped="sweeper: overdue checkouts of every tenant and mode") as uow:
        overdue = await overdue_checkouts(uow.session, _now())
        for co in overdue:
            if co.state == d.RESERVING:
                _release_credit(uow, co)
            _release_cart(uow, co)
            log.warning("checkout %s timed out in %s (attempt %d); compensated", co.id, co.state, co.attempt)
            _move(co, d.EXPIRED, ctx)
            _answer(uow, co, Failure(code="upstream_timeout",
                                     message="checkout did not complete in time; retry with the same Idempotency-Key"),
                    final=False)
        await uow.commit()
    return len(overdue)


async def resume_checkouts(ctx: ServiceContext) -> int:
    """After a restart: send each unfinished saga's current command again (every step is idempotent)."""
    async with ctx.uow(unscoped="restart: unfinished checkouts of every tenant and mode") as uow:
        active = await active_checkouts(uow.session)
        for co in active:
            co.step_deadline = _deadline(ctx)
            _send_step(uow, co)
        await uow.commit()
    if active:
        log.info("resumed %d unfinished checkout(s)", len(active))
    return len(active)


# ---- queries and master data ----------------------------------------------------------------------------

async def get_order(cmd: o.GetOrder, env: Envelope, ctx: ServiceContext) -> None:
    async with ctx.uow(env) as uow:
        repo = OrdersRepository(uow.session, env.tenant_id, env.livemode)
        order = await repo.order(cmd.order_id)
        if order is None or (cmd.customer_id is not None and order.customer_id != cmd.customer_id):
            reply: Message = Failure(code="resource_missing", message=f"no order {cmd.order_id}", param="id")
        else:
            reply = order_view(order, await repo.order_lines(order.id))
    await ctx.reply_now(env, reply)


async def list_orders(cmd: o.ListOrders, env: Envelope, ctx: ServiceContext) -> None:
    async with ctx.uow(env) as uow:
        repo = OrdersRepository(uow.session, env.tenant_id, env.livemode)
        orders, has_more = await repo.page_of_orders(cmd.customer_id, cmd.starting_after, cmd.limit)
        lines = await repo.lines_of([order.id for order in orders])
        reply = o.OrderList(orders=[order_view(order, lines.get(order.id, [])) for order in orders], has_more=has_more)
    await ctx.reply_now(env, reply)


async def upsert_customer(rec: CustomerUpsert, env: Envelope, ctx: ServiceContext) -> None:
    async with ctx.uow(env) as uow:
        await uow.claim()
        await OrdersRepository(uow.session, env.tenant_id, env.livemode).upsert_customer(
            rec.customer_id, rec.bill_to_id or rec.customer_id, rec.terms
        )
        await uow.commit()
