"""Pricing's repositories through real PostgreSQL with row-level security (the migrated pricing database).

Each repository method is tried as the handlers call it, in a transaction scoped to one tenant and mode
(libs/runtime/database.py), and a row of another tenant or mode is neither seen nor written from it.

    HARMON_TEST_SERVICES=pricing python -m pytest tests/integration/test_pricing_repository.py
"""
from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from libs.contracts.ids import new_id
from libs.contracts.money import TaxCategory
from libs.runtime.database import Database, Scope
from services.pricing.domain import PriceBook
from services.pricing.unit_of_work import PricingUnitOfWork

CUSTOMER, OTHER = "cus_A", "cus_B"


@pytest_asyncio.fixture(loop_scope="session")
async def db(stack) -> AsyncIterator[Database]:
    database = Database(stack.dsns["pricing"], max_size=2)
    await database.start()
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def a() -> Scope:
    return Scope(new_id("ten"), False)


@pytest.fixture
def b() -> Scope:
    return Scope(new_id("ten"), False)


async def within(db: Database, scope: Scope, work):
    """`work(uow)` in one transaction scoped to `scope`, as the dispatcher runs a handler."""
    async with db.transaction(scope) as tx:
        return await work(PricingUnitOfWork(tx.conn, tx.scope))


async def catalog(uow: PricingUnitOfWork, rice_name: str = "Rice 1 kg") -> None:
    await uow.products.upsert("RICE", rice_name, "EA", {"CS": 24}, TaxCategory.ZERO_RATED, True)
    await uow.products.upsert("SOAP", "Soap", "EA", {}, TaxCategory.STANDARD, True)
    await uow.products.upsert("OLD", "Discontinued", "EA", {}, TaxCategory.STANDARD, False)
    for price_id, sku, customer_id, price_list_id, amount, min_quantity in [
        ("rice-list", "RICE", None, None, 1_250, 1),
        ("rice-wholesale", "RICE", None, "wholesale", 1_180, 1),
        ("rice-cus-a-24", "RICE", CUSTOMER, None, 1_100, 24),
        ("rice-cus-b", "RICE", OTHER, None, 1, 1),
        ("soap-list", "SOAP", None, None, 1_003, 1),
        ("soap-retail", "SOAP", None, "retail", 2, 1),
        ("old-list", "OLD", None, None, 100, 1),
    ]:
        await uow.prices.upsert(price_id, sku, customer_id, price_list_id, amount, "JMD", min_quantity, True)
    await uow.prices.upsert("soap-gone", "SOAP", None, None, 1, "JMD", 1, False)
    await uow.customers.upsert(CUSTOMER, "wholesale")
    await uow.customers.upsert(OTHER, None)


def price_ids(book: PriceBook) -> dict[str, list[str]]:
    return {sku: [c.price_id for c in p.prices] for sku, p in book.products.items()}


async def test_the_price_book_holds_the_active_products_and_the_prices_that_could_apply(db, a):
    await within(db, a, catalog)
    book = await within(db, a, lambda uow: uow.products.price_book(["SOAP", "RICE", "OLD", "NOPE", "RICE"], CUSTOMER))
    assert (book.customer_id, book.price_list_id) == (CUSTOMER, "wholesale")
    assert list(book.products) == ["RICE", "SOAP"]  # in sku order; OLD is inactive, NOPE unknown
    # its own price, its list's and the list prices; not another customer's, another list's or an inactive one
    assert price_ids(book) == {"RICE": ["rice-cus-a-24", "rice-list", "rice-wholesale"], "SOAP": ["soap-list"]}
    rice = book.products["RICE"]
    assert (rice.name, rice.base_uom, rice.units, rice.tax_category) == ("Rice 1 kg", "EA", {"CS": 24},
                                                                         TaxCategory.ZERO_RATED)
    own = rice.prices[0]
    assert (own.unit_amount, own.currency, own.customer_id, own.price_list_id, own.min_quantity, own.active) == (
        1_100, "JMD", CUSTOMER, None, 24, True)
    assert book.unit_price("RICE") == (1_180, "price_list", "JMD")

    other = await within(db, a, lambda uow: uow.products.price_book(["RICE"], OTHER))
    assert (other.price_list_id, price_ids(other)) == (None, {"RICE": ["rice-cus-b", "rice-list"]})
    anyone = await within(db, a, lambda uow: uow.products.price_book(["RICE", "SOAP"], None))
    assert price_ids(anyone) == {"RICE": ["rice-list"], "SOAP": ["soap-list"]}
    none = await within(db, a, lambda uow: uow.products.price_book([], CUSTOMER))
    assert none.products == {}


async def test_a_cart_is_priced_in_one_statement_whatever_its_lines(db, a):
    await within(db, a, catalog)
    statements: list[str] = []

    def logged(query) -> None:
        statements.append(query.query)

    async def book(uow: PricingUnitOfWork) -> PriceBook:
        uow.conn.add_query_logger(logged)
        try:
            return await uow.products.price_book(["RICE", "SOAP", "OLD", "NOPE"], CUSTOMER)
        finally:
            uow.conn.remove_query_logger(logged)

    found = await within(db, a, book)
    assert list(found.products) == ["RICE", "SOAP"]
    assert len(statements) == 1, statements


async def test_a_record_again_replaces_the_row_and_the_same_record_changes_nothing(db, a):
    await within(db, a, catalog)

    async def change(uow: PricingUnitOfWork) -> None:
        await uow.products.upsert("RICE", "Rice 2 kg", "BAG", {"PAL": 40}, TaxCategory.STANDARD, True)
        await uow.products.upsert("SOAP", "Soap", "EA", {}, TaxCategory.STANDARD, False)
        await uow.prices.upsert("rice-list", "RICE", None, None, 1_300, "USD", 2, True)
        await uow.prices.upsert("rice-wholesale", "RICE", None, "wholesale", 1_180, "JMD", 1, False)
        await uow.customers.upsert(CUSTOMER, "retail")

    await within(db, a, change)
    before = await within(db, a, lambda uow: uow.products.price_book(["RICE", "SOAP"], CUSTOMER))
    await within(db, a, change)  # a replay of the same records
    after = await within(db, a, lambda uow: uow.products.price_book(["RICE", "SOAP"], CUSTOMER))
    assert before == after
    rice = after.products["RICE"]
    assert (rice.name, rice.base_uom, rice.units, rice.tax_category) == ("Rice 2 kg", "BAG", {"PAL": 40},
                                                                         TaxCategory.STANDARD)
    assert list(after.products) == ["RICE"]  # SOAP went inactive
    assert after.price_list_id == "retail"
    assert [(c.price_id, c.unit_amount, c.currency, c.min_quantity) for c in rice.prices] == [
        ("rice-cus-a-24", 1_100, "JMD", 24), ("rice-list", 1_300, "USD", 2)]  # the wholesale price went inactive


async def test_the_catalog_pages_by_sku(db, a):
    async def many(uow: PricingUnitOfWork) -> None:
        await catalog(uow)
        for sku in ("A1", "B2", "C3"):
            await uow.products.upsert(sku, sku, "EA", {}, TaxCategory.STANDARD, True)

    await within(db, a, many)
    first, more = await within(db, a, lambda uow: uow.products.page(CUSTOMER, None, 2))
    assert (list(first.products), more) == (["A1", "B2"], True)
    assert [p.prices for p in first.products.values()] == [(), ()]  # no price yet
    rest, more = await within(db, a, lambda uow: uow.products.page(CUSTOMER, "B2", 3))
    assert (list(rest.products), more) == (["C3", "RICE", "SOAP"], False)  # OLD is inactive
    assert (rest.price_list_id, price_ids(rest)["RICE"]) == ("wholesale", ["rice-cus-a-24", "rice-list",
                                                                            "rice-wholesale"])
    exact, more = await within(db, a, lambda uow: uow.products.page(None, None, 5))
    assert (list(exact.products), more) == (["A1", "B2", "C3", "RICE", "SOAP"], False)
    past, more = await within(db, a, lambda uow: uow.products.page(None, "SOAP", 5))
    assert (past.products, more) == ({}, False)


async def test_another_tenants_or_modes_rows_are_neither_seen_nor_written(db, a, b):
    await within(db, a, catalog)
    await within(db, b, lambda uow: catalog(uow, rice_name="B's rice"))

    async def b_only(uow: PricingUnitOfWork) -> None:
        await uow.products.upsert("B-ONLY", "Mine", "EA", {}, TaxCategory.STANDARD, True)
        await uow.prices.upsert("b-only-list", "B-ONLY", None, None, 5, "JMD", 1, True)
        await uow.prices.upsert("rice-b-extra", "RICE", None, None, 7, "JMD", 1, True)
        await uow.customers.upsert(CUSTOMER, "b-list")

    await within(db, b, b_only)
    mine = await within(db, a, lambda uow: uow.products.price_book(["RICE", "B-ONLY"], CUSTOMER))
    assert (list(mine.products), mine.products["RICE"].name, mine.price_list_id) == (["RICE"], "Rice 1 kg",
                                                                                      "wholesale")
    assert price_ids(mine)["RICE"] == ["rice-cus-a-24", "rice-list", "rice-wholesale"]
    page, _ = await within(db, a, lambda uow: uow.products.page(None, None, 100))
    assert list(page.products) == ["RICE", "SOAP"]

    # A's records with B's keys make A's rows; B's stay as they were
    async def a_writes(uow: PricingUnitOfWork) -> None:
        await uow.products.upsert("B-ONLY", "A's now", "EA", {}, TaxCategory.EXEMPT, True)
        await uow.prices.upsert("b-only-list", "B-ONLY", None, None, 9, "JMD", 1, True)
        await uow.customers.upsert(CUSTOMER, None)

    await within(db, a, a_writes)
    theirs = await within(db, b, lambda uow: uow.products.price_book(["RICE", "B-ONLY"], CUSTOMER))
    assert (theirs.products["B-ONLY"].name, theirs.products["RICE"].name, theirs.price_list_id) == (
        "Mine", "B's rice", "b-list")
    assert [c.unit_amount for c in theirs.products["B-ONLY"].prices] == [5]

    # the other mode of the same tenant is another scope
    live = Scope(a.tenant_id, True)
    assert (await within(db, live, lambda uow: uow.products.price_book(["RICE"], CUSTOMER))).products == {}

    # and below the repositories: no statement of A's reaches B's rows, nor can write one
    async def raw(uow: PricingUnitOfWork) -> None:
        conn = uow.conn
        assert await conn.fetchval("SELECT count(*) FROM products WHERE name = 'Mine'") == 0
        assert await conn.execute("UPDATE products SET name = 'taken' WHERE name = 'B''s rice'") == "UPDATE 0"
        assert await conn.execute("DELETE FROM prices WHERE price_id = 'rice-b-extra'") == "DELETE 0"
        assert await conn.fetchval("SELECT count(DISTINCT tenant_id) FROM customers") == 1

    await within(db, a, raw)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await within(db, a, lambda uow: uow.conn.execute(
            "INSERT INTO customers (tenant_id, livemode, customer_id) VALUES ($1, false, 'cus_X')", b.tenant_id))
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await within(db, a, lambda uow: uow.conn.execute(
            "UPDATE products SET tenant_id = $1 WHERE sku = 'RICE'", b.tenant_id))
    theirs_after = await within(db, b, lambda uow: uow.products.price_book(["RICE"], CUSTOMER))
    assert theirs_after.products["RICE"].name == "B's rice"
