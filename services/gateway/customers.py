"""The gateway's copy of ERP customers (erp.customers.v1): who may be issued a shopper token."""

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from libs.contracts import topics
from libs.contracts.envelope import Envelope
from libs.contracts.erp import CustomerUpsert
from libs.runtime.messaging import ServiceContext, subscribe
from libs.runtime.scoping import bind

from .tables import Customer


async def upsert_customer(rec: CustomerUpsert, env: Envelope, ctx: ServiceContext) -> None:
    async with ctx.uow(env) as uow:
        await uow.claim()
        stmt = pg_insert(Customer).values(
            tenant_id=env.tenant_id, livemode=env.livemode, customer_id=rec.customer_id, name=rec.name,
            active=rec.active, updated_at=env.occurred_at,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[Customer.tenant_id, Customer.livemode, Customer.customer_id],
            set_={k: stmt.excluded[k] for k in ("name", "active", "updated_at")},
            where=Customer.updated_at <= stmt.excluded.updated_at,  # the newest record wins
        )
        await uow.session.execute(stmt)
        await uow.commit()


async def is_active_customer(session: AsyncSession, tenant_id: str, livemode: bool, customer_id: str) -> bool:
    bind(session, tenant_id, livemode)  # the caller's scope; refused if the session holds another
    stmt = sa.select(Customer.active).where(Customer.customer_id == customer_id)
    return bool((await session.execute(stmt)).scalar_one_or_none())


def register(ctx: ServiceContext) -> None:
    subscribe(ctx, topics.ERP_CUSTOMERS, {CustomerUpsert: upsert_customer})
