"""Cart's handlers over an in-memory unit of work: every handler's paths, its refusals and its idempotent repeats,
with no broker and no database (the repositories' SQL is tried in tests/integration/test_cart_repository.py)."""

from datetime import UTC, datetime, timedelta

import pytest

from libs.contracts import cart as c
from libs.contracts import topics
from libs.contracts.base import Rejection
from libs.contracts.cart import CartStatus, CheckoutContinuation
from libs.contracts.envelope import Envelope
from libs.contracts.erp import ProductUpsert
from libs.contracts.ids import CART, CART_LINE, CHECKOUT, CUSTOMER, ORDER, RESERVATION, new_id
from libs.contracts.pricing import PriceCart, PriceCheckout
from libs.runtime.database import Scope
from services.cart import entrypoint, handlers
from services.cart.domain import Cart, Line, Product
from services.cart.unit_of_work import CartUnitOfWork

TENANT = "ten_cart"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class MemoryProducts:
    def __init__(self):
        self.rows: dict[str, Product] = {}

    async def get(self, sku: str) -> Product | None:
        return self.rows.get(sku)

    async def upsert(self, p: Product) -> None:
        self.rows[p.sku] = p


class MemoryCarts:
    """The same methods as repository.Carts; `foreign` holds cart and line ids another tenant has taken."""

    def __init__(self, products: MemoryProducts):
        self.rows: dict[str, Cart] = {}
        self.products = products
        self.foreign: set[str] = set()
        self.writes: list[str] = []

    async def get(self, cart_id: str) -> Cart | None:
        return self.rows.get(cart_id)

    async def get_for_update(self, cart_id: str) -> Cart | None:
        return self.rows.get(cart_id)

    async def get_for_adding(self, cart_id: str, sku: str) -> tuple[Cart | None, Product | None]:
        return self.rows.get(cart_id), await self.products.get(sku)

    async def add(self, cart: Cart) -> bool:
        if cart.cart_id in self.foreign or cart.cart_id in self.rows:
            return False
        self.writes.append(f"add {cart.cart_id}")
        self.rows[cart.cart_id] = cart
        return True

    async def add_line(self, cart: Cart, line: Line) -> bool:
        taken = {x.line_id for other in self.rows.values() for x in other.lines} | self.foreign
        if line.line_id in taken:
            return False
        self.writes.append(f"add_line {line.line_id}")
        self.rows[cart.cart_id] = cart
        return True

    async def change_line(self, cart: Cart, line: Line) -> None:
        self.writes.append(f"change_line {line.line_id}")
        self.rows[cart.cart_id] = cart

    async def remove_line(self, cart: Cart, line_id: str) -> None:
        self.writes.append(f"remove_line {line_id}")
        self.rows[cart.cart_id] = cart

    async def save(self, cart: Cart) -> None:
        self.writes.append(f"save {cart.cart_id} {cart.status} v{cart.version}")
        self.rows[cart.cart_id] = cart


class World:
    """One tenant's in-memory cart database; `uow(cmd)` is the unit of work the dispatcher would hand a handler."""

    def __init__(self):
        self.products = MemoryProducts()
        self.carts = MemoryCarts(self.products)
        self.clock = T0
        self.products.rows.update({
            "OIL-1L": Product("OIL-1L", "EA"),
            "RICE-1KG": Product("RICE-1KG", "EA", {"CASE": 12}),
            "OLD-1": Product("OLD-1", "EA", active=False),
        })

    def uow(self, payload, *, reply_to: str | None = "saga.replies", correlation_id: str | None = "chk_1:1"):
        env = Envelope(payload=payload, tenant_id=TENANT, livemode=False, reply_to=reply_to,
                       correlation_id=correlation_id, request_id="req_1")
        self.clock += timedelta(seconds=1)
        uow = CartUnitOfWork(None, Scope(TENANT, False), env, now=self.clock)
        uow.carts, uow.products = self.carts, self.products
        return uow

    async def run(self, handler, payload, **envelope):
        uow = self.uow(payload, **envelope)
        reply = await handler(payload, uow)
        return reply, uow


async def refused(world: World, handler, payload, code: str, param: str | None = None) -> Rejection:
    before = dict(world.carts.rows), list(world.carts.writes)
    with pytest.raises(Rejection) as e:
        await world.run(handler, payload)
    assert (e.value.code, e.value.param) == (code, param), e.value.message
    assert (dict(world.carts.rows), world.carts.writes) == before, "a refusal wrote something"
    return e.value


@pytest.fixture
def world() -> World:
    return World()


CUS, OTHER = new_id(CUSTOMER), new_id(CUSTOMER)


async def new_cart(world: World, *lines: dict, customer_id: str = CUS) -> c.CartView:
    view, _ = await world.run(handlers.create_cart, c.CreateCart(cart_id=new_id(CART), customer_id=customer_id))
    for line in lines:
        view, _ = await world.run(handlers.add_line, c.AddLine(cart_id=view.cart_id, customer_id=customer_id,
                                                               line_id=new_id(CART_LINE), **line))
    return view


OIL_2 = {"sku": "OIL-1L", "quantity": 2}
RICE_CASES = {"sku": "RICE-1KG", "order_uom": "CASE", "order_quantity": 3}


def freeze(view: c.CartView, checkout_id: str, *, then: bool = False, customer_id: str = CUS) -> c.FreezeCart:
    cont = CheckoutContinuation(reservation_id=new_id(RESERVATION), bill_to_id=customer_id) if then else None
    return c.FreezeCart(cart_id=view.cart_id, customer_id=customer_id, checkout_id=checkout_id, then=cont)


# -- routes --------------------------------------------------------------------------------------------

def test_get_cart_is_a_query_and_every_command_changes_state():
    from types import SimpleNamespace
    ctx = SimpleNamespace(routes={})
    entrypoint.register(ctx)
    routes = ctx.routes[topics.CART_COMMANDS.name]
    assert {t for t, r in routes.items() if r.query} == {"GetCart"}
    assert set(routes) == set(topics.CART_COMMANDS.carries)
    assert set(ctx.routes[topics.ERP_PRODUCTS.name]) == {"ProductUpsert"}


# -- CreateCart ---------------------------------------------------------------------------------------

async def test_create_cart(world):
    cart_id = new_id(CART)
    view, uow = await world.run(handlers.create_cart, c.CreateCart(cart_id=cart_id, customer_id=CUS))
    assert (view.cart_id, view.customer_id, view.status, view.version, view.lines, view.order_id) == (
        cart_id, CUS, "open", 1, [], None)
    assert view.created_at == view.updated_at == uow.now
    assert uow.outbox.pending == []


async def test_create_cart_again_finds_it_made(world):
    view = await new_cart(world, OIL_2)
    writes = list(world.carts.writes)
    again, _ = await world.run(handlers.create_cart, c.CreateCart(cart_id=view.cart_id, customer_id=CUS))
    assert again == view  # lines and all
    assert world.carts.writes == writes


async def test_create_cart_of_an_id_another_customer_holds(world):
    view = await new_cart(world)
    await refused(world, handlers.create_cart, c.CreateCart(cart_id=view.cart_id, customer_id=OTHER),
                  "parameter_invalid", "cart_id")


async def test_create_cart_of_an_id_another_tenant_holds(world):
    cart_id = new_id(CART)
    world.carts.foreign.add(cart_id)
    await refused(world, handlers.create_cart, c.CreateCart(cart_id=cart_id, customer_id=CUS),
                  "parameter_invalid", "cart_id")


# -- GetCart ------------------------------------------------------------------------------------------

async def test_get_cart(world):
    view = await new_cart(world, OIL_2, RICE_CASES)
    got, uow = await world.run(handlers.get_cart, c.GetCart(cart_id=view.cart_id, customer_id=CUS))
    assert got == view
    assert [x.sku for x in got.lines] == ["OIL-1L", "RICE-1KG"]
    assert uow.outbox.pending == []


async def test_get_cart_then_price_hands_the_view_to_pricing_on_the_askers_reply_to(world):
    view = await new_cart(world, OIL_2, RICE_CASES)
    q = c.GetCart(cart_id=view.cart_id, customer_id=CUS, then_price=True)
    reply, uow = await world.run(handlers.get_cart, q, reply_to="gateway.replies.g1", correlation_id="msg_7")
    assert reply is None  # pricing answers the gateway
    [(topic, key, env)] = uow.outbox.envelopes
    assert (topic, key, env.payload) == (topics.PRICING_COMMANDS.name, view.cart_id, PriceCart(cart=view))
    assert (env.reply_to, env.correlation_id, env.tenant_id) == ("gateway.replies.g1", "msg_7", TENANT)
    await refused(world, handlers.get_cart, c.GetCart(cart_id=view.cart_id, customer_id=OTHER, then_price=True),
                  "resource_missing", "cart_id")


async def test_get_cart_of_another_customer_or_none_is_missing(world):
    view = await new_cart(world, OIL_2)
    await refused(world, handlers.get_cart, c.GetCart(cart_id=view.cart_id, customer_id=OTHER),
                  "resource_missing", "cart_id")
    await refused(world, handlers.get_cart, c.GetCart(cart_id=new_id(CART), customer_id=CUS),
                  "resource_missing", "cart_id")


# -- AddLine ------------------------------------------------------------------------------------------

async def test_add_line_in_base_units_and_in_cases(world):
    view = await new_cart(world)
    oil_id, rice_id = new_id(CART_LINE), new_id(CART_LINE)
    after, _ = await world.run(handlers.add_line, c.AddLine(cart_id=view.cart_id, customer_id=CUS, line_id=oil_id,
                                                            sku="OIL-1L", quantity=2, expected_version=1))
    assert after.version == 2
    after, uow = await world.run(handlers.add_line, c.AddLine(cart_id=view.cart_id, customer_id=CUS,
                                                              line_id=rice_id, **RICE_CASES))
    assert after.version == 3 and after.updated_at == uow.now
    oil, rice = after.lines
    assert (oil.line_id, oil.order_uom, oil.order_quantity, oil.factor, oil.base_uom, oil.base_quantity) == (
        oil_id, "EA", 2, 1, "EA", 2)
    assert (rice.line_id, rice.order_uom, rice.order_quantity, rice.factor, rice.base_uom, rice.base_quantity) == (
        rice_id, "CASE", 3, 12, "EA", 36)
    assert world.carts.writes[-2:] == [f"add_line {oil_id}", f"add_line {rice_id}"]


async def test_add_line_resent_finds_it_added_even_once_frozen(world):
    view = await new_cart(world)
    add = c.AddLine(cart_id=view.cart_id, customer_id=CUS, line_id=new_id(CART_LINE), expected_version=1, **OIL_2)
    first, _ = await world.run(handlers.add_line, add)
    writes = list(world.carts.writes)
    again, _ = await world.run(handlers.add_line, add)  # a retry after a timeout: expected_version is stale now
    assert again == first and world.carts.writes == writes
    await world.run(handlers.freeze_cart, freeze(first, new_id(CHECKOUT)))
    frozen_again, _ = await world.run(handlers.add_line, add)
    assert frozen_again.lines == first.lines and frozen_again.status == "frozen"


@pytest.mark.parametrize("line, code, param", [
    ({"sku": "NO-SUCH", "quantity": 1}, "sku_unknown", "sku"),
    ({"sku": "OLD-1", "quantity": 1}, "sku_unknown", "sku"),  # inactive: not sold
    # (a base quantity outside 1..MAX_BASE_QUANTITY never parses: the contract's field bounds it)
    ({"sku": "RICE-1KG", "order_uom": "CASE", "order_quantity": 100_000}, "quantity_invalid", "order_quantity"),
    ({"sku": "RICE-1KG", "order_uom": "PALLET", "order_quantity": 1}, "uom_unknown", "order_uom"),
    ({"sku": "OIL-1L"}, "parameter_missing", "quantity"),
])
async def test_add_line_refusals(world, line, code, param):
    view = await new_cart(world, OIL_2)
    await refused(world, handlers.add_line, c.AddLine(cart_id=view.cart_id, customer_id=CUS,
                                                      line_id=new_id(CART_LINE), **line), code, param)


async def test_add_line_to_another_customers_or_no_cart_is_missing(world):
    view = await new_cart(world)
    for cart_id, customer in ((view.cart_id, OTHER), (new_id(CART), CUS)):
        await refused(world, handlers.add_line, c.AddLine(cart_id=cart_id, customer_id=customer,
                                                          line_id=new_id(CART_LINE), **OIL_2),
                      "resource_missing", "cart_id")


async def test_add_line_at_another_version_conflicts(world):
    view = await new_cart(world, OIL_2)
    e = await refused(world, handlers.add_line, c.AddLine(cart_id=view.cart_id, customer_id=CUS,
                                                          line_id=new_id(CART_LINE), expected_version=1, **OIL_2),
                      "cart_version_conflict", "version")
    assert "version 2" in e.message


async def test_add_line_whose_id_is_taken_elsewhere_writes_nothing(world):
    view = await new_cart(world)
    line_id = new_id(CART_LINE)
    world.carts.foreign.add(line_id)
    await refused(world, handlers.add_line, c.AddLine(cart_id=view.cart_id, customer_id=CUS, line_id=line_id,
                                                      **OIL_2), "parameter_invalid", "line_id")


async def test_a_frozen_or_checked_out_cart_refuses_changes(world):
    view = await new_cart(world, OIL_2)
    line_id = view.lines[0].line_id
    checkout = new_id(CHECKOUT)
    await world.run(handlers.freeze_cart, freeze(view, checkout))
    changes = [
        (handlers.add_line, c.AddLine(cart_id=view.cart_id, customer_id=CUS, line_id=new_id(CART_LINE), **OIL_2)),
        (handlers.change_line, c.ChangeLine(cart_id=view.cart_id, customer_id=CUS, line_id=line_id, quantity=5)),
        (handlers.remove_line, c.RemoveLine(cart_id=view.cart_id, customer_id=CUS, line_id=line_id)),
    ]
    for handler, cmd in changes:
        await refused(world, handler, cmd, "cart_frozen", "cart_id")
    order_id = new_id(ORDER)
    await world.run(handlers.complete_cart, c.CompleteCart(cart_id=view.cart_id, checkout_id=checkout,
                                                           order_id=order_id))
    for handler, cmd in changes:
        e = await refused(world, handler, cmd, "cart_checked_out", "cart_id")
        assert e.order_id == order_id


# -- ChangeLine / RemoveLine ----------------------------------------------------------------------------

async def test_change_line_by_order_quantity_keeps_its_unit(world):
    view = await new_cart(world, RICE_CASES, OIL_2)
    rice = view.lines[0]
    after, _ = await world.run(handlers.change_line, c.ChangeLine(
        cart_id=view.cart_id, customer_id=CUS, line_id=rice.line_id, order_quantity=5, expected_version=view.version))
    assert after.version == view.version + 1
    assert [x.line_id for x in after.lines] == [x.line_id for x in view.lines]  # the order lines were added in
    changed = after.lines[0]
    assert (changed.order_uom, changed.order_quantity, changed.factor, changed.base_quantity) == ("CASE", 5, 12, 60)
    assert world.carts.writes[-1] == f"change_line {rice.line_id}"


async def test_change_line_by_quantity_makes_it_a_base_unit_line(world):
    view = await new_cart(world, RICE_CASES)
    after, _ = await world.run(handlers.change_line, c.ChangeLine(
        cart_id=view.cart_id, customer_id=CUS, line_id=view.lines[0].line_id, quantity=7))
    line = after.lines[0]
    assert (line.order_uom, line.order_quantity, line.factor, line.base_uom, line.base_quantity) == (
        "EA", 7, 1, "EA", 7)


async def test_change_line_refusals(world):
    view = await new_cart(world, RICE_CASES)
    line_id = view.lines[0].line_id
    for cmd, code, param in [
        (c.ChangeLine(cart_id=view.cart_id, customer_id=CUS, line_id=new_id(CART_LINE), quantity=1),
         "resource_missing", "line_id"),
        (c.ChangeLine(cart_id=view.cart_id, customer_id=OTHER, line_id=line_id, quantity=1),
         "resource_missing", "cart_id"),
        (c.ChangeLine(cart_id=view.cart_id, customer_id=CUS, line_id=line_id, quantity=1, expected_version=1),
         "cart_version_conflict", "version"),
        (c.ChangeLine(cart_id=view.cart_id, customer_id=CUS, line_id=line_id, order_quantity=100_000),
         "quantity_invalid", "order_quantity"),
        (c.ChangeLine(cart_id=view.cart_id, customer_id=CUS, line_id=line_id), "parameter_missing", "quantity"),
    ]:
        await refused(world, handlers.change_line, cmd, code, param)


async def test_remove_line(world):
    view = await new_cart(world, OIL_2, RICE_CASES)
    oil, rice = view.lines
    after, _ = await world.run(handlers.remove_line, c.RemoveLine(cart_id=view.cart_id, customer_id=CUS,
                                                                  line_id=oil.line_id, expected_version=view.version))
    assert (after.version, after.lines) == (view.version + 1, [rice])
    assert world.carts.writes[-1] == f"remove_line {oil.line_id}"
    # removed already (a resend): the line is gone
    await refused(world, handlers.remove_line, c.RemoveLine(cart_id=view.cart_id, customer_id=CUS,
                                                            line_id=oil.line_id), "resource_missing", "line_id")


async def test_remove_line_refusals(world):
    view = await new_cart(world, OIL_2)
    line_id = view.lines[0].line_id
    await refused(world, handlers.remove_line, c.RemoveLine(cart_id=view.cart_id, customer_id=OTHER, line_id=line_id),
                  "resource_missing", "cart_id")
    await refused(world, handlers.remove_line, c.RemoveLine(cart_id=view.cart_id, customer_id=CUS, line_id=line_id,
                                                            expected_version=1), "cart_version_conflict", "version")


# -- FreezeCart ---------------------------------------------------------------------------------------

async def test_freeze_answers_cart_frozen_with_its_lines(world):
    view = await new_cart(world, OIL_2, RICE_CASES)
    checkout = new_id(CHECKOUT)
    frozen, uow = await world.run(handlers.freeze_cart, freeze(view, checkout))
    assert isinstance(frozen, c.CartFrozen)
    assert (frozen.cart_id, frozen.checkout_id, frozen.customer_id, frozen.version) == (
        view.cart_id, checkout, CUS, view.version + 1)
    assert frozen.lines == view.lines
    assert uow.outbox.pending == []
    cart = world.carts.rows[view.cart_id]
    assert (cart.status, cart.frozen_by, cart.version) == (CartStatus.FROZEN, checkout, view.version + 1)


async def test_freeze_again_for_the_same_checkout_answers_the_same(world):
    view = await new_cart(world, OIL_2)
    checkout = new_id(CHECKOUT)
    first, _ = await world.run(handlers.freeze_cart, freeze(view, checkout))
    writes = list(world.carts.writes)
    again, _ = await world.run(handlers.freeze_cart, freeze(view, checkout))
    assert again == first and world.carts.writes == writes


async def test_freeze_refusals(world):
    view = await new_cart(world, OIL_2)
    await refused(world, handlers.freeze_cart, freeze(view, new_id(CHECKOUT), customer_id=OTHER),
                  "resource_missing", "cart_id")
    empty = await new_cart(world)
    await refused(world, handlers.freeze_cart, freeze(empty, new_id(CHECKOUT)), "parameter_invalid", "cart_id")
    checkout = new_id(CHECKOUT)
    await world.run(handlers.freeze_cart, freeze(view, checkout))
    await refused(world, handlers.freeze_cart, freeze(view, new_id(CHECKOUT)), "cart_frozen", "cart_id")
    order_id = new_id(ORDER)
    await world.run(handlers.complete_cart, c.CompleteCart(cart_id=view.cart_id, checkout_id=checkout,
                                                           order_id=order_id))
    for other in (new_id(CHECKOUT), checkout):  # even the checkout that completed it: the cart is an order now
        e = await refused(world, handlers.freeze_cart, freeze(view, other), "cart_checked_out", "cart_id")
        assert e.order_id == order_id


async def test_freeze_with_then_hands_the_checkout_to_pricing(world):
    view = await new_cart(world, OIL_2, RICE_CASES)
    checkout = new_id(CHECKOUT)
    cmd = freeze(view, checkout, then=True)
    reply, uow = await world.run(handlers.freeze_cart, cmd, reply_to="orders.replies.x", correlation_id="chk_9:2")
    assert reply is None  # the saga hears from pricing, not from the cart
    [(topic, key, env)] = uow.outbox.envelopes
    assert (topic, key) == (topics.PRICING_COMMANDS.name, view.cart_id)
    assert (env.reply_to, env.correlation_id, env.causation_id, env.request_id) == (
        "orders.replies.x", "chk_9:2", uow.message.message_id, "req_1")
    assert (env.tenant_id, env.livemode) == (TENANT, False)
    assert env.payload == PriceCheckout(cart_id=view.cart_id, customer_id=CUS, checkout_id=checkout,
                                        cart_version=view.version + 1, lines=view.lines, then=cmd.then)
    assert world.carts.rows[view.cart_id].status == CartStatus.FROZEN


async def test_freeze_with_then_again_sends_price_checkout_again(world):
    """The saga resuming after a restart resends FreezeCart: pricing is asked again, the cart is not touched."""
    view = await new_cart(world, OIL_2)
    cmd = freeze(view, new_id(CHECKOUT), then=True)
    _, first = await world.run(handlers.freeze_cart, cmd)
    writes = list(world.carts.writes)
    reply, again = await world.run(handlers.freeze_cart, cmd)
    assert reply is None and world.carts.writes == writes
    [(_, _, a)], [(_, _, b)] = first.outbox.envelopes, again.outbox.envelopes
    assert a.payload == b.payload and a.message_id != b.message_id


async def test_freeze_with_then_refused_is_still_a_refusal(world):
    view = await new_cart(world, OIL_2)
    await world.run(handlers.freeze_cart, freeze(view, new_id(CHECKOUT)))
    uow = world.uow(freeze(view, new_id(CHECKOUT), then=True))
    with pytest.raises(Rejection) as e:
        await handlers.freeze_cart(uow.message.payload, uow)
    assert e.value.code == "cart_frozen"
    assert uow.outbox.pending == []


# -- CompleteCart / ReleaseCart -------------------------------------------------------------------------

async def test_complete_cart(world):
    view = await new_cart(world, OIL_2)
    checkout, order_id = new_id(CHECKOUT), new_id(ORDER)
    await world.run(handlers.freeze_cart, freeze(view, checkout))
    done, _ = await world.run(handlers.complete_cart, c.CompleteCart(cart_id=view.cart_id, checkout_id=checkout,
                                                                     order_id=order_id), reply_to=None)
    assert done == c.CartCompleted(cart_id=view.cart_id, checkout_id=checkout, order_id=order_id)  # even unasked
    cart = world.carts.rows[view.cart_id]
    assert (cart.status, cart.order_id, cart.frozen_by, cart.version) == (
        CartStatus.CHECKED_OUT, order_id, checkout, view.version + 2)
    got, _ = await world.run(handlers.get_cart, c.GetCart(cart_id=view.cart_id, customer_id=CUS))
    assert (got.status, got.order_id) == ("checked_out", order_id)


async def test_complete_cart_again_keeps_the_order_it_became(world):
    view = await new_cart(world, OIL_2)
    checkout, order_id = new_id(CHECKOUT), new_id(ORDER)
    await world.run(handlers.freeze_cart, freeze(view, checkout))
    await world.run(handlers.complete_cart, c.CompleteCart(cart_id=view.cart_id, checkout_id=checkout,
                                                           order_id=order_id))
    writes = list(world.carts.writes)
    again, _ = await world.run(handlers.complete_cart, c.CompleteCart(cart_id=view.cart_id, checkout_id=checkout,
                                                                      order_id=new_id(ORDER)))
    assert again.order_id == order_id and world.carts.writes == writes


async def test_complete_cart_that_does_not_exist(world):
    await refused(world, handlers.complete_cart, c.CompleteCart(cart_id=new_id(CART), checkout_id=new_id(CHECKOUT),
                                                                order_id=new_id(ORDER)), "resource_missing", "cart_id")


async def test_release_gives_the_cart_back_to_the_shopper(world):
    view = await new_cart(world, OIL_2)
    checkout = new_id(CHECKOUT)
    await world.run(handlers.freeze_cart, freeze(view, checkout))
    released, _ = await world.run(handlers.release_cart, c.ReleaseCart(cart_id=view.cart_id, checkout_id=checkout),
                                  reply_to=None)
    assert released == c.CartReleased(cart_id=view.cart_id, checkout_id=checkout)  # answered even unasked
    cart = world.carts.rows[view.cart_id]
    assert (cart.status, cart.frozen_by, cart.version) == (CartStatus.OPEN, None, view.version + 2)
    after, _ = await world.run(handlers.add_line, c.AddLine(cart_id=view.cart_id, customer_id=CUS,
                                                            line_id=new_id(CART_LINE), **OIL_2))
    assert len(after.lines) == 2
    # a new checkout may hold it now
    frozen, _ = await world.run(handlers.freeze_cart, freeze(view, new_id(CHECKOUT)))
    assert len(frozen.lines) == 2


async def test_release_by_another_checkout_or_again_or_of_no_cart_changes_nothing(world):
    view = await new_cart(world, OIL_2)
    checkout = new_id(CHECKOUT)
    await world.run(handlers.freeze_cart, freeze(view, checkout))
    writes = list(world.carts.writes)
    other = new_id(CHECKOUT)
    released, _ = await world.run(handlers.release_cart, c.ReleaseCart(cart_id=view.cart_id, checkout_id=other))
    assert released == c.CartReleased(cart_id=view.cart_id, checkout_id=other)
    assert world.carts.rows[view.cart_id].frozen_by == checkout and world.carts.writes == writes
    await world.run(handlers.release_cart, c.ReleaseCart(cart_id=view.cart_id, checkout_id=checkout))
    writes = list(world.carts.writes)
    await world.run(handlers.release_cart, c.ReleaseCart(cart_id=view.cart_id, checkout_id=checkout))
    missing = new_id(CART)
    gone, _ = await world.run(handlers.release_cart, c.ReleaseCart(cart_id=missing, checkout_id=checkout))
    assert gone == c.CartReleased(cart_id=missing, checkout_id=checkout)
    assert world.carts.writes == writes


async def test_release_after_completion_leaves_the_order(world):
    view = await new_cart(world, OIL_2)
    checkout, order_id = new_id(CHECKOUT), new_id(ORDER)
    await world.run(handlers.freeze_cart, freeze(view, checkout))
    await world.run(handlers.complete_cart, c.CompleteCart(cart_id=view.cart_id, checkout_id=checkout,
                                                           order_id=order_id))
    await world.run(handlers.release_cart, c.ReleaseCart(cart_id=view.cart_id, checkout_id=checkout))
    cart = world.carts.rows[view.cart_id]
    assert (cart.status, cart.order_id) == (CartStatus.CHECKED_OUT, order_id)


# -- ProductUpsert ------------------------------------------------------------------------------------

async def test_upsert_product_then_lines_use_its_units(world):
    rec = ProductUpsert(sku="SUGAR-1KG", name="Sugar", base_uom="EA", units={"BAG": 10})
    reply, uow = await world.run(handlers.upsert_product, rec, reply_to=None)
    assert reply is None and uow.outbox.pending == []
    assert world.products.rows["SUGAR-1KG"] == Product("SUGAR-1KG", "EA", {"BAG": 10}, True)
    view = await new_cart(world, {"sku": "SUGAR-1KG", "order_uom": "BAG", "order_quantity": 2})
    assert view.lines[0].base_quantity == 20
    await world.run(handlers.upsert_product, ProductUpsert(sku="SUGAR-1KG", name="Sugar", base_uom="EA",
                                                           units={"BAG": 25}, active=False))
    assert world.products.rows["SUGAR-1KG"] == Product("SUGAR-1KG", "EA", {"BAG": 25}, False)
    await refused(world, handlers.add_line, c.AddLine(cart_id=view.cart_id, customer_id=CUS,
                                                      line_id=new_id(CART_LINE), sku="SUGAR-1KG", quantity=1),
                  "sku_unknown", "sku")
