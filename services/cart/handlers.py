"""Cart command handlers: load, ask the domain, store, reply."""

from datetime import UTC, datetime

from libs.contracts import cart as c
from libs.contracts.base import Rejection
from libs.contracts.envelope import Envelope
from libs.contracts.erp import ProductUpsert
from libs.runtime.messaging import ServiceContext, UnitOfWork, answer_command

from . import domain
from .repository import CartRepository
from .tables import Cart, CartLine


def _now() -> datetime:
    return datetime.now(UTC)


def cart_view(cart: Cart, lines: list[CartLine]) -> c.CartView:
    return c.CartView(
        cart_id=cart.id, customer_id=cart.customer_id, status=cart.status, version=cart.version,
        order_id=cart.order_id, created_at=cart.created_at, updated_at=cart.updated_at,
        lines=[line_view(line) for line in lines],
    )


def line_view(line: CartLine) -> c.CartLine:
    return c.CartLine(
        line_id=line.id, sku=line.sku, order_uom=line.order_uom, order_quantity=line.order_quantity,
        factor=line.factor, base_uom=line.base_uom, base_quantity=line.base_quantity,
    )


async def _customer_cart(repo: CartRepository, cart_id: str, customer_id: str, *, for_update: bool = True) -> Cart:
    cart = await repo.get_cart(cart_id, for_update=for_update)
    # another customer's cart is as invisible as one that does not exist
    if cart is None or cart.customer_id != customer_id:
        raise Rejection("resource_missing", f"no cart {cart_id}", "cart_id")
    return cart


async def _line_to_change(repo: CartRepository, cmd: c.ChangeLine | c.RemoveLine) -> tuple[Cart, CartLine]:
    """The open cart (at the expected version) and its line that a change or removal names."""
    cart = await _customer_cart(repo, cmd.cart_id, cmd.customer_id)
    domain.ensure_open(cart.status, cart.order_id)
    domain.ensure_version(cart.version, cmd.expected_version)
    line = await repo.get_line(cart.id, cmd.line_id)
    if line is None:
        raise Rejection("resource_missing", f"no line {cmd.line_id} in this cart", "line_id")
    return cart, line


def _touch(cart: Cart) -> None:
    cart.version += 1
    cart.updated_at = _now()


async def create_cart(cmd: c.CreateCart, env: Envelope, ctx: ServiceContext) -> None:
    async def decide(uow: UnitOfWork) -> c.CartView:
        repo = CartRepository(uow.session, env)
        existing = await repo.get_cart(cmd.cart_id)
        if existing is not None:  # the gateway names the cart, so a resend finds it made
            if existing.customer_id != cmd.customer_id:
                raise Rejection("parameter_invalid", "cart id already in use", "cart_id")
            return cart_view(existing, await repo.lines(existing.id))
        now = _now()
        cart = Cart(id=cmd.cart_id, tenant_id=env.tenant_id, livemode=env.livemode, customer_id=cmd.customer_id,
                    created_at=now, updated_at=now)
        uow.session.add(cart)
        return cart_view(cart, [])

    await answer_command(ctx, env, decide)


async def get_cart(cmd: c.GetCart, env: Envelope, ctx: ServiceContext) -> None:
    async with ctx.uow(env) as uow:
        repo = CartRepository(uow.session, env)
        try:
            cart = await _customer_cart(repo, cmd.cart_id, cmd.customer_id, for_update=False)
            reply = cart_view(cart, await repo.lines(cart.id))
        except Rejection as r:
            reply = r.failure()
    await ctx.reply_now(env, reply)


async def add_line(cmd: c.AddLine, env: Envelope, ctx: ServiceContext) -> None:
    async def decide(uow: UnitOfWork) -> c.CartView:
        repo = CartRepository(uow.session, env)
        cart = await _customer_cart(repo, cmd.cart_id, cmd.customer_id)
        lines = await repo.lines(cart.id)  # one query serves the resend check and the reply
        if any(line.id == cmd.line_id for line in lines):
            # the gateway names the line: a resend (a retry after a timeout) finds it added
            return cart_view(cart, lines)
        domain.ensure_open(cart.status, cart.order_id)
        domain.ensure_version(cart.version, cmd.expected_version)
        product = await repo.get_product(cmd.sku)
        if product is None:
            raise Rejection("sku_unknown", f"no product with sku {cmd.sku!r}", "sku")
        conv = domain.to_base_units(product.base_uom, product.units, quantity=cmd.quantity,
                                    order_uom=cmd.order_uom, order_quantity=cmd.order_quantity)
        line = CartLine(
            id=cmd.line_id, cart_id=cart.id, tenant_id=env.tenant_id, livemode=env.livemode, sku=product.sku,
            order_uom=conv.order_uom, order_quantity=conv.order_quantity, factor=conv.factor,
            base_uom=conv.base_uom, base_quantity=conv.base_quantity, created_at=_now(),
        )
        uow.session.add(line)
        _touch(cart)
        # the cart row is locked, so no other line can appear meanwhile; the new one sorts last
        return cart_view(cart, sorted([*lines, line], key=lambda x: (x.created_at, x.id)))

    await answer_command(ctx, env, decide)


async def change_line(cmd: c.ChangeLine, env: Envelope, ctx: ServiceContext) -> None:
    async def decide(uow: UnitOfWork) -> c.CartView:
        repo = CartRepository(uow.session, env)
        cart, line = await _line_to_change(repo, cmd)
        units = {line.order_uom: line.factor} if line.order_uom != line.base_uom else {}
        if cmd.quantity is not None:
            conv = domain.to_base_units(line.base_uom, units, quantity=cmd.quantity)
        else:
            conv = domain.to_base_units(line.base_uom, units, order_uom=line.order_uom, order_quantity=cmd.order_quantity)
        line.order_uom, line.order_quantity, line.factor = conv.order_uom, conv.order_quantity, conv.factor
        line.base_quantity = conv.base_quantity
        _touch(cart)
        await uow.session.flush()
        return cart_view(cart, await repo.lines(cart.id))

    await answer_command(ctx, env, decide)


async def remove_line(cmd: c.RemoveLine, env: Envelope, ctx: ServiceContext) -> None:
    async def decide(uow: UnitOfWork) -> c.CartView:
        repo = CartRepository(uow.session, env)
        cart, line = await _line_to_change(repo, cmd)
        await repo.delete_line(line)
        _touch(cart)
        await uow.session.flush()
        return cart_view(cart, await repo.lines(cart.id))

    await answer_command(ctx, env, decide)


async def freeze_cart(cmd: c.FreezeCart, env: Envelope, ctx: ServiceContext) -> None:
    """Hold the cart for one checkout. Asking again for the same checkout answers the same (the saga may resend)."""

    async def decide(uow: UnitOfWork) -> c.CartFrozen:
        repo = CartRepository(uow.session, env)
        cart = await _customer_cart(repo, cmd.cart_id, cmd.customer_id)
        lines = await repo.lines(cart.id)  # the cart row is locked: these are the lines it freezes with
        if not (cart.status == "frozen" and cart.frozen_by == cmd.checkout_id):
            domain.ensure_open(cart.status, cart.order_id)
            if not lines:
                raise Rejection("parameter_invalid", "the cart has no lines to check out", "cart_id")
            cart.status, cart.frozen_by = "frozen", cmd.checkout_id
            _touch(cart)
        return c.CartFrozen(cart_id=cart.id, checkout_id=cmd.checkout_id, customer_id=cart.customer_id,
                            version=cart.version, lines=[line_view(x) for x in lines])

    await answer_command(ctx, env, decide)


async def complete_cart(cmd: c.CompleteCart, env: Envelope, ctx: ServiceContext) -> None:
    async def decide(uow: UnitOfWork) -> c.CartCompleted:
        cart = await CartRepository(uow.session, env).get_cart(cmd.cart_id, for_update=True)
        if cart is None:
            raise Rejection("resource_missing", f"no cart {cmd.cart_id}", "cart_id")
        if cart.status != "checked_out":
            cart.status, cart.order_id, cart.frozen_by = "checked_out", cmd.order_id, cmd.checkout_id
            _touch(cart)
        return c.CartCompleted(cart_id=cart.id, checkout_id=cmd.checkout_id, order_id=cart.order_id or cmd.order_id)

    await answer_command(ctx, env, decide)


async def release_cart(cmd: c.ReleaseCart, env: Envelope, ctx: ServiceContext) -> None:
    """Give the cart back to the shopper, if this checkout still holds it."""

    async def decide(uow: UnitOfWork) -> c.CartReleased:
        cart = await CartRepository(uow.session, env).get_cart(cmd.cart_id, for_update=True)
        if cart is not None and cart.status == "frozen" and cart.frozen_by == cmd.checkout_id:
            cart.status, cart.frozen_by = "open", None
            _touch(cart)
        return c.CartReleased(cart_id=cmd.cart_id, checkout_id=cmd.checkout_id)

    await answer_command(ctx, env, decide)


async def upsert_product(rec: ProductUpsert, env: Envelope, ctx: ServiceContext) -> None:
    async with ctx.uow(env) as uow:
        await uow.claim()
        await CartRepository(uow.session, env).upsert_product(
            sku=rec.sku, base_uom=rec.base_uom, units=dict(rec.units), active=rec.active
        )
        await uow.commit()
