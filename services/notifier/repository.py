"""The queries the notifier handlers need, scoped to tenant and mode."""

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from .tables import Event


class EventRepository:
    def __init__(self, session: AsyncSession, tenant_id: str, livemode: bool):
        self.session = session
        self.tenant_id = tenant_id
        self.livemode = livemode

    async def record(self, **values) -> bool:
        """Store an event once; False when that aggregate version was already recorded."""
        stmt = pg_insert(Event).values(tenant_id=self.tenant_id, livemode=self.livemode, **values)
        stmt = stmt.on_conflict_do_nothing().returning(Event.id)
        return (await self.session.execute(stmt)).first() is not None
