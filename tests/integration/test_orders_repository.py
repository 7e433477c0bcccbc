"""Orders' repositories through real PostgreSQL with row-level security (services/orders/repository.py):
each method works and round-trips the domain objects exactly, and a row of tenant B can be neither seen nor
written from tenant A's transaction.

    HARMON_TEST_SERVICES=orders python -m pytest tests/integration/test_orders_repository.py
"""

import asyncio
import json
from dataclasses import replace
from types import SimpleNamespace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import pytest_asyncio
from alembic import command

from libs.contracts.base import Failure
from libs.contracts.credit import CreditReserved
from libs.contracts.ids import new_id
from libs.runtime.database import Database, Scope, Unscoped
from libs.runtime.migrations import alembic_config
from services.orders.main import MIGRATIONS
from services.orders import entrypoint
from services.orders.domain import Asker, CheckoutSaga, CheckoutState, Customer, Placing
from services.orders.repository import Checkouts, Customers, Invoices, Orders, Payments
from services.orders.unit_of_work import OrdersUnitOfWork
from tests.unit.test_checkout_saga import FROZEN, TOTALS, place_cmd, priced, rejected

S = CheckoutState
CART, CUSTOMER, PARENT = "cart_1", "cus_buyer", "cus_parent"
# deadlines far ahead: the running orders service's sweeper must leave these rows alone
LATER = timedelta(hours=1)
TEST = Unscoped("test: rows of this test's tenants")


@pytest_asyncio.fixture(loop_scope="session")
async def db(stack):
    database = Database(stack.dsns["orders"], max_size=3)
    await database.start()
    yield database
    await database.close()


@pytest.fixture
def tenants() -> tuple[Scope, Scope]:
    return Scope(new_id("ten"), False), Scope(new_id("ten"), False)


def saga() -> CheckoutSaga:
    return CheckoutSaga(timedelta(seconds=5))


async def _cleanup(db: Database, *scopes: Scope) -> None:
    async with db.transaction(TEST) as tx:
        for scope in scopes:
            for table in ("order_lines", "orders", "checkouts", "customers"):
                await tx.conn.execute(f"DELETE FROM {table} WHERE tenant_id = $1", scope.tenant_id)


async def test_each_method_round_trips_a_checkout_through_the_saga(db, tenants):
    a, _ = tenants
    now = datetime.now(UTC) + LATER
    s = saga()
    try:
        async with db.transaction(a) as tx:
            await Customers(tx.conn).upsert(Customer(CUSTOMER, "cus_old", "cod"))
            await Customers(tx.conn).upsert(Customer(CUSTOMER, PARENT, "net_30"))  # the newest record wins
            found = await Checkouts(tx.conn).for_placing("key_1", CART, CUSTOMER)
            assert found == Placing(customer=Customer(CUSTOMER, PARENT, "net_30"))
            step = s.place(place_cmd(), Asker("gateway.replies.1", "corr_1", "req_1"), found, now)
            await Checkouts(tx.conn).add(step.state, now)

        async with db.transaction(a) as tx:
            checkouts = Checkouts(tx.conn)
            found = await checkouts.for_placing("key_1", CART, CUSTOMER)
            assert found.checkout == step.state  # every field, the deadline to the microsecond
            assert (found.cart_held, found.cart_order_id) == (True, None)
            assert (await checkouts.for_placing(None, CART, CUSTOMER)).checkout is None
            co = await checkouts.get_for_update(step.state.checkout_id)
            assert co == step.state and co.bill_to_id == PARENT
            waiting = s.on(co, priced(), attempt=1, now=now).state
            await checkouts.save(waiting, now)
        async with db.transaction(a) as tx:
            loaded = await Checkouts(tx.conn).get_for_update(co.checkout_id)
            assert loaded == waiting and loaded.state is S.AWAITING_CREDIT
            assert loaded.priced.lines == FROZEN and loaded.priced.priced == TOTALS

        done = s.on(loaded, _reserved(co), attempt=1, now=now)
        async with db.transaction(a) as tx:
            number = await Orders(tx.conn).add(done.order, co.checkout_id, None)  # the order, its lines, its number: one statement
            done = saga().numbered(done, number)
            await Checkouts(tx.conn).save(done.state, now)
        async with db.transaction(a) as tx:
            orders = Orders(tx.conn)
            assert await orders.get(done.order.order_id) == done.order
            assert await orders.page(CUSTOMER, None, 10) == ([done.order], False)
            assert await orders.page(CUSTOMER, done.order.order_id, 10) == ([], False)
            final = await Checkouts(tx.conn).get_for_update(co.checkout_id)
            assert final == done.state and final.result == done.order
            again = await Checkouts(tx.conn).for_placing("key_2", CART, CUSTOMER)
            assert (again.checkout, again.cart_order_id, again.cart_held) == (None, done.order.order_id, False)
            lines = await tx.conn.fetch("SELECT position, sku FROM order_lines WHERE order_id = $1 ORDER BY position",
                                        done.order.order_id)
            assert [(r["position"], r["sku"]) for r in lines] == [(1, "RICE"), (2, "OIL")]
    finally:
        await _cleanup(db, a)


async def test_the_sweeper_queries_see_every_tenant_and_save_all_writes_them(db, tenants):
    a, b = tenants
    now = datetime.now(UTC) + LATER
    s = saga()
    made = {}
    try:
        for scope in (a, b):
            async with db.transaction(scope) as tx:
                step = s.place(place_cmd(), Asker(None, None, None), Placing(), now)
                await Checkouts(tx.conn).add(step.state, now)
                made[scope] = step.state
        async with db.transaction(TEST) as tx:
            checkouts = Checkouts(tx.conn)
            overdue = [(sc, co) for sc, co in await checkouts.overdue(now + timedelta(seconds=6), 100) if sc in made]
            assert sorted(overdue, key=lambda r: r[0].tenant_id) == sorted(made.items(), key=lambda r: r[0].tenant_id)
            assert [r for r in await checkouts.overdue(now, 100) if r[0] in made] == []  # not yet past the deadline
            active = await checkouts.active("", 1000)
            assert {sc for sc, _ in active} >= {a, b}
            first = min(co.checkout_id for co in made.values())
            assert all(co.checkout_id > first for _, co in await checkouts.active(first, 1000))
            expired = [s.expire(co, now + timedelta(seconds=6)).state for co in made.values()]
            await checkouts.save_all(expired, now)
        for scope in (a, b):
            async with db.transaction(scope) as tx:
                co = await Checkouts(tx.conn).get_for_update(made[scope].checkout_id)
                assert co.state is S.EXPIRED
    finally:
        await _cleanup(db, a, b)


async def test_another_tenants_rows_are_invisible_and_unwritable(db, tenants):
    a, b = tenants
    now = datetime.now(UTC) + LATER
    s = saga()
    try:
        async with db.transaction(b) as tx:
            await Customers(tx.conn).upsert(Customer(CUSTOMER, "cus_b_parent", "net_60"))
            theirs = s.place(place_cmd(), Asker(None, None, None), Placing(), now).state
            await Checkouts(tx.conn).add(theirs, now)
            refused = s.on(theirs, rejected(theirs.reservation_id), attempt=1, now=now).state
            confirmed_b = s.on(s.on(theirs, priced(), attempt=1, now=now).state, _reserved(theirs), attempt=1,
                               now=now)
            confirmed_b = saga().numbered(confirmed_b, await Orders(tx.conn).add(confirmed_b.order, theirs.checkout_id, None))

        async with db.transaction(a) as tx:
            checkouts, orders = Checkouts(tx.conn), Orders(tx.conn)
            # B's key, cart, customer, checkout and order: none of them there for A
            assert await checkouts.for_placing("key_1", CART, CUSTOMER) == Placing()
            assert await checkouts.get_for_update(theirs.checkout_id) is None
            assert await orders.get(confirmed_b.order.order_id) is None
            assert await orders.page(CUSTOMER, None, 10) == ([], False)
            # writes by B's ids change nothing of B's
            await checkouts.save(refused, now)
            await checkouts.delete(theirs.checkout_id)
            # the same key and cart are A's own: uniqueness is per tenant and mode
            mine = s.place(place_cmd(), Asker(None, None, None), Placing(), now).state
            await checkouts.add(mine, now)
            await Customers(tx.conn).upsert(Customer(CUSTOMER, PARENT, "net_30"))
        with pytest.raises(asyncpg.UniqueViolationError):  # a checkout id is global: A cannot take B's
            async with db.transaction(a) as tx:
                await Checkouts(tx.conn).add(replace(mine, checkout_id=theirs.checkout_id, idempotency_key="key_9",
                                                     cart_id="cart_9"), now)

        async with db.transaction(b) as tx:
            found = await Checkouts(tx.conn).for_placing("key_1", CART, CUSTOMER)
            assert found.checkout == theirs and found.customer == Customer(CUSTOMER, "cus_b_parent", "net_60")
            assert found.cart_order_id == confirmed_b.order.order_id
            assert await Orders(tx.conn).get(confirmed_b.order.order_id) == confirmed_b.order

        with pytest.raises(asyncpg.UniqueViolationError):  # a second checkout with A's key: a lost race
            async with db.transaction(a) as tx:
                await Checkouts(tx.conn).add(s.place(place_cmd(), Asker(None, None, None), Placing(), now).state, now)
    finally:
        await _cleanup(db, a, b)


async def test_a_transaction_bound_to_no_tenant_fails_closed(db, tenants):
    """Not scoped, a statement that reaches a row fails (the policy's scope is evaluated when a row is checked:
    one that finds no row at all answers nothing), and an insert fails (tenant_id defaults to the scope)."""
    a, _ = tenants
    now = datetime.now(UTC) + LATER
    co = saga().place(place_cmd(), Asker(None, None, None), Placing(), now).state
    try:
        async with db.transaction(a) as tx:
            await Checkouts(tx.conn).add(co, now)
        async with db.pool.acquire() as conn:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await Checkouts(conn).get_for_update(co.checkout_id)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await Customers(conn).upsert(Customer(CUSTOMER, PARENT, "cod"))
    finally:
        await _cleanup(db, a)


def _reserved(co) -> CreditReserved:
    return CreditReserved(reservation_id=co.reservation_id, bill_to_id=co.bill_to_id, amount=TOTALS.total,
                          limit=10**9, exposure=TOTALS.total, available=10**9 - TOTALS.total, currency="JMD")


async def test_migration_0005_carries_checkouts_of_the_three_step_saga_over_and_back(stack):
    """Rows as the three-step saga left them (bill-to, terms and reservation only set from pricing on; 'pricing'
    waiting for LinesPriced) load as checkouts of the new saga after 0005; downgrading and upgrading again works."""
    name = f"orders_mig_{new_id('d').lower()[2:12]}"
    dsn = await stack._pg.ensure_database(name, name, "pw-" + name)

    def upgrade(revision: str):
        return asyncio.to_thread(command.upgrade, alembic_config(MIGRATIONS, dsn), revision)
    await upgrade("0004")
    t, now = new_id("ten"), datetime.now(UTC)
    lines = json.dumps([x.model_dump(mode="json") for x in FROZEN])
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO customers VALUES ($1, false, $2, $3, 'net_30')", t, CUSTOMER, PARENT)
        insert = """INSERT INTO checkouts (id, tenant_id, livemode, cart_id, customer_id, state, attempt, bill_to_id,
                        terms, reservation_id, frozen_lines, priced, order_id, result, step_deadline, created_at,
                        updated_at)
                    VALUES ($1, $2, false, $3, $4, $5, 1, $6, $7, $8, $9::json, $10::json, $11, $12::json,
                            $13, $13, $13)"""
        chk = {state: new_id("chk") for state in ("pricing", "reserving", "failed", "freezing")}
        await conn.execute(insert, chk["pricing"], t, "cart_1", CUSTOMER, "pricing", None, None, None, lines, None,
                           None, None, now)
        await conn.execute(insert, chk["reserving"], t, "cart_2", CUSTOMER, "reserving", PARENT, "net_30", "res_2",
                           lines, TOTALS.model_dump_json(), None, None, now)
        result = Failure(code="sku_unknown", message="no sku").model_dump_json()
        await conn.execute(insert, chk["failed"], t, "cart_3", CUSTOMER, "failed", PARENT, "net_30", None,
                           lines, None, None, result, now)
        await conn.execute(insert, chk["freezing"], t, "cart_4", "cus_unknown", "freezing", None, None, None, None,
                           None, None, None, now)
    finally:
        await conn.close()

    await upgrade("head")
    db = Database(dsn, max_size=1)
    try:
        async with db.transaction(Scope(t, False)) as tx:
            got = {state: await Checkouts(tx.conn).get_for_update(id_) for state, id_ in chk.items()}
        waiting = got["pricing"]
        assert (waiting.state, waiting.priced, waiting.bill_to_id, waiting.terms) == (S.AWAITING, None, PARENT,
                                                                                       "net_30")
        assert waiting.reservation_id.startswith("res_") and waiting.reservation_id.endswith("a1")
        assert saga().resume(waiting, now).send[0].payload.then.reservation_id == waiting.reservation_id
        assert (got["reserving"].state, got["reserving"].priced.priced, got["reserving"].reservation_id) == (
            S.AWAITING_CREDIT, TOTALS, "res_2")
        assert got["failed"].state is S.FAILED and got["failed"].result.code == "sku_unknown"
        assert (got["freezing"].bill_to_id, got["freezing"].terms) == ("cus_unknown", "cod")
    finally:
        await db.close()
    await asyncio.to_thread(command.downgrade, alembic_config(MIGRATIONS, dsn), "0004")
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM checkouts") == 4  # no scope needed: no row security
    finally:
        await conn.close()
    await upgrade("head")


class _Published:
    """The part of the runtime's outbox the jobs use: rows handed over after their commit."""

    def __init__(self):
        self.rows = []

    async def publish_committed(self, rows) -> None:
        self.rows += rows


async def test_the_sweeper_and_the_resume_write_each_tenants_outbox_rows(db, tenants):
    """entrypoint.expire_overdue / resume_checkouts: Unscoped transactions in batches whose outbox rows name
    their tenant (the scope `*` has no default), committed before they are published."""
    a, b = tenants
    now = datetime.now(UTC) + LATER
    s = saga()
    made = {}
    for scope in (a, b):
        async with db.transaction(scope) as tx:
            co = s.place(place_cmd(), Asker("gateway.replies.1", f"corr-{scope.tenant_id}", None), Placing(),
                         now).state
            await Checkouts(tx.conn).add(co, now)
            made[co.checkout_id] = scope
    def factory(conn, scope, incoming=None, **kw) -> OrdersUnitOfWork:
        uow = OrdersUnitOfWork(conn, scope, incoming, **kw)
        uow.saga = s
        return uow

    def at(clock: datetime) -> SimpleNamespace:
        """The jobs' context, its clock at `clock`."""
        return SimpleNamespace(db=db, outbox=_Published(), settings=None,
                               unit_of_work=lambda conn, scope, incoming=None, **kw: factory(
                                   conn, scope, incoming, now=clock, **kw))

    # the running service's own sweeper leaves these alone (their deadlines are an hour ahead); these jobs' clocks
    # are further on
    try:
        ctx = at(now + LATER)
        assert await entrypoint.resume_checkouts(ctx, batch=1) >= 2  # a page of one at a time
        resent = [m for m in ctx.outbox.rows if m.key == CART and m.tenant_id in {a.tenant_id, b.tenant_id}]
        assert {m.tenant_id for m in resent} == {a.tenant_id, b.tenant_id}
        await entrypoint.expire_overdue(at(now + LATER), batch=1)
        async with db.transaction(TEST) as tx:  # the resume moved their deadlines on
            states = await tx.conn.fetch("SELECT state FROM checkouts WHERE id = ANY($1::text[])", list(made))
        assert {r["state"] for r in states} == {"freezing"}
        assert await entrypoint.expire_overdue(at(now + 2 * LATER), batch=1) >= 2
        async with db.transaction(TEST) as tx:
            rows = await tx.conn.fetch("SELECT tenant_id, topic, key FROM outbox WHERE tenant_id = ANY($1::text[])",
                                       [a.tenant_id, b.tenant_id])
            states = await tx.conn.fetch("SELECT id, state FROM checkouts WHERE id = ANY($1::text[])", list(made))
        assert {r["state"] for r in states} == {"expired"}
        for scope in (a, b):  # FreezeCart again, then ReleaseCart, ReleaseCredit and the 504 to the asker
            assert sorted(r["topic"] for r in rows if r["tenant_id"] == scope.tenant_id) == sorted(
                ["cart.commands.v1", "cart.commands.v1", "credit.commands.v1", "gateway.replies.1"])
    finally:
        await _cleanup(db, a, b)
        async with db.transaction(TEST) as tx:
            await tx.conn.execute("DELETE FROM outbox WHERE tenant_id = ANY($1::text[])", [a.tenant_id, b.tenant_id])


# ---- the lifecycle: order numbers, the order aggregate, invoices, payments, counters ---------------------------

LIFECYCLE_TABLES = ("invoices", "payments", "counters", "order_lines", "orders", "checkouts", "customers")


async def _cleanup_lifecycle(db: Database, *scopes: Scope) -> None:
    async with db.transaction(TEST) as tx:
        for table in LIFECYCLE_TABLES:
            await tx.conn.execute(f"DELETE FROM {table} WHERE tenant_id = ANY($1::text[])",
                                  [s.tenant_id for s in scopes])


def _confirmed_order(prefix: str | None = None):
    """A confirmed order as the saga makes it (a new id and cart each time), and its checkout."""
    s = saga()
    now = datetime.now(UTC)
    co = s.place(place_cmd().model_copy(update={"order_prefix": prefix}), Asker(None, None, None), Placing(),
                 now).state
    done = s.on(s.on(co, priced(), attempt=1, now=now).state, _reserved(co), attempt=1, now=now)
    order = done.order.model_copy(update={"order_id": new_id("ord"), "cart_id": new_id("cart"), "terms": "net_30"})
    return order, co


async def test_orders_are_numbered_per_tenant_and_mode_and_the_aggregate_round_trips(db, tenants):
    from libs.contracts.erp import FulfilmentRecorded
    from services.orders.invoicing import invoice_for, invoice_number
    from services.orders.repository import Counters

    a, b = tenants
    a_live = Scope(a.tenant_id, True)
    try:
        numbers = {}
        for scope, prefix in ((a, "ACME"), (a, "ACME"), (a_live, "ACME"), (b, None)):
            order, co = _confirmed_order(prefix)
            async with db.transaction(scope) as tx:
                number = await Orders(tx.conn).add(order, co.checkout_id, co.order_prefix)
            numbers.setdefault(scope, []).append((order, number))
        assert [n for _, n in numbers[a]] == ["ACME-000001", "ACME-000002"]
        assert [n for _, n in numbers[a_live]] == ["ACME-000001"]  # the live mode counts on its own
        assert [n for _, n in numbers[b]] == ["ORD-000001"]

        (order, number), _ = numbers[a]
        async with db.transaction(a) as tx:
            orders = Orders(tx.conn)
            loaded = await orders.get_for_update(order.order_id)
            assert loaded.view == order.model_copy(update={"order_number": number})
            assert (loaded.version, loaded.prefix, loaded.digests) == (1, "ACME", {})
            assert loaded.view.reservation_id == order.reservation_id and loaded.view.status_transitions
            assert (await orders.page(CUSTOMER, None, 10, number))[0] == [loaded.view]
            line = order.lines[0]
            record = FulfilmentRecorded(fulfilment_id="f1", order_id=order.order_id, shipped_at=datetime.now(UTC),
                                        lines=[{"line_id": line.line_id, "quantity": 5}])
            change = loaded.fulfil(record, new_id("inv"))
            await orders.save(change.order)
            n = await Counters(tx.conn).take("invoice")
            inv = invoice_for(loaded, change.fulfilment, invoice_number(loaded.prefix, n))
            await Invoices(tx.conn).add(inv)
        async with db.transaction(a) as tx:
            again = await Orders(tx.conn).get_for_update(order.order_id)
            assert again == change.order  # status, version, lines shipped, invoiced sums, fulfilments, digests
            assert await Orders(tx.conn).get(order.order_id) == change.order.view
            assert await Invoices(tx.conn).get(inv.invoice_id) == inv
            assert inv.view.invoice_number == "ACME-INV-000001"
            assert await Counters(tx.conn).take("invoice") == 2
        async with db.transaction(b) as tx:  # B sees none of A's, and its counters are its own
            assert await Orders(tx.conn).get_for_update(order.order_id) is None
            assert await Invoices(tx.conn).get(inv.invoice_id) is None
            assert await Counters(tx.conn).take("invoice") == 1
    finally:
        await _cleanup_lifecycle(db, a, a_live, b)


async def test_invoices_and_payments_round_trip_and_are_scoped(db, tenants):
    from services.orders.invoicing import Payment

    a, b = tenants
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        made = {}
        for scope in (a, b):
            order, co = _confirmed_order()
            async with db.transaction(scope) as tx:
                await Orders(tx.conn).add(order, co.checkout_id, None)
                loaded = await Orders(tx.conn).get_for_update(order.order_id)
                invs = []
                for i, (fid, q) in enumerate((("f1", 4), ("f2", 20))):
                    from libs.contracts.erp import FulfilmentRecorded
                    from services.orders.invoicing import invoice_for, invoice_number
                    rec = FulfilmentRecorded(fulfilment_id=fid, order_id=order.order_id,
                                             shipped_at=now + LATER + timedelta(days=i),
                                             lines=[{"line_id": order.lines[0].line_id, "quantity": q}])
                    change = loaded.fulfil(rec, new_id("inv"))
                    invs.append(invoice_for(loaded, change.fulfilment, invoice_number("ORD", i + 1)))
                    loaded = change.order
                    await Invoices(tx.conn).add(invs[-1])
                await Orders(tx.conn).save(loaded)
                pay = Payment(f"pay_{scope.tenant_id}", order.bill_to_id, 1_000, "JMD", now, 600, "digest")
                await Payments(tx.conn).add(pay, now)
            made[scope] = (order, invs, pay)

        order, (first, second), pay = made[a]
        async with db.transaction(a) as tx:
            invoices, payments = Invoices(tx.conn), Payments(tx.conn)
            assert await invoices.of_order_for_update(order.order_id) == [first, second]
            assert await invoices.for_payment(order.bill_to_id, None) == [first, second]  # oldest due first
            assert await invoices.for_payment(order.bill_to_id, second.invoice_id) == [second]
            assert await invoices.for_payment("cus_other", second.invoice_id) == []  # not this account's
            assert await invoices.page(CUSTOMER, None, 1) == ([second], True)
            assert await invoices.page(CUSTOMER, second.invoice_id, 10, "open", order.order_id) == ([first], False)
            assert await invoices.page(CUSTOMER, None, 10, "paid") == ([], False)
            paid, _ = first.apply(pay.payment_id, first.view.amount_due, "payment", now)
            await invoices.save_all([paid])
            assert await payments.get(pay.payment_id) == pay
            assert await payments.unapplied_for_update(order.bill_to_id) == [pay]
            await payments.save_remaining([replace(pay, remaining=0)])
            assert await payments.unapplied_for_update(order.bill_to_id) == []
            # B's invoices and payment: not there for A, and writes by their ids change nothing of B's
            _, b_invs, b_pay = made[b]
            assert await invoices.get(b_invs[0].invoice_id) is None
            assert await payments.get(b_pay.payment_id) is None
            await invoices.save_all([b_invs[0].void(now)[0]])
            await payments.save_remaining([replace(b_pay, remaining=0)])
        async with db.transaction(a) as tx:
            assert await Invoices(tx.conn).get(first.invoice_id) == paid
        with pytest.raises(asyncpg.UniqueViolationError):  # the same payment id twice: a lost race, retried
            async with db.transaction(a) as tx:
                await Payments(tx.conn).add(pay, now)
        async with db.transaction(b) as tx:
            _, b_invs, b_pay = made[b]
            assert (await Invoices(tx.conn).get(b_invs[0].invoice_id)).view.status == "open"
            assert (await Payments(tx.conn).get(b_pay.payment_id)).remaining == 600

        # the overdue sweep's query: every tenant's open invoices past due (net_30). Issued an hour ahead, so the
        # running service's own sweep leaves them alone; this clock is 40 days on
        async with db.transaction(TEST) as tx:
            assert [r for r in await Invoices(tx.conn).overdue(now, 1000) if r[0] in made] == []
            found = {(s.tenant_id, i.invoice_id) for s, i in await Invoices(tx.conn).overdue(
                now + timedelta(days=40), 1000) if s in made}
        assert found == {(a.tenant_id, second.invoice_id), (b.tenant_id, made[b][1][0].invoice_id),
                         (b.tenant_id, made[b][1][1].invoice_id)}
    finally:
        await _cleanup_lifecycle(db, a, b)


async def test_the_lifecycle_handlers_run_on_postgresql_and_the_overdue_sweep_writes_each_tenants_rows(db, tenants):
    """record_fulfilment → record_payment (overpaid) → the next fulfilment takes the unapplied credit → the
    merchant's cancel is refused (paid); then entrypoint.mark_overdue (Unscoped, in batches) on a later clock."""
    from libs.contracts.envelope import Envelope
    from libs.contracts.erp import FulfilmentRecorded, OrderCancellationRecorded, PaymentRecorded
    from libs.contracts.base import RecordRefused
    from services.orders import handlers

    a, _ = tenants
    order, co = _confirmed_order("ACME")
    ahead = datetime.now(UTC) + LATER  # shipped an hour ahead: the running service's sweep leaves them alone
    try:
        async with db.transaction(a) as tx:
            await Orders(tx.conn).add(order, co.checkout_id, "ACME")

        async def handle(handler, payload):
            env = Envelope(tenant_id=a.tenant_id, livemode=a.livemode, payload=payload)
            async with db.transaction(a) as tx:
                uow = OrdersUnitOfWork(tx.conn, tx.scope, env)
                await handler(payload, uow)
                return uow.outbox.envelopes

        rice, oil = order.lines
        out = await handle(handlers.record_fulfilment, FulfilmentRecorded(
            fulfilment_id="f1", order_id=order.order_id, shipped_at=ahead,
            lines=[{"line_id": rice.line_id, "quantity": 12}]))
        first = out[1][2].payload.invoice
        assert (first.invoice_number, first.total) == ("ACME-INV-000001", 15_180)
        out = await handle(handlers.record_payment, PaymentRecorded(
            payment_id=new_id("pay"), customer_id=order.bill_to_id, amount=20_000, currency="JMD",
            received_at=ahead, method="card"))
        assert [e.type for _, _, e in out] == ["PaymentApplied", "InvoicePaid", "PaymentUnapplied"]
        out = await handle(handlers.record_fulfilment, FulfilmentRecorded(
            fulfilment_id="f2", order_id=order.order_id, shipped_at=ahead,
            lines=[{"line_id": rice.line_id, "quantity": 12}, {"line_id": oil.line_id, "quantity": 3}]))
        assert [(e.type, e.aggregate_version) for _, _, e in out] == [
            ("OrderFulfilled", 3), ("InvoiceIssued", 1), ("PaymentApplied", 2)]
        second = out[2][2].payload.invoice
        assert (second.amount_paid, second.amount_due) == (20_000 - 15_180, 33_462 - 20_000)
        with pytest.raises(RecordRefused):
            await handle(handlers.record_cancellation, OrderCancellationRecorded(order_id=order.order_id,
                                                                                 reason="no"))

        published = _Published()
        later = SimpleNamespace(db=db, outbox=published, settings=None,
                                unit_of_work=lambda conn, scope, incoming=None, **kw: OrdersUnitOfWork(
                                    conn, scope, incoming, now=ahead + timedelta(days=31), **kw))
        assert await entrypoint.mark_overdue(later, batch=1) >= 1
        mine = [m for m in published.rows if m.tenant_id == a.tenant_id]
        assert [(m.topic, m.key) for m in mine] == [("invoices.events.v1", second.invoice_id)]
        async with db.transaction(a) as tx:
            assert (await Invoices(tx.conn).get(second.invoice_id)).view.overdue
    finally:
        await _cleanup_lifecycle(db, a)
        async with db.transaction(TEST) as tx:
            await tx.conn.execute("DELETE FROM outbox WHERE tenant_id = $1", a.tenant_id)
