"""The notifier's repository through real PostgreSQL with row-level security (the migrated notifier database).

    HARMON_TEST_SERVICES=notifier python -m pytest tests/integration/test_notifier_repository.py
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import pytest_asyncio

from libs.contracts.ids import new_id
from libs.runtime.database import Database, Scope
from services.notifier.domain import PublicEvent
from services.notifier.unit_of_work import NotifierUnitOfWork

OCCURRED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest_asyncio.fixture(loop_scope="session")
async def db(stack) -> AsyncIterator[Database]:
    database = Database(stack.dsns["notifier"], max_size=2)
    await database.start()
    try:
        yield database
    finally:
        await database.close()


async def within(db: Database, scope: Scope, work):
    async with db.transaction(scope) as tx:
        return await work(NotifierUnitOfWork(tx.conn, tx.scope))


def event(order_id: str, version: int = 1) -> PublicEvent:
    return PublicEvent.of("OrderConfirmed", order_id, version, {"order_id": order_id, "total": 26_400}, OCCURRED,
                          OCCURRED + timedelta(seconds=1))


async def test_events_are_recorded_once_and_only_in_their_own_tenant_and_mode(db):
    a, b = Scope(new_id("ten"), False), Scope(new_id("ten"), False)
    order_id = new_id("ord")
    first = event(order_id)
    assert await within(db, a, lambda uow: uow.events.record(first)) is True
    assert await within(db, a, lambda uow: uow.events.record(event(order_id))) is False  # the same version again
    assert await within(db, a, lambda uow: uow.events.record(event(order_id, 2))) is True
    # another tenant, and the other mode of the same tenant, have their own events of the same order id
    assert await within(db, b, lambda uow: uow.events.record(event(order_id))) is True
    assert await within(db, Scope(a.tenant_id, True), lambda uow: uow.events.record(event(order_id))) is True

    async def rows(uow: NotifierUnitOfWork) -> list:
        return await uow.conn.fetch("SELECT * FROM events WHERE aggregate_id = $1 ORDER BY aggregate_version",
                                    order_id)

    mine = await within(db, a, rows)
    assert [(r["tenant_id"], r["livemode"], r["aggregate_version"]) for r in mine] == [
        (a.tenant_id, False, 1), (a.tenant_id, False, 2)]  # tenant and mode came from the scope
    row = mine[0]
    assert (row["id"], row["type"], json.loads(row["data"])) == (first.id, "order.confirmed",
                                                                 {"order_id": order_id, "total": 26_400})
    assert (row["occurred_at"], row["received_at"]) == (OCCURRED, OCCURRED + timedelta(seconds=1))
    assert [r["tenant_id"] for r in await within(db, b, rows)] == [b.tenant_id]

    # A's transaction can neither change B's event nor write one in B's name
    async def touch(uow: NotifierUnitOfWork) -> str:
        return await uow.conn.execute("UPDATE events SET type = 'x' WHERE tenant_id = $1", b.tenant_id)

    assert await within(db, a, touch) == "UPDATE 0"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await within(db, a, lambda uow: uow.conn.execute(
            "INSERT INTO events (id, tenant_id, livemode, type, aggregate_id, aggregate_version, data, occurred_at,"
            " received_at) VALUES ($1, $2, false, 'order.confirmed', $3, 9, '{}', now(), now())",
            new_id("evt"), b.tenant_id, order_id))
    assert [r["type"] for r in await within(db, b, rows)] == ["order.confirmed"]


async def test_an_order_and_its_invoices_are_separate_streams_each_version_once(db):
    """An invoice's versions are its own (invoices.events.v1): invoice.issued and invoice.paid of one invoice, and
    the order's events at the same version numbers, are each a row; a re-sent one is not."""
    scope = Scope(new_id("ten"), False)
    order_id, invoice_id = new_id("ord"), new_id("inv")
    at, later = OCCURRED, OCCURRED + timedelta(seconds=1)
    recorded = [
        PublicEvent.of("OrderConfirmed", order_id, 1, {"status": "confirmed"}, at, later),
        PublicEvent.of("OrderFulfilled", order_id, 2, {"status": "fulfilled"}, at, later),
        PublicEvent.of("InvoiceIssued", invoice_id, 1, {"status": "open"}, at, later),
        PublicEvent.of("InvoicePaid", invoice_id, 2, {"status": "paid"}, at, later),
    ]
    for event_ in recorded:
        assert await within(db, scope, lambda uow, e=event_: uow.events.record(e)) is True
    again = PublicEvent.of("InvoicePaid", invoice_id, 2, {"status": "paid"}, at, later)
    assert await within(db, scope, lambda uow: uow.events.record(again)) is False

    rows = await within(db, scope, lambda uow: uow.conn.fetch(
        "SELECT type, aggregate_id, aggregate_version FROM events ORDER BY aggregate_id, aggregate_version"))
    assert sorted((r["aggregate_id"], r["aggregate_version"], r["type"]) for r in rows) == sorted([
        (order_id, 1, "order.confirmed"), (order_id, 2, "order.fulfilled"),
        (invoice_id, 1, "invoice.issued"), (invoice_id, 2, "invoice.paid")])
