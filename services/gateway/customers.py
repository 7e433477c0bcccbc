"""The gateway's copy of ERP customers (erp.customers.v1): who may be issued a shopper token."""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from libs.contracts import topics
from libs.contracts.erp import CustomerUpsert
from libs.runtime.context import ServiceContext, subscribe
from libs.runtime.scoping import bind
from libs.runtime.unit_of_work import UnitOfWork

from .tables import Customer


class Customers:
    """The gateway's customers table. Its tables are scoped by the ORM hook (libs/runtime/scoping.py), not yet by
    row-level security, so this one statement names the message's scope itself."""

    def __init__(self, conn, scope):
        self._conn, self._scope = conn, scope

    async def upsert(self, customer_id: str, name: str, active: bool, at: datetime) -> None:
        await self._conn.execute("""
            INSERT INTO customers (tenant_id, livemode, customer_id, name, active, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (tenant_id, livemode, customer_id) DO UPDATE
            SET name = excluded.name, active = excluded.active, updated_at = excluded.updated_at
            WHERE customers.updated_at <= excluded.updated_at""",  # the newest record wins
            self._scope.tenant_id, self._scope.livemode, customer_id, name, active, at)


class GatewayUnitOfWork(UnitOfWork):
    customers: Customers

    def __init__(self, conn, scope, incoming=None, **kw):
        super().__init__(conn, scope, incoming, **kw)
        if conn is not None:
            self.customers = Customers(conn, scope)


async def upsert_customer(rec: CustomerUpsert, uow: GatewayUnitOfWork) -> None:
    await uow.customers.upsert(rec.customer_id, rec.name, rec.active, uow.message.occurred_at)


async def is_active_customer(session: AsyncSession, tenant_id: str, livemode: bool, customer_id: str) -> bool:
    bind(session, tenant_id, livemode)  # the caller's scope; refused if the session holds another
    stmt = sa.select(Customer.active).where(Customer.customer_id == customer_id)
    return bool((await session.execute(stmt)).scalar_one_or_none())


def register(ctx: ServiceContext) -> None:
    subscribe(ctx, topics.ERP_CUSTOMERS, {CustomerUpsert: upsert_customer})
