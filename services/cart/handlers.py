"""Cart's handlers: load, ask the domain, store, emit; the return value answers the command."""

from libs.contracts import cart as c
from libs.contracts import topics
from libs.contracts.base import Rejection
from libs.contracts.erp import ProductUpsert
from libs.contracts.errors import ErrorCode
from libs.contracts.pricing import PriceCart, PriceCheckout

from . import domain
from .domain import Cart, Line, LineAdded, LineChanged, LineRemoved, Product, StatusChanged
from .unit_of_work import CartUnitOfWork


def cart_view(cart: Cart) -> c.CartView:
    return c.CartView(
        cart_id=cart.cart_id, customer_id=cart.customer_id, status=cart.status, version=cart.version,
        order_id=cart.order_id, created_at=cart.created_at, updated_at=cart.updated_at,
        lines=[line_view(line) for line in cart.lines],
    )


def line_view(line: Line) -> c.CartLine:
    return c.CartLine(
        line_id=line.line_id, sku=line.sku, order_uom=line.order_uom, order_quantity=line.order_quantity,
        factor=line.factor, base_uom=line.base_uom, base_quantity=line.base_quantity,
    )


async def create_cart(cmd: c.CreateCart, uow: CartUnitOfWork) -> c.CartView:
    """Make the cart the gateway named; a resend (same id, same customer) finds it made."""
    existing = await uow.carts.get(cmd.cart_id)
    if existing is not None:
        return cart_view(existing.created_again(cmd.customer_id).cart)
    cart = Cart.new(cmd.cart_id, cmd.customer_id, uow.now)
    if not await uow.carts.add(cart):  # the id is another tenant's cart
        raise Rejection(ErrorCode.PARAMETER_INVALID, "cart id already in use", "cart_id")
    return cart_view(cart)


async def get_cart(q: c.GetCart, uow: CartUnitOfWork) -> c.CartView | None:
    """The cart; with `then_price`, handed to pricing instead, which answers the asker (one hop fewer)."""
    view = cart_view(domain.customer_cart(await uow.carts.get(q.cart_id), q.cart_id, q.customer_id))
    if not q.then_price:
        return view
    incoming = uow.message
    uow.outbox.add(topics.PRICING_COMMANDS, q.cart_id, PriceCart(cart=view),
                   reply_to=incoming.reply_to if incoming else None,
                   correlation_id=incoming.correlation_id if incoming else None)
    return None


async def add_line(cmd: c.AddLine, uow: CartUnitOfWork) -> c.CartView:
    """Add a line converted to base units; the gateway names the line, so a resend finds it added."""
    cart, product = await uow.carts.get_for_adding(cmd.cart_id, cmd.sku)
    cart = domain.customer_cart(cart, cmd.cart_id, cmd.customer_id)
    change = cart.add_line(cmd.line_id, cmd.sku, product, quantity=cmd.quantity, order_uom=cmd.order_uom,
                           order_quantity=cmd.order_quantity, expected_version=cmd.expected_version, at=uow.now)
    if isinstance(change, LineAdded) and not await uow.carts.add_line(change.cart, change.line):
        raise Rejection(ErrorCode.PARAMETER_INVALID, "line id already in use", "line_id")
    return cart_view(change.cart)


async def change_line(cmd: c.ChangeLine, uow: CartUnitOfWork) -> c.CartView:
    cart = domain.customer_cart(await uow.carts.get_for_update(cmd.cart_id), cmd.cart_id, cmd.customer_id)
    change: LineChanged = cart.change_line(cmd.line_id, quantity=cmd.quantity, order_quantity=cmd.order_quantity,
                                           expected_version=cmd.expected_version, at=uow.now)
    await uow.carts.change_line(change.cart, change.line)
    return cart_view(change.cart)


async def remove_line(cmd: c.RemoveLine, uow: CartUnitOfWork) -> c.CartView:
    cart = domain.customer_cart(await uow.carts.get_for_update(cmd.cart_id), cmd.cart_id, cmd.customer_id)
    change: LineRemoved = cart.remove_line(cmd.line_id, expected_version=cmd.expected_version, at=uow.now)
    await uow.carts.remove_line(change.cart, change.line_id)
    return cart_view(change.cart)


async def freeze_cart(cmd: c.FreezeCart, uow: CartUnitOfWork) -> c.CartFrozen | None:
    """Hold the cart for one checkout; asking again for the same checkout answers the same (the saga may resend).

    With `then`, the checkout is handed on: `PriceCheckout` with the frozen lines goes to pricing on the saga's
    reply_to and correlation, and the saga gets no `CartFrozen` (a refusal still answers it)."""
    cart = domain.customer_cart(await uow.carts.get_for_update(cmd.cart_id), cmd.cart_id, cmd.customer_id)
    change = cart.freeze(cmd.checkout_id, uow.now)
    if isinstance(change, StatusChanged):
        await uow.carts.save(change.cart)
    frozen = change.cart
    lines = [line_view(x) for x in frozen.lines]  # the cart row is locked: these are the lines it froze with
    if cmd.then is None:
        return c.CartFrozen(cart_id=frozen.cart_id, checkout_id=cmd.checkout_id, customer_id=frozen.customer_id,
                            version=frozen.version, lines=lines)
    incoming = uow.message
    uow.outbox.add(
        topics.PRICING_COMMANDS, frozen.cart_id,
        PriceCheckout(cart_id=frozen.cart_id, customer_id=frozen.customer_id, checkout_id=cmd.checkout_id,
                      cart_version=frozen.version, lines=lines, then=cmd.then),
        reply_to=incoming.reply_to if incoming else None,
        correlation_id=incoming.correlation_id if incoming else None,
    )
    return None


async def complete_cart(cmd: c.CompleteCart, uow: CartUnitOfWork) -> c.CartCompleted:
    """The checkout became an order (answered even without a reply_to: the dispatcher then sends nothing)."""
    cart = domain.existing_cart(await uow.carts.get_for_update(cmd.cart_id), cmd.cart_id)
    change = cart.complete(cmd.checkout_id, cmd.order_id, uow.now)
    if isinstance(change, StatusChanged):
        await uow.carts.save(change.cart)
    return c.CartCompleted(cart_id=cart.cart_id, checkout_id=cmd.checkout_id,
                           order_id=change.cart.order_id or cmd.order_id)


async def release_cart(cmd: c.ReleaseCart, uow: CartUnitOfWork) -> c.CartReleased:
    """Give the cart back to the shopper, if this checkout still holds it; answered either way."""
    cart = await uow.carts.get_for_update(cmd.cart_id)
    if cart is not None:
        change = cart.release(cmd.checkout_id, uow.now)
        if isinstance(change, StatusChanged):
            await uow.carts.save(change.cart)
    return c.CartReleased(cart_id=cmd.cart_id, checkout_id=cmd.checkout_id)


async def upsert_product(rec: ProductUpsert, uow: CartUnitOfWork) -> None:
    await uow.products.upsert(Product(rec.sku, rec.base_uom, dict(rec.units), rec.active))
