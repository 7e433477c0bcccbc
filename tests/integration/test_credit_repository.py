"""Credit's repositories through real PostgreSQL with row-level security: each statement runs, and sees only its
tenant's rows."""

import asyncio
from datetime import UTC, datetime

from libs.contracts import credit as c
from libs.contracts import invoices as i
from libs.contracts.envelope import Envelope
from libs.contracts.erp import CreditLimitUpsert
from services.credit import handlers
from services.credit.unit_of_work import CreditUnitOfWork

from libs.contracts.credit import ReservationStatus
from libs.contracts.ids import new_id
from libs.runtime.database import Database, Scope, Unscoped
from services.credit.domain import Exposure, InvoiceCopy, Reservation
from services.credit.repository import Accounts, InvoiceCopies, Reservations, UnappliedLedger


async def test_every_statement_runs_and_sees_only_its_tenant(stack):
    db = Database(stack.dsns["credit"], max_size=2)
    a, b = Scope(new_id("ten"), False), Scope(new_id("ten"), False)
    try:
        for scope in (a, b):
            async with db.transaction(scope) as tx:
                accounts, reservations = Accounts(tx.conn), Reservations(tx.conn)
                await accounts.upsert_customer("cus_buyer", "cus_parent", "net_30")
                await accounts.upsert_customer("cus_parent", "cus_parent", "net_30")
                await accounts.upsert_credit_limit("cus_parent", 50_000, "JMD")
                target, account = await accounts.lock_bill_to("cus_buyer", "cus_buyer")
                assert target == "cus_parent" and account.limit == 50_000 and account.customer_known
                r = Reservation(f"res_{scope.tenant_id}", "cus_parent", 12_000, ReservationStatus.RESERVED, "JMD",
                                "cus_buyer", "chk_1")
                assert await reservations.add(r, _now())
                assert not await reservations.add(r, _now())  # the same id again
                tomb = Reservation(f"tomb_{scope.tenant_id}", "cus_parent", 0, ReservationStatus.RELEASED)
                assert await reservations.add(tomb, _now())
        async with db.transaction(a) as tx:
            accounts, reservations = Accounts(tx.conn), Reservations(tx.conn)
            exposure, existing = await reservations.exposure_and("cus_parent", f"res_{a.tenant_id}")
            assert exposure.total == 12_000 and existing.amount == 12_000  # B's reservation on its own cus_parent not counted
            assert (await reservations.exposure_and("cus_parent", f"res_{b.tenant_id}"))[1] is None
            customer, bill_to, view_exposure = await accounts.view("cus_buyer")
            assert (customer.bill_to_id, bill_to.limit, view_exposure.total) == ("cus_parent", 50_000, 12_000)
            assert (await reservations.get_for_update(f"tomb_{a.tenant_id}")).status is ReservationStatus.RELEASED
            await reservations.release(f"res_{a.tenant_id}", _now())
            assert (await reservations.exposure("cus_parent")).total == 0
            assert await accounts.get("cus_nobody") is None
            unknown_target, none = await accounts.lock_bill_to("cus_new", "cus_new")
            assert (unknown_target, none) == ("cus_new", None)
        async with db.transaction(b) as tx:
            assert (await Reservations(tx.conn).exposure("cus_parent")).total == 12_000  # A's release: not B's
    finally:
        async with db.transaction(Unscoped("test clean-up")) as tx:
            for table in ("reservations", "accounts"):
                await tx.conn.execute(f"DELETE FROM {table} WHERE tenant_id = ANY($1::text[])", [a.tenant_id, b.tenant_id])
        await db.close()


D = [datetime(2026, 12, d, tzinfo=UTC) for d in range(1, 31)]


def _copy(invoice_id, amount_due, version=1, status="open", due_at=None, issued_at=D[0], captured=None, total=None):
    return InvoiceCopy(invoice_id, "cus_parent", status, total or amount_due, amount_due, issued_at, version,
                       "ORD-INV-000001", due_at, False, "res_1", captured)


async def test_exposure_counts_what_is_held_invoiced_and_unapplied_in_each_tenant_alone(stack):
    """The new tables (invoice copies, the unapplied ledger) and the captured / version columns, under RLS."""
    db = Database(stack.dsns["credit"], max_size=2)
    a, b = Scope(new_id("ten"), False), Scope(new_id("ten"), False)
    try:
        async with db.transaction(a) as tx:
            accounts, reservations = Accounts(tx.conn), Reservations(tx.conn)
            invoices, ledger = InvoiceCopies(tx.conn), UnappliedLedger(tx.conn)
            await accounts.upsert_credit_limit("cus_parent", 100_000, "JMD")
            r = Reservation("res_" + a.tenant_id[4:], "cus_parent", 30_000, ReservationStatus.RESERVED, "JMD",
                            "cus_parent", "chk_1")
            assert await reservations.reserve(r, _now()) == 1  # the account's version after it
            assert await reservations.reserve(r, _now()) is None  # the same id again: no second bump
            await reservations.set_captured(r.reservation_id, 12_345)
            assert (await reservations.get(r.reservation_id)).held == 17_655
            await invoices.put(_copy("inv_a", 12_345, due_at=D[20], captured=12_345))
            await invoices.put(_copy("inv_b", 5_000, due_at=D[5]))
            await invoices.put(_copy("inv_c", 7_000))  # cod: no due date yet
            await invoices.put(_copy("inv_d", 0, status="paid", total=4_000))
            await invoices.put(_copy("inv_b", 3_000, version=2, due_at=D[5]))  # a newer version replaces the copy
            assert (await invoices.get("inv_b")).amount_due == 3_000
            assert [inv.invoice_id for inv in await invoices.open_for("cus_parent")] == ["inv_b", "inv_a", "inv_c"]
            assert await ledger.add("pay_1", "", "cus_parent", 4_000, _now())
            assert not await ledger.add("pay_1", "", "cus_parent", 4_000, _now())  # once per payment
            assert await ledger.add("pay_1", "inv_c", "cus_parent", -1_500, _now())
            assert await ledger.add("pay_2", "inv_b", "cus_parent", -500, _now())  # before its own excess: 0
            exposure, _ = await reservations.exposure_and("cus_parent", r.reservation_id)
            assert exposure == Exposure(held=17_655, invoiced=12_345 + 3_000 + 7_000, unapplied=2_500)
            assert exposure.total == 37_500
            version, account, touched = await accounts.touch("cus_parent", "JMD")
            assert (version, account.limit, touched) == (2, 100_000, exposure)
            locked = await accounts.lock("cus_new", "JMD")  # an event for an account with no row creates it
            assert (locked.bill_to_id, locked.customer_known, locked.credit_limit) == ("cus_new", False, None)
            assert (await accounts.touch("cus_new", "JMD"))[0] == 1
            assert await accounts.lock_for_reservation(r.reservation_id, "cus_other") == "cus_parent"
            assert await accounts.lock_for_reservation("res_unknown", "cus_other") == "cus_other"
            _, _, view_exposure = await accounts.view("cus_parent")
            assert view_exposure == exposure
        async with db.transaction(b) as tx:  # B sees none of A's copies, ledger, reservations or versions
            reservations, invoices = Reservations(tx.conn), InvoiceCopies(tx.conn)
            assert await reservations.exposure("cus_parent") == Exposure()
            assert await invoices.get("inv_a") is None and await invoices.open_for("cus_parent") == []
            assert await UnappliedLedger(tx.conn).add("pay_1", "", "cus_parent", 100, _now())  # B's own pay_1
            assert (await reservations.exposure("cus_parent")).unapplied == 100
            assert (await Accounts(tx.conn).touch("cus_parent", "JMD"))[0] == 1
        async with db.transaction(a) as tx:
            assert (await Reservations(tx.conn).exposure("cus_parent")).unapplied == 2_500
    finally:
        async with db.transaction(Unscoped("test clean-up")) as tx:
            for table in ("reservations", "accounts", "invoice_copies", "unapplied_credit"):
                await tx.conn.execute(f"DELETE FROM {table} WHERE tenant_id = ANY($1::text[])", [a.tenant_id, b.tenant_id])
        await db.close()


def _invoice(invoice_id, total, reservation_id, paid=0) -> i.InvoiceIssued:
    view = i.InvoiceView(invoice_id=invoice_id, invoice_number="ORD-INV-000001", order_id="ord_1",
                         customer_id="cus_parent", bill_to_id="cus_parent", fulfilment_id="ful_1",
                         status="paid" if paid == total else "open", terms="net_30", currency="JMD", subtotal=total,
                         tax=0, total=total, amount_paid=paid, amount_due=total - paid, lines=[], issued_at=D[0])
    return i.InvoiceIssued(invoice=view, reservation_id=reservation_id)


async def _handle(db, scope, handler, payload, version=None):
    """One message through its handler on a real transaction, as the dispatcher runs it: (reply, events)."""
    env = Envelope(tenant_id=scope.tenant_id, livemode=scope.livemode, payload=payload, aggregate_version=version)
    async with db.transaction(scope) as tx:
        uow = CreditUnitOfWork(tx.conn, scope, env)
        reply = await handler(payload, uow)
    return reply, [e for _, _, e in uow.outbox.envelopes]


async def test_concurrent_reserves_and_captures_on_one_account_give_versions_without_gaps(stack):
    """Reserves (credit.commands.v1) and captures (invoices.events.v1, another partition and consumer) of one
    bill-to account, at once on four connections: each takes the account's row lock first, so the versions are
    1..n with no gap and each event's exposure is the one after exactly the changes before it."""
    db = Database(stack.dsns["credit"], max_size=4)
    scope = Scope(new_id("ten"), False)
    try:
        await _handle(db, scope, handlers.upsert_credit_limit,
                      CreditLimitUpsert(customer_id="cus_parent", limit=10_000_000))
        first = [c.ReserveCredit(reservation_id=f"res_a{n}", checkout_id="chk_1", customer_id="cus_parent",
                                 bill_to_id="cus_parent", amount=1_000 + n, currency="JMD") for n in range(8)]
        for cmd in first:
            await _handle(db, scope, handlers.reserve_credit, cmd)
        more = [c.ReserveCredit(reservation_id=f"res_b{n}", checkout_id="chk_1", customer_id="cus_parent",
                                bill_to_id="cus_parent", amount=500, currency="JMD") for n in range(8)]
        captures = [_handle(db, scope, handlers.invoice_issued, _invoice(f"inv_{n}", 600, f"res_a{n}"), version=1)
                    for n in range(8)]
        results = await asyncio.gather(*captures, *(_handle(db, scope, handlers.reserve_credit, m) for m in more))
        events = sorted((e for _, emitted in results for e in emitted), key=lambda e: e.aggregate_version)
        assert [e.aggregate_version for e in events] == list(range(9, 25))
        exposure = sum(1_000 + n for n in range(8))
        for e in events:  # captures move held into invoiced (the sum stays); a reserve adds its amount
            exposure += e.payload.amount if isinstance(e.payload, c.CreditReserved) else 0
            assert e.payload.exposure == exposure, e.payload
        view, _ = await _handle(db, scope, handlers.get_credit_account, c.GetCreditAccount(customer_id="cus_parent"))
        assert view.exposure == exposure == 8_028 + 8 * 500 and len(view.open_invoices) == 8
    finally:
        async with db.transaction(Unscoped("test clean-up")) as tx:
            for table in ("reservations", "accounts", "invoice_copies", "unapplied_credit"):
                await tx.conn.execute(f"DELETE FROM {table} WHERE tenant_id = $1", scope.tenant_id)
        await db.close()


async def test_the_handlers_through_postgresql_capture_pay_and_release_once(stack):
    db = Database(stack.dsns["credit"], max_size=2)
    scope = Scope(new_id("ten"), False)
    try:
        reserved, _ = await _handle(db, scope, handlers.reserve_credit, c.ReserveCredit(
            reservation_id="res_1", checkout_id="chk_1", customer_id="cus_parent", bill_to_id="cus_parent",
            amount=0, currency="JMD"))  # no limit record: only nothing fits, and it makes the account's row
        assert reserved.exposure == 0
        _, events = await _handle(db, scope, handlers.invoice_issued, _invoice("inv_a", 12_345, "res_1"), version=1)
        assert [(e.payload.cause, e.payload.exposure, e.aggregate_version) for e in events] == [("captured", 12_345, 2)]
        _, again = await _handle(db, scope, handlers.invoice_issued, _invoice("inv_a", 12_345, "res_1"), version=1)
        assert again == []
        unapplied = i.PaymentUnapplied(payment_id="pay_1", bill_to_id="cus_parent", amount=345, currency="JMD")
        _, events = await _handle(db, scope, handlers.payment_unapplied, unapplied, version=1)
        assert [(e.payload.exposure, e.payload.unapplied, e.aggregate_version) for e in events] == [(12_000, 345, 3)]
        paid = _invoice("inv_a", 12_345, None, paid=12_345).invoice
        applied = i.PaymentApplied(payment_id="pay_2", invoice_id="inv_a", amount=12_345, bill_to_id="cus_parent",
                                   invoice=paid)
        _, events = await _handle(db, scope, handlers.payment_applied, applied, version=2)
        assert [(e.payload.exposure, e.aggregate_version) for e in events] == [(0, 4)]
        _, none = await _handle(db, scope, handlers.invoice_paid, i.InvoicePaid(invoice=paid), version=3)
        assert none == []
        released, events = await _handle(db, scope, handlers.release_credit,
                                         c.ReleaseCredit(reservation_id="res_1", bill_to_id="cus_parent"))
        assert (released.amount, events) == (0, [])
        view, _ = await _handle(db, scope, handlers.get_credit_account, c.GetCreditAccount(customer_id="cus_parent"))
        assert (view.exposure, view.unapplied, view.open_invoices, view.limit) == (0, 345, [], 0)
    finally:
        async with db.transaction(Unscoped("test clean-up")) as tx:
            for table in ("reservations", "accounts", "invoice_copies", "unapplied_credit"):
                await tx.conn.execute(f"DELETE FROM {table} WHERE tenant_id = $1", scope.tenant_id)
        await db.close()


def _now() -> datetime:
    return datetime.now(UTC)
