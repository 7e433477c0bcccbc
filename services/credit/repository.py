"""The queries credit handlers need. The session is scoped to the message's tenant and mode (libs.runtime.scoping)."""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import select

from libs.contracts.envelope import Envelope

from .tables import Account, Reservation


class CreditRepository:
    def __init__(self, session: AsyncSession, env: Envelope):
        self.session = session
        self.tenant_id = env.tenant_id
        self.livemode = env.livemode

    async def get_account(self, customer_id: str, *, for_update: bool = False) -> Account | None:
        stmt = select(Account).where(Account.customer_id == customer_id)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def exposure(self, bill_to_id: str) -> int:
        """Open reservations on a bill-to account (unpaid invoices join this sum once invoicing exists)."""
        stmt = select(sa.func.coalesce(sa.func.sum(Reservation.amount), 0)).where(
            Reservation.bill_to_id == bill_to_id, Reservation.status == "reserved",
        )
        return int((await self.session.execute(stmt)).scalar_one())

    async def get_reservation(self, reservation_id: str, *, for_update: bool = False) -> Reservation | None:
        stmt = select(Reservation).where(Reservation.reservation_id == reservation_id)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def add_reservation(self, **values) -> bool:
        """Insert a reservation row; False if its id is taken (a concurrent release left a tombstone)."""
        values.update(tenant_id=self.tenant_id, livemode=self.livemode)
        stmt = (
            pg_insert(Reservation).values(**values)
            .on_conflict_do_nothing(index_elements=[Reservation.reservation_id])
            .returning(Reservation.reservation_id)
        )
        return (await self.session.execute(stmt)).first() is not None

    async def add_tombstone(self, reservation_id: str, bill_to_id: str, now: datetime) -> bool:
        """A released, empty reservation, so a ReserveCredit arriving after its ReleaseCredit is refused."""
        return await self.add_reservation(
            reservation_id=reservation_id, bill_to_id=bill_to_id, amount=0, status="released",
            created_at=now, released_at=now,
        )

    async def upsert_customer(self, customer_id: str, bill_to_id: str, terms: str) -> None:
        """Customer fields only: a limit that arrived first is kept."""
        stmt = pg_insert(Account).values(
            tenant_id=self.tenant_id, livemode=self.livemode, customer_id=customer_id,
            bill_to_id=bill_to_id, terms=terms, customer_known=True,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[Account.tenant_id, Account.livemode, Account.customer_id],
            set_={k: stmt.excluded[k] for k in ("bill_to_id", "terms", "customer_known")},
        )
        await self.session.execute(stmt)

    async def upsert_credit_limit(self, customer_id: str, limit: int, currency: str) -> None:
        """Limit fields only; an account not seen as a customer yet bills itself on cod until its record arrives."""
        stmt = pg_insert(Account).values(
            tenant_id=self.tenant_id, livemode=self.livemode, customer_id=customer_id,
            bill_to_id=customer_id, terms="cod", credit_limit=limit, currency=currency, customer_known=False,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[Account.tenant_id, Account.livemode, Account.customer_id],
            set_={k: stmt.excluded[k] for k in ("credit_limit", "currency")},
        )
        await self.session.execute(stmt)
