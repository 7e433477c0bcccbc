"""The queries cart handlers need. The session is scoped to the message's tenant and mode (libs.runtime.scoping)."""

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import select

from libs.contracts.envelope import Envelope

from .tables import Cart, CartLine, Product


class CartRepository:
    def __init__(self, session: AsyncSession, env: Envelope):
        self.session = session
        self.tenant_id = env.tenant_id
        self.livemode = env.livemode

    async def get_cart(self, cart_id: str, *, for_update: bool = False) -> Cart | None:
        stmt = select(Cart).where(Cart.id == cart_id)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def lines(self, cart_id: str) -> list[CartLine]:
        stmt = select(CartLine).where(CartLine.cart_id == cart_id).order_by(CartLine.created_at, CartLine.id)
        return list((await self.session.execute(stmt)).scalars())

    async def get_line(self, cart_id: str, line_id: str) -> CartLine | None:
        stmt = select(CartLine).where(CartLine.cart_id == cart_id, CartLine.id == line_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_product(self, sku: str) -> Product | None:
        stmt = select(Product).where(Product.sku == sku, Product.active)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def upsert_product(self, **values) -> None:
        values.update(tenant_id=self.tenant_id, livemode=self.livemode)
        stmt = pg_insert(Product).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[Product.tenant_id, Product.livemode, Product.sku],
            set_={k: stmt.excluded[k] for k in ("base_uom", "units", "active")},
        )
        await self.session.execute(stmt)

    async def delete_line(self, line: CartLine) -> None:
        await self.session.execute(sa.delete(CartLine).where(CartLine.id == line.id))
