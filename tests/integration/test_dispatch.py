"""The runtime's dispatcher against the real broker and a real PostgreSQL database (libs/runtime/failures.py):
a poison message is answered and dead-lettered at once, a transiently failing one is parked with its
key's later messages behind it while other keys flow on, a duplicate is skipped, a message that keeps
failing is dead-lettered after its attempts, and nothing waits behind any of them but its own key."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer

from libs.contracts.base import Failure, RecordRefused
from libs.contracts.envelope import Envelope
from libs.contracts.erp import CustomerUpsert
from libs.contracts.errors import ErrorCode
from libs.contracts.ids import new_id
from libs.runtime.broker import BrokerLink
from libs.runtime.context import ServiceContext, subscribe
from libs.runtime.database import Database
from libs.runtime.db import make_engine, runtime_tables
from libs.runtime.kafka import ensure_topics
from libs.runtime.metrics import Metrics
from libs.runtime.outbox import Outbox
from libs.runtime.subscriptions import open_subscriptions, start_subscriptions, stop_consuming
from libs.runtime.unit_of_work import UnitOfWork
from libs.runtime.settings import ServiceSettings
from tests.conftest import until

TENANT = "ten_dispatch"

metadata = sa.MetaData()
runtime = runtime_tables(metadata)
applied = sa.Table("applied", metadata,
                   sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
                   sa.Column("key", sa.Text, nullable=False), sa.Column("seq", sa.Integer, nullable=False))
gate = sa.Table("gate", metadata, sa.Column("id", sa.Integer, primary_key=True))


async def apply(rec: CustomerUpsert, uow: UnitOfWork) -> None:
    """The test's handler: `name` is "<kind>:<seq>"; kinds poison, locked, broken or good."""
    kind, seq = rec.name.split(":")
    if kind == "poison":  # PostgreSQL refuses a NUL in text: the same every time
        await uow.conn.execute("INSERT INTO applied (key, seq) VALUES ($1, $2)", "a\x00b", int(seq))
    if kind == "locked":  # the test holds this row: a lock timeout, a race this message lost
        await uow.conn.execute("SET LOCAL lock_timeout = '50ms'")
        await uow.conn.execute("SELECT id FROM gate WHERE id = 1 FOR UPDATE")
    if kind == "broken":
        raise RuntimeError("fails until it is dead-lettered")
    if kind == "refused":  # the domain says the record does not fit: after a write, which is rolled back
        await uow.conn.execute("INSERT INTO applied (key, seq) VALUES ($1, $2)", rec.customer_id, -int(seq))
        raise RecordRefused(ErrorCode.RECORD_CONFLICT, f"record {seq} was applied with other content")
    await uow.conn.execute("INSERT INTO applied (key, seq) VALUES ($1, $2)", rec.customer_id, int(seq))


@pytest_asyncio.fixture(loop_scope="session")
async def scratch_dsn(stack) -> AsyncIterator[str]:
    name = f"dispatch_{new_id('d').lower()[2:14]}"
    dsn = await stack._pg.ensure_database(name, name, "pw-" + name)
    engine = make_engine(dsn)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(gate.insert().values(id=1))
    await engine.dispose()
    yield dsn


@pytest_asyncio.fixture(loop_scope="session")
async def service(stack, scratch_dsn) -> AsyncIterator[tuple[ServiceContext, str]]:
    topic = f"test.dispatch.{new_id('t').lower()}"
    settings = ServiceSettings(HARMON_KAFKA_BOOTSTRAP=stack.bootstrap, HARMON_BROKER_MODE="embedded",
                               HARMON_PARTITIONS=1, HARMON_MAX_ATTEMPTS=5, database_url=scratch_dsn)
    db = Database(scratch_dsn)
    link = BrokerLink(settings, client_id="dispatch-test", topics=[topic, f"{topic}.dlt"])
    ctx = ServiceContext(name=f"dispatch-{topic}", settings=settings, link=link, db=db, outbox=Outbox(link, db),
                         metrics=Metrics.create())
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


async def rows(dsn: str, sql: str) -> list:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


def envelope(customer: str, name: str, **fields) -> Envelope:
    return Envelope(tenant_id=TENANT, livemode=False, payload=CustomerUpsert(customer_id=customer, name=name), **fields)


async def read_all(bootstrap: str, topic: str, want: int, timeout: float = 20.0) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    out: list = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < want and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


async def test_poison_is_answered_and_dead_lettered_at_once_transient_parks_its_key_and_the_rest_flows(
        stack, scratch_dsn, service):
    ctx, topic = service
    replies = f"test.dispatch.replies.{new_id('r').lower()}"
    await ensure_topics(stack.bootstrap, [replies], 1)
    first = envelope("cus_k1", "good:1")
    batch = [
        ("cus_k2", envelope("cus_k2", "locked:1")),                      # loses a race: parked
        ("cus_k1", first),
        ("cus_k2", envelope("cus_k2", "good:2")),                        # behind k2's parked message
        ("cus_k3", envelope("cus_k3", "poison:1", reply_to=replies, correlation_id="poison-1")),
        ("cus_k1", first),                                                # the same message again: skipped
        ("cus_k1", envelope("cus_k1", "good:2")),
        ("cus_k4", envelope("cus_k4", "broken:1")),                      # never succeeds: dead-lettered
        ("cus_k4", envelope("cus_k4", "good:2")),                        # then its turn comes
    ]
    async def applied_to(key: str, expected: list[int]) -> bool:
        """True once `key`'s applied sequence is exactly `expected` (and fails the wait if it goes past it)."""
        got = [r["seq"] for r in await rows(scratch_dsn, f"SELECT seq FROM applied WHERE key = '{key}' ORDER BY id")]
        assert got == expected[:len(got)], f"{key}: applied {got}, expected {expected}"
        return got == expected

    holder = await asyncpg.connect(scratch_dsn)
    tx = holder.transaction()
    await tx.start()
    await holder.execute("SELECT id FROM gate WHERE id = 1 FOR UPDATE")
    try:
        sent_at = time.monotonic()
        for key, env in batch:  # one produce batch: the consumer gets them in one fetch
            await ctx.link.publish(topic, key, env.to_bytes())
        await ctx.link._producer.flush()

        # the poison message's caller is answered within a second or two, not after retries
        answer = (await read_all(stack.bootstrap, replies, 1))[0]
        answered_in = time.monotonic() - sent_at
        failure = Envelope.from_bytes(answer.value).payload
        assert isinstance(failure, Failure) and failure.code == "parameter_invalid"
        assert answered_in < 3.0, answered_in

        # k1 flows on while k2 waits: in order, once each (the duplicate skipped)
        assert await until(lambda: applied_to("cus_k1", [1, 2]), timeout=10)
        parked = await rows(scratch_dsn, "SELECT key, message_type, attempts FROM parked WHERE key = 'cus_k2' ORDER BY id")
        assert [(r["key"], r["message_type"]) for r in parked] == [("cus_k2", "CustomerUpsert")] * 2
        assert await rows(scratch_dsn, "SELECT seq FROM applied WHERE key = 'cus_k2'") == []
        assert ctx.metrics.duplicates.labels(topic=topic)._value.get() == 1
    finally:
        await tx.rollback()
        await holder.close()

    # the lock is gone: the relay applies k2's messages in their order and the key flows again
    assert await until(lambda: applied_to("cus_k2", [1, 2]), timeout=15)

    # k4's broken message is dead-lettered after HARMON_MAX_ATTEMPTS; the one behind it is then applied
    assert await until(lambda: applied_to("cus_k4", [2]), timeout=30)
    assert await until(lambda: ctx.parking.count_blocked == 0, timeout=10)
    assert await rows(scratch_dsn, "SELECT id FROM parked") == []

    dead = await read_all(stack.bootstrap, f"{topic}.dlt", 2)
    classes = sorted((r.key.decode(), dict((k, v.decode()) for k, v in r.headers)["harmon-dlt-class"]) for r in dead)
    assert classes == [("cus_k3", "permanent"), ("cus_k4", "attempts_exhausted")]
    poison_headers = dict((k, v.decode()) for k, v in next(r for r in dead if r.key == b"cus_k3").headers)
    assert poison_headers["harmon-dlt-attempts"] == "1"  # no retries for a permanent failure
    # nothing k3 or k4 did blocked k1: every good message of every key applied exactly once
    assert sorted((r["key"], r["seq"]) for r in await rows(scratch_dsn, "SELECT key, seq FROM applied")) == [
        ("cus_k1", 1), ("cus_k1", 2), ("cus_k2", 1), ("cus_k2", 2), ("cus_k4", 2)]


def _histogram(ctx: ServiceContext, name: str, topic: str) -> tuple[float, float]:
    """(count, sum) of a histogram's samples for one topic."""
    count = total = 0.0
    for metric in ctx.metrics.registry.collect():
        for sample in metric.samples:
            if sample.labels.get("topic") == topic and sample.name == f"{name}_count":
                count = sample.value
            if sample.labels.get("topic") == topic and sample.name == f"{name}_sum":
                total = sample.value
    return count, total


async def test_a_burst_is_handled_in_batches_one_transaction_each_and_in_key_order(stack, scratch_dsn, service):
    ctx, topic = service
    before_count, before_sum = _histogram(ctx, "harmon_batch_messages", topic)
    burst = [(f"cus_b{k}", envelope(f"cus_b{k}", f"good:{seq}")) for seq in range(1, 21) for k in range(3)]
    for key, env in burst:  # one produce batch: the consumer gets many of them in one fetch
        await ctx.link.publish(topic, key, env.to_bytes())
    await ctx.link._producer.flush()

    async def all_applied() -> bool:
        got = await rows(scratch_dsn, "SELECT key, seq FROM applied WHERE key LIKE 'cus_b%' ORDER BY id")
        return len(got) == len(burst) and got
    got = await until(all_applied, timeout=20, message="the burst applied")
    for k in range(3):  # each key's messages in their order, once each
        assert [r["seq"] for r in got if r["key"] == f"cus_b{k}"] == list(range(1, 21))
    count, total = _histogram(ctx, "harmon_batch_messages", topic)
    assert total - before_sum == len(burst), "every message went through a batch transaction"
    assert count - before_count < len(burst) / 2, f"{count - before_count} transactions for {len(burst)} messages"
    assert await rows(scratch_dsn, "SELECT count(*) AS n FROM inbox WHERE message_type = 'CustomerUpsert' "
                                   "AND message_id = ANY(ARRAY[" + ",".join(f"'{e.message_id}'" for _, e in burst)
                      + "])") == [(len(burst),)]


async def test_an_unreadable_record_inside_a_batch_is_dead_lettered_alone(stack, scratch_dsn, service):
    ctx, topic = service
    key = f"cus_u{new_id('u').lower()[-6:]}"
    await ctx.link.publish(topic, key, envelope(key, "good:1").to_bytes())
    await ctx.link.publish(topic, key, b"{not json")
    await ctx.link.publish(topic, key, envelope(key, "good:2").to_bytes())
    await ctx.link._producer.flush()

    async def both_applied() -> bool:
        got = [r["seq"] for r in await rows(scratch_dsn, f"SELECT seq FROM applied WHERE key = '{key}' ORDER BY id")]
        assert got == [1, 2][:len(got)], got
        return got == [1, 2]
    assert await until(both_applied, timeout=15, message="both good records applied, in order")
    dead = [r for r in await read_all(stack.bootstrap, f"{topic}.dlt", 1) if r.key == key.encode()]
    assert [dict((k, v.decode()) for k, v in r.headers)["harmon-dlt-class"] for r in dead] == ["invalid_message"]


async def test_a_record_the_domain_refuses_goes_to_the_dlt_with_its_code_and_nothing_it_wrote(stack, scratch_dsn,
                                                                                              service):
    ctx, topic = service
    key = f"cus_r{new_id('r').lower()[-6:]}"
    for name in ("good:1", "refused:2", "good:3"):  # one fetch: the refusal splits the batch, the rest applies
        await ctx.link.publish(topic, key, envelope(key, name).to_bytes())
    await ctx.link._producer.flush()

    async def applied() -> bool:
        got = [r["seq"] for r in await rows(scratch_dsn, f"SELECT seq FROM applied WHERE key = '{key}' ORDER BY id")]
        assert got == [1, 3][:len(got)], got  # never -2: the refused record's write was rolled back
        return got == [1, 3]
    assert await until(applied, timeout=15, message="the good records applied, in order")
    dead = [r for r in await read_all(stack.bootstrap, f"{topic}.dlt", 1) if r.key == key.encode()]
    assert len(dead) == 1
    headers = dict((k, v.decode()) for k, v in dead[0].headers)
    assert headers["harmon-dlt-class"] == "permanent" and headers["harmon-dlt-code"] == "record_conflict"
    assert headers["harmon-dlt-reason"] == "record_conflict: record 2 was applied with other content"
    assert headers["harmon-dlt-attempts"] == "1"  # a refusal is never retried
