"""The queries the orders handlers need. The session is scoped to tenant and mode (libs.runtime.scoping)."""

from datetime import datetime

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import select

from .domain import ACTIVE
from .tables import Checkout, Customer, Order, OrderLine


class OrdersRepository:
    def __init__(self, session: AsyncSession, tenant_id: str, livemode: bool):
        self.session = session
        self.tenant_id = tenant_id
        self.livemode = livemode

    async def checkout_by_key(self, key: str) -> Checkout | None:
        stmt = select(Checkout).where(Checkout.idempotency_key == key).with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def checkout_for_update(self, checkout_id: str) -> Checkout | None:
        stmt = select(Checkout).where(Checkout.id == checkout_id).with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def active_checkout_for_cart(self, cart_id: str) -> Checkout | None:
        stmt = select(Checkout).where(Checkout.cart_id == cart_id, Checkout.state.in_(ACTIVE))
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def order_for_cart(self, cart_id: str) -> Order | None:
        stmt = select(Order).where(Order.cart_id == cart_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def order(self, order_id: str) -> Order | None:
        stmt = select(Order).where(Order.id == order_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def order_lines(self, order_id: str) -> list[OrderLine]:
        stmt = select(OrderLine).where(OrderLine.order_id == order_id).order_by(OrderLine.position)
        return list((await self.session.execute(stmt)).scalars())

    async def page_of_orders(self, customer_id: str, starting_after: str | None, limit: int) -> tuple[list[Order], bool]:
        """The customer's orders newest first (ids are ULIDs: they sort by time), after `starting_after`."""
        stmt = select(Order).where(Order.customer_id == customer_id)
        if starting_after is not None:
            stmt = stmt.where(Order.id < starting_after)
        rows = list((await self.session.execute(stmt.order_by(Order.id.desc()).limit(limit + 1))).scalars())
        return rows[:limit], len(rows) > limit

    async def lines_of(self, order_ids: list[str]) -> dict[str, list[OrderLine]]:
        if not order_ids:
            return {}
        stmt = select(OrderLine).where(OrderLine.order_id.in_(order_ids)).order_by(OrderLine.order_id,
                                                                                   OrderLine.position)
        found: dict[str, list[OrderLine]] = {}
        for line in (await self.session.execute(stmt)).scalars():
            found.setdefault(line.order_id, []).append(line)
        return found

    async def customer(self, customer_id: str) -> Customer | None:
        stmt = select(Customer).where(Customer.customer_id == customer_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def upsert_customer(self, customer_id: str, bill_to_id: str, terms: str) -> None:
        stmt = pg_insert(Customer).values(tenant_id=self.tenant_id, livemode=self.livemode, customer_id=customer_id,
                                          bill_to_id=bill_to_id, terms=terms)
        stmt = stmt.on_conflict_do_update(
            index_elements=[Customer.tenant_id, Customer.livemode, Customer.customer_id],
            set_={"bill_to_id": stmt.excluded.bill_to_id, "terms": stmt.excluded.terms},
        )
        await self.session.execute(stmt)


async def overdue_checkouts(session: AsyncSession, now: datetime, limit: int = 50) -> list[Checkout]:
    """Sagas past their step deadline, across tenants (the sweeper's own query), locked for this instance."""
    stmt = (
        select(Checkout)
        .where(Checkout.state.in_(ACTIVE), Checkout.step_deadline < now)
        .order_by(Checkout.step_deadline)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(stmt)).scalars())


async def active_checkouts(session: AsyncSession) -> list[Checkout]:
    stmt = select(Checkout).where(Checkout.state.in_(ACTIVE)).with_for_update(skip_locked=True)
    return list((await session.execute(stmt)).scalars())


