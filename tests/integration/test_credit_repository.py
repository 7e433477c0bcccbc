"""Credit's repositories through real PostgreSQL with row-level security: each statement runs, and sees only its
tenant's rows."""

from datetime import UTC, datetime

from libs.contracts.credit import ReservationStatus
from libs.contracts.ids import new_id
from libs.runtime.database import Database, Scope, Unscoped
from services.credit.domain import Reservation
from services.credit.repository import Accounts, Reservations


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
            assert exposure == 12_000 and existing.amount == 12_000  # B's reservation on its own cus_parent not counted
            assert (await reservations.exposure_and("cus_parent", f"res_{b.tenant_id}"))[1] is None
            customer, bill_to, view_exposure = await accounts.view("cus_buyer")
            assert (customer.bill_to_id, bill_to.limit, view_exposure) == ("cus_parent", 50_000, 12_000)
            assert (await reservations.get_for_update(f"tomb_{a.tenant_id}")).status is ReservationStatus.RELEASED
            await reservations.release(f"res_{a.tenant_id}", _now())
            assert await reservations.exposure("cus_parent") == 0
            assert await accounts.get("cus_nobody") is None
            unknown_target, none = await accounts.lock_bill_to("cus_new", "cus_new")
            assert (unknown_target, none) == ("cus_new", None)
        async with db.transaction(b) as tx:
            assert await Reservations(tx.conn).exposure("cus_parent") == 12_000  # A's release did not touch B
    finally:
        async with db.transaction(Unscoped("test clean-up")) as tx:
            for table in ("reservations", "accounts"):
                await tx.conn.execute(f"DELETE FROM {table} WHERE tenant_id = ANY($1::text[])", [a.tenant_id, b.tenant_id])
        await db.close()


def _now() -> datetime:
    return datetime.now(UTC)
