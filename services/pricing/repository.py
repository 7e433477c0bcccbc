"""The queries pricing handlers need. The session is scoped to the message's tenant and mode (libs.runtime.scoping)."""

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import select

from libs.contracts.envelope import Envelope

from .domain import PriceCandidate
from .tables import Customer, Price, Product


class PricingRepository:
    def __init__(self, session: AsyncSession, env: Envelope):
        self.session = session
        self.tenant_id = env.tenant_id
        self.livemode = env.livemode

    async def get_product(self, sku: str) -> Product | None:
        stmt = select(Product).where(Product.sku == sku, Product.active)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def products(self, skus: Iterable[str]) -> dict[str, Product]:
        """The active products among `skus`."""
        stmt = select(Product).where(Product.sku.in_(set(skus)), Product.active)
        return {p.sku: p for p in (await self.session.execute(stmt)).scalars()}

    async def page_of_products(self, starting_after: str | None, limit: int) -> tuple[list[Product], bool]:
        """Active products by sku ascending, after `starting_after`; and whether more follow."""
        stmt = select(Product).where(Product.active)
        if starting_after is not None:
            stmt = stmt.where(Product.sku > starting_after)
        rows = list((await self.session.execute(stmt.order_by(Product.sku).limit(limit + 1))).scalars())
        return rows[:limit], len(rows) > limit

    async def price_candidates(self, skus: Iterable[str], customer_id: str | None) -> dict[str, list[PriceCandidate]]:
        """Active prices of `skus` that could apply to this customer (other customers' prices stay out)."""
        mine = Price.customer_id.is_(None) if customer_id is None else sa.or_(
            Price.customer_id.is_(None), Price.customer_id == customer_id)
        stmt = select(Price).where(Price.sku.in_(set(skus)), Price.active, mine)
        found: dict[str, list[PriceCandidate]] = {}
        for p in (await self.session.execute(stmt)).scalars():
            found.setdefault(p.sku, []).append(PriceCandidate(
                unit_amount=p.unit_amount, currency=p.currency, customer_id=p.customer_id,
                price_list_id=p.price_list_id, min_quantity=p.min_quantity, active=p.active, price_id=p.price_id,
            ))
        return found

    async def price_list_of(self, customer_id: str | None) -> str | None:
        if customer_id is None:
            return None
        stmt = select(Customer.price_list_id).where(Customer.customer_id == customer_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def _upsert(self, table, keys: tuple[str, ...], values: dict) -> None:
        values.update(tenant_id=self.tenant_id, livemode=self.livemode)
        stmt = pg_insert(table).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "livemode", *keys],
            set_={k: stmt.excluded[k] for k in values if k not in ("tenant_id", "livemode", *keys)},
        )
        await self.session.execute(stmt)

    async def upsert_product(self, **values) -> None:
        await self._upsert(Product, ("sku",), values)

    async def upsert_price(self, **values) -> None:
        await self._upsert(Price, ("price_id",), values)

    async def upsert_customer(self, **values) -> None:
        await self._upsert(Customer, ("customer_id",), values)
