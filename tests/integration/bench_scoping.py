"""What runtime scoping costs per query: `python -m tests.integration.bench_scoping postgresql://…` (a scratch database).

Compares the same select written with hand filters on a plain session (the code before scoping)
with the runtime's bound session adding them; medians of interleaved rounds, client CPU and wall
time per statement. Numbers are recorded in docs/benchmarks.md.
"""

import asyncio
import cProfile
import pstats
import statistics
import sys
import time
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker

from libs.runtime.db import make_engine, make_sessionmaker
from libs.runtime.scoping import bind
from services.credit.tables import Reservation, metadata

SCHEMA = "bench_scoping"


def by_id(scoped: bool) -> sa.Select:
    """Built per call, as repositories do (so neither side reuses a memoised cache key)."""
    stmt = sa.select(Reservation).where(Reservation.reservation_id == "res_a")
    return stmt if scoped else stmt.where(Reservation.tenant_id == "ten_a", Reservation.livemode.is_(False))


async def timed(sessions, scoped: bool, n: int) -> tuple[float, float]:
    async with sessions() as s:
        if scoped:
            bind(s, "ten_a", False)
        for _ in range(100):  # warm: pool connection, statement caches
            await s.execute(by_id(scoped))
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            (await s.execute(by_id(scoped))).scalar_one()
        return (time.perf_counter() - wall) / n * 1e6, (time.process_time() - cpu) / n * 1e6


RAW_BY_ID = (f"SELECT * FROM {SCHEMA}.reservations"
             " WHERE reservation_id = $1 AND tenant_id = $2 AND livemode = $3")


async def timed_asyncpg(engine, n: int) -> tuple[float, float]:
    """The same select on the pooled asyncpg connection itself: what the ORM path costs on top."""
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        for _ in range(100):
            await raw.fetchrow(RAW_BY_ID, "res_a", "ten_a", False)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            await raw.fetchrow(RAW_BY_ID, "res_a", "ten_a", False)
        return (time.perf_counter() - wall) / n * 1e6, (time.process_time() - cpu) / n * 1e6


async def calls_per_select(sessions, scoped: bool, n: int = 500) -> float:
    """Python function calls per select: unlike time, the same on a busy machine."""
    async with sessions() as s:
        if scoped:
            bind(s, "ten_a", False)
        await s.execute(by_id(scoped))
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(n):
            (await s.execute(by_id(scoped))).scalar_one()
        profile.disable()
    return pstats.Stats(profile).total_calls / n


async def main(dsn: str, n: int = 2000, rounds: int = 5) -> None:
    engine = make_engine(dsn, pool_size=1).execution_options(schema_translate_map={None: SCHEMA})
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
            await conn.execute(sa.schema.CreateSchema(SCHEMA))
            await conn.run_sync(metadata.create_all)
        plain = async_sessionmaker(engine, expire_on_commit=False)
        scoped = make_sessionmaker(engine)
        now = datetime.now(UTC)
        for tenant_id, livemode, rid in (("ten_a", False, "res_a"), ("ten_a", True, "res_a_live"),
                                         ("ten_b", False, "res_b")):
            async with scoped() as w:
                bind(w, tenant_id, livemode)
                w.add(Reservation(reservation_id=rid, tenant_id=tenant_id, livemode=livemode, bill_to_id="b",
                                  amount=1, status="reserved", created_at=now))
                await w.commit()
        results: dict[str, list[tuple[float, float]]] = {"hand filters, plain session": [], "runtime scoping": [],
                                                         "plain asyncpg, prepared": []}
        for _ in range(rounds):
            results["hand filters, plain session"].append(await timed(plain, False, n))
            results["runtime scoping"].append(await timed(scoped, True, n))
            results["plain asyncpg, prepared"].append(await timed_asyncpg(engine, n))
        calls = {"hand filters, plain session": f"{await calls_per_select(plain, False):5.0f} calls",
                 "runtime scoping": f"{await calls_per_select(scoped, True):5.0f} calls", "plain asyncpg, prepared": ""}
        for label, runs in results.items():
            print(f"{label:30s} wall {statistics.median(w for w, _ in runs):7.1f} µs  "
                  f"client CPU {statistics.median(c for _, c in runs):7.1f} µs  {calls[label]:>11s}"
                  f"  per select (median of {rounds}×{n})")
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"DROP SCHEMA {SCHEMA} CASCADE"))
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
