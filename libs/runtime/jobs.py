"""Cross-tenant jobs (sweepers, resuming after a restart): a unit of work on an `Unscoped` transaction, its outbox
rows written with it (each naming its tenant) and published after the commit — what the dispatcher does for a
message, without one."""

from collections.abc import Awaitable, Callable
from typing import TypeVar

from . import inbox
from .context import ServiceContext
from .database import Unscoped
from .dispatch import record_observations
from .unit_of_work import UnitOfWork

T = TypeVar("T")


async def run_unscoped(ctx: ServiceContext, scope: Unscoped, job: Callable[[UnitOfWork], Awaitable[T]]) -> T:
    async with ctx.db.transaction(scope) as tx:
        uow = ctx.unit_of_work(tx.conn, tx.scope, settings=ctx.settings)
        result = await job(uow)
        rows = uow.outbox.pending
        if rows:
            await inbox.record(tx.conn, [], rows)
    if rows:
        await ctx.outbox.publish_committed(rows)
    record_observations(ctx, uow.observations)
    return result
