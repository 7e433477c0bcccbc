"""The runtime's metrics against the real broker and PostgreSQL (docs/operations.md, "Metrics and alerts"): what a
handler observes is recorded once its transaction committed — a batch rolled back and handled again one by one
counts each message once, a refused record never; the first dead letter is an increase from 0; the outbox
gauges come from one query over the rows not yet published."""
from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest_asyncio
import sqlalchemy as sa

from libs.contracts.base import RecordRefused
from libs.contracts.envelope import Envelope
from libs.contracts.erp import CustomerUpsert
from libs.contracts.errors import ErrorCode
from libs.contracts.ids import new_id
from libs.runtime.broker import BrokerLink
from libs.runtime.context import ServiceContext, subscribe
from libs.runtime.database import Database
from libs.runtime.db import make_engine, runtime_tables
from libs.runtime.metrics import Metrics
from libs.runtime.outbox import RELAY, Outbox
from libs.runtime.settings import ServiceSettings
from libs.runtime.subscriptions import open_subscriptions, start_subscriptions, stop_consuming
from libs.runtime.unit_of_work import UnitOfWork
from tests.conftest import until

TENANT = "ten_metrics"
metadata = sa.MetaData()
runtime_tables(metadata)
sa.Table("applied", metadata, sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
         sa.Column("name", sa.Text, nullable=False))

calls: Counter[str] = Counter()  # handler runs, committed or not
observed: Counter[str] = Counter()  # what uow.observe recorded


async def apply(rec: CustomerUpsert, uow: UnitOfWork) -> None:
    calls[rec.name] += 1
    await uow.conn.execute("INSERT INTO applied (name) VALUES ($1)", rec.name)
    uow.observe(lambda _m, name=rec.name: observed.update([name]))
    if rec.name.startswith("refused"):
        raise RecordRefused(ErrorCode.RECORD_CONFLICT, "does not fit")


@pytest_asyncio.fixture(loop_scope="session")
async def scratch_dsn(stack) -> AsyncIterator[str]:
    name = f"metrics_{new_id('d').lower()[2:14]}"
    dsn = await stack._pg.ensure_database(name, name, "pw-" + name)
    engine = make_engine(dsn)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await engine.dispose()
    yield dsn


@pytest_asyncio.fixture(loop_scope="session")
async def service(stack, scratch_dsn) -> AsyncIterator[tuple[ServiceContext, str]]:
    topic = f"test.metrics.{new_id('t').lower()}"
    settings = ServiceSettings(HARMON_KAFKA_BOOTSTRAP=stack.bootstrap, HARMON_BROKER_MODE="embedded",
                               HARMON_PARTITIONS=1, database_url=scratch_dsn)
    db = Database(scratch_dsn)
    link = BrokerLink(settings, client_id="metrics-test", topics=[topic, f"{topic}.dlt"])
    metrics = Metrics.create()
    ctx = ServiceContext(name=f"metrics-{topic}", settings=settings, link=link, db=db,
                         outbox=Outbox(link, db, metrics=metrics), metrics=metrics)
    subscribe(ctx, topic, {CustomerUpsert: apply})
    open_subscriptions(ctx)
    await link.start()
    await start_subscriptions(ctx)
    try:
        await until(lambda: ctx.consumers[0].assignment(), timeout=30, message="partition assigned")
        yield ctx, topic
    finally:
        await stop_consuming(ctx)
        await link.stop()
        await db.close()


def sample(ctx: ServiceContext, name: str, **labels: str) -> float | None:
    return ctx.metrics.registry.get_sample_value(name, labels)


async def test_observations_count_once_per_commit_and_never_for_a_rolled_back_or_refused_message(service):
    ctx, topic = service
    dead = dict(topic=topic, reason="permanent")
    assert sample(ctx, "harmon_messages_dead_lettered_total", **dead) == 0.0  # born at 0, before any dead letter
    run = new_id("r").lower()[-6:]
    names = [f"good:{run}:1", f"refused:{run}:2", f"good:{run}:3", f"good:{run}:4"]
    for name in names:  # one key, one fetch: the refusal splits the batch, the rest is handled one by one
        env = Envelope(tenant_id=TENANT, livemode=False, payload=CustomerUpsert(customer_id="cus_m", name=name))
        await ctx.link.publish(topic, "cus_m", env.to_bytes())
    await ctx.link._producer.flush()
    await until(lambda: sample(ctx, "harmon_messages_dead_lettered_total", **dead) == 1.0, timeout=15,
                message="the refused record dead-lettered")
    goods = [n for n in names if n.startswith("good")]
    await until(lambda: all(observed[n] for n in goods), timeout=15, message="the good records observed")
    assert {n: observed[n] for n in names} == {n: (0 if n.startswith("refused") else 1) for n in names}
    # the refused record ran (its batch, then alone) and counted nothing: observations wait for the commit
    assert calls[names[1]] >= 1 and sum(calls[n] for n in names) > sum(observed[n] for n in names)


async def test_the_outbox_gauges_count_the_unsent_rows_and_the_oldest_ones_age(service):
    ctx, _ = service
    async with ctx.db.transaction(RELAY) as tx:
        await tx.conn.execute("DELETE FROM outbox")
        await ctx.outbox.sample()
        assert (sample(ctx, "harmon_outbox_unsent"), sample(ctx, "harmon_outbox_oldest_unsent_seconds")) == (0, 0)
    async with ctx.db.transaction(RELAY) as tx:
        rows = [("m_old", "now() - interval '90 seconds'", "NULL"), ("m_new", "now()", "NULL"),
                ("m_sent", "now() - interval '1 hour'", "now()")]
        for message_id, created, sent in rows:
            await tx.conn.execute(
                "INSERT INTO outbox (message_id, tenant_id, livemode, topic, key, value, created_at, sent_at)"
                f" VALUES ($1, $2, false, 'nowhere', NULL, '\\x00', {created}, {sent})", message_id, TENANT)
    await ctx.outbox.sample()
    assert sample(ctx, "harmon_outbox_unsent") == 2  # the sent row does not count, however old
    assert 90 <= sample(ctx, "harmon_outbox_oldest_unsent_seconds") < 150
    async with ctx.db.transaction(RELAY) as tx:
        await tx.conn.execute("DELETE FROM outbox WHERE message_id LIKE 'm\\_%'")
