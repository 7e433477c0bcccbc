"""Cart's repositories through real PostgreSQL with row-level security (the cart service's own database and role):
every method, and a row of tenant B is invisible and unwritable from tenant A's transaction.

    HARMON_TEST_SERVICES=cart python -m pytest tests/integration/test_cart_repository.py
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import pytest_asyncio

from libs.contracts.cart import CartStatus
from libs.contracts.ids import CART, CART_LINE, CHECKOUT, CUSTOMER, ORDER, TENANT, new_id
from libs.runtime.database import Database, Scope, Unscoped
from services.cart.domain import Cart, Line, Product, to_base_units
from services.cart.unit_of_work import CartUnitOfWork
from tests.conftest import until

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest_asyncio.fixture(loop_scope="session")
async def db(stack) -> AsyncIterator[Database]:
    database = Database(stack.dsns["cart"])
    await database.start()
    yield database
    await database.close()


@pytest.fixture
def a() -> Scope:
    return Scope(new_id(TENANT), False)


@pytest.fixture
def b() -> Scope:
    return Scope(new_id(TENANT), False)


async def work(db: Database, scope, fn):
    """Run `fn(uow)` in one transaction of `scope`, with the service's repositories."""
    async with db.transaction(scope) as tx:
        return await fn(CartUnitOfWork(tx.conn, tx.scope))


def a_line(sku: str = "OIL-1L", qty: int = 2, at: datetime = T0, **kw) -> Line:
    return Line.of(new_id(CART_LINE), sku, to_base_units("EA", {"CASE": 12}, quantity=qty, **kw), at)


async def made_cart(db: Database, scope: Scope, *lines: Line, customer_id: str | None = None) -> Cart:
    cart = Cart.new(new_id(CART), customer_id or new_id(CUSTOMER), T0)

    async def make(uow):
        assert await uow.carts.add(cart)
        current = cart
        for line in lines:
            current = replace(current, version=current.version + 1, lines=(*current.lines, line),
                              updated_at=line.created_at)
            assert await uow.carts.add_line(current, line)
        return current
    return await work(db, scope, make)


async def test_a_cart_and_its_lines_in_order(db, a):
    first = a_line("OIL-1L", 2, T0 + timedelta(seconds=2))
    second = a_line("RICE-1KG", at=T0 + timedelta(seconds=1), order_uom="CASE", order_quantity=3)
    cart = await made_cart(db, a, first, second)
    got = await work(db, a, lambda uow: uow.carts.get(cart.cart_id))
    assert got.lines == (second, first)  # by when they were added, whatever order they were written in
    assert (got.status, got.version, got.customer_id, got.frozen_by, got.order_id) == (
        CartStatus.OPEN, 3, cart.customer_id, None, None)
    assert got.created_at == T0 and got.updated_at == second.created_at  # the last written
    locked = await work(db, a, lambda uow: uow.carts.get_for_update(cart.cart_id))
    assert locked == got
    empty = await made_cart(db, a)
    assert (await work(db, a, lambda uow: uow.carts.get(empty.cart_id))).lines == ()
    assert await work(db, a, lambda uow: uow.carts.get(new_id(CART))) is None
    assert await work(db, a, lambda uow: uow.carts.get_for_update(new_id(CART))) is None


async def test_get_for_adding_brings_the_product(db, a):
    cart = await made_cart(db, a, a_line())
    await work(db, a, lambda uow: uow.products.upsert(Product("RICE-1KG", "EA", {"CASE": 12})))
    got, product = await work(db, a, lambda uow: uow.carts.get_for_adding(cart.cart_id, "RICE-1KG"))
    assert got == cart and product == Product("RICE-1KG", "EA", {"CASE": 12}, True)
    got, product = await work(db, a, lambda uow: uow.carts.get_for_adding(cart.cart_id, "NO-SUCH"))
    assert got == cart and product is None
    assert await work(db, a, lambda uow: uow.carts.get_for_adding(new_id(CART), "RICE-1KG")) == (None, None)


async def test_line_writes_store_the_cart_row_with_them(db, a):
    oil, rice = a_line("OIL-1L", 2), a_line("RICE-1KG", 1, T0 + timedelta(seconds=1))
    cart = await made_cart(db, a, oil, rice)
    at = T0 + timedelta(minutes=1)
    change = cart.change_line(rice.line_id, order_quantity=5, at=at)
    await work(db, a, lambda uow: uow.carts.change_line(change.cart, change.line))
    assert await work(db, a, lambda uow: uow.carts.get(cart.cart_id)) == change.cart
    removal = change.cart.remove_line(oil.line_id, at=at + timedelta(seconds=1))
    await work(db, a, lambda uow: uow.carts.remove_line(removal.cart, removal.line_id))
    got = await work(db, a, lambda uow: uow.carts.get(cart.cart_id))
    assert got == removal.cart and got.version == cart.version + 2 and [x.sku for x in got.lines] == ["RICE-1KG"]


async def test_status_changes_are_saved(db, a):
    cart = await made_cart(db, a, a_line())
    checkout, order_id = new_id(CHECKOUT), new_id(ORDER)
    frozen = cart.freeze(checkout, T0 + timedelta(seconds=5)).cart
    await work(db, a, lambda uow: uow.carts.save(frozen))
    assert await work(db, a, lambda uow: uow.carts.get(cart.cart_id)) == frozen
    done = frozen.complete(checkout, order_id, T0 + timedelta(seconds=6)).cart
    await work(db, a, lambda uow: uow.carts.save(done))
    got = await work(db, a, lambda uow: uow.carts.get(cart.cart_id))
    assert (got.status, got.order_id, got.frozen_by, got.version) == (CartStatus.CHECKED_OUT, order_id, checkout,
                                                                      cart.version + 2)


async def test_products_upsert_and_get(db, a, b):
    assert await work(db, a, lambda uow: uow.products.get("SUGAR")) is None
    await work(db, a, lambda uow: uow.products.upsert(Product("SUGAR", "EA", {"BAG": 10})))
    await work(db, b, lambda uow: uow.products.upsert(Product("SUGAR", "KG", {})))  # the same sku, another tenant
    await work(db, a, lambda uow: uow.products.upsert(Product("SUGAR", "EA", {"BAG": 25, "CASE": 100}, False)))
    assert await work(db, a, lambda uow: uow.products.get("SUGAR")) == Product("SUGAR", "EA", {"BAG": 25, "CASE": 100},
                                                                               False)
    assert await work(db, b, lambda uow: uow.products.get("SUGAR")) == Product("SUGAR", "KG", {}, True)


async def test_another_tenants_cart_is_invisible_and_unwritable(db, a, b):
    theirs = await made_cart(db, b, a_line())
    before = await work(db, b, lambda uow: uow.carts.get(theirs.cart_id))
    assert await work(db, a, lambda uow: uow.carts.get(theirs.cart_id)) is None
    assert await work(db, a, lambda uow: uow.carts.get_for_update(theirs.cart_id)) is None
    assert (await work(db, a, lambda uow: uow.carts.get_for_adding(theirs.cart_id, "OIL-1L"))) == (None, None)
    # the ids are global: A cannot take B's cart id or line id, and says so
    assert not await work(db, a, lambda uow: uow.carts.add(Cart.new(theirs.cart_id, new_id(CUSTOMER), T0)))
    mine = await made_cart(db, a)
    taken = Line.of(theirs.lines[0].line_id, "OIL-1L", to_base_units("EA", {}, quantity=9), T0)
    grown = replace(mine, version=2, lines=(taken,))
    assert not await work(db, a, lambda uow: uow.carts.add_line(grown, taken))
    assert await work(db, a, lambda uow: uow.carts.get(mine.cart_id)) == mine  # nothing written, version kept
    # writes aimed at B's rows from A's transaction change nothing
    forged = theirs.freeze(new_id(CHECKOUT), T0 + timedelta(hours=1))
    await work(db, a, lambda uow: uow.carts.save(forged.cart))
    changed = theirs.change_line(theirs.lines[0].line_id, quantity=99, at=T0 + timedelta(hours=1))
    await work(db, a, lambda uow: uow.carts.change_line(changed.cart, changed.line))
    removed = theirs.remove_line(theirs.lines[0].line_id, at=T0 + timedelta(hours=1))
    await work(db, a, lambda uow: uow.carts.remove_line(removed.cart, removed.line_id))
    assert await work(db, b, lambda uow: uow.carts.get(theirs.cart_id)) == before
    # and the other mode of the same tenant is another scope too
    assert await work(db, Scope(b.tenant_id, True), lambda uow: uow.carts.get(theirs.cart_id)) is None


async def test_another_tenants_product_is_invisible(db, a, b):
    await work(db, b, lambda uow: uow.products.upsert(Product("ONLY-B", "EA", {"CASE": 6})))
    assert await work(db, a, lambda uow: uow.products.get("ONLY-B")) is None
    cart = await made_cart(db, a)
    assert (await work(db, a, lambda uow: uow.carts.get_for_adding(cart.cart_id, "ONLY-B")))[1] is None


async def test_unscoped_sees_every_tenant_and_no_scope_sees_nothing(db, a, b):
    mine, theirs = await made_cart(db, a), await made_cart(db, b)
    async with db.transaction(Unscoped("test: reading two tenants' carts")) as tx:
        rows = await tx.conn.fetch("SELECT id, tenant_id FROM carts WHERE id = ANY($1::text[])",
                                   [mine.cart_id, theirs.cart_id])
    assert {(r["id"], r["tenant_id"]) for r in rows} == {(mine.cart_id, a.tenant_id), (theirs.cart_id, b.tenant_id)}
    async with db.pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="no tenant scope"):
            await conn.fetch("SELECT id FROM carts WHERE id = $1", mine.cart_id)


async def test_a_lock_waited_for_sees_the_lines_the_writer_committed(db, a):
    """READ COMMITTED re-checks only the locked cart row after the wait: the lines come from a fresh read."""
    oil = a_line("OIL-1L", 1)
    cart = await made_cart(db, a, oil)
    writer_ready, commit = asyncio.Event(), asyncio.Event()

    async def writer():
        async def write(uow):
            locked = await uow.carts.get_for_update(cart.cart_id)
            added = locked.add_line(new_id(CART_LINE), "RICE-1KG", Product("RICE-1KG", "EA"), quantity=4,
                                    at=T0 + timedelta(seconds=9))
            await uow.carts.add_line(added.cart, added.line)
            removed = added.cart.remove_line(oil.line_id, at=T0 + timedelta(seconds=10))
            await uow.carts.remove_line(removed.cart, removed.line_id)
            writer_ready.set()
            await commit.wait()
            return removed.cart
        return await work(db, a, write)

    async def waiting():
        async with db.pool.acquire() as conn:
            return await conn.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted") > 0

    writing = asyncio.create_task(writer())
    await writer_ready.wait()
    reading = asyncio.create_task(work(db, a, lambda uow: uow.carts.get_for_update(cart.cart_id)))
    reading_product = asyncio.create_task(work(db, a, lambda uow: uow.carts.get_for_adding(cart.cart_id, "X")))
    await until(waiting, timeout=5, message="the readers wait for the writer's lock")
    commit.set()
    written = await writing
    assert (await reading) == written and [x.sku for x in written.lines] == ["RICE-1KG"]
    assert (await reading_product)[0] == written
