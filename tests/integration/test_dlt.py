"""`harmon dlt list|replay` against a real broker (the embedded Tansu only: no services, no PostgreSQL)."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from libs.contracts import topics
from libs.contracts.envelope import Envelope
from libs.contracts.erp import ProductUpsert
from libs.runtime.kafka import ensure_topics
from libs.stack.cli import build_parser
from libs.stack.embedded import EmbeddedBroker

SOURCE = topics.ERP_PRODUCTS.name
DLT = topics.ERP_PRODUCTS.dlt


def dlt_headers(cls: str, reason: str, partition: int, offset: int, attempts: int = 1) -> list[tuple[str, bytes]]:
    # what libs/runtime/dispatch.py `dead_letter` writes
    return [(k, v.encode()) for k, v in {
        "harmon-dlt-reason": reason, "harmon-dlt-class": cls, "harmon-dlt-source-topic": SOURCE,
        "harmon-dlt-partition": str(partition), "harmon-dlt-offset": str(offset),
        "harmon-dlt-attempts": str(attempts), "harmon-dlt-consumer": "pricing"}.items()]


@pytest_asyncio.fixture
async def bootstrap(tmp_path: Path) -> AsyncIterator[str]:
    broker = EmbeddedBroker(tmp_path / "run")
    try:
        address = await broker.start()
        await ensure_topics(address, [SOURCE, DLT, "orphan.v1.dlt"], 2)
        yield address
    finally:
        await broker.stop()


async def harmon(capsys, *argv: str) -> tuple[int, str, str]:
    args = build_parser().parse_args(["dlt", *argv])
    code = await args.run(args)
    out, err = capsys.readouterr()
    return code, out, err


async def topic_names(address: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=address)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def read_source(address: str, until, want: int) -> list:
    consumer = AIOKafkaConsumer(bootstrap_servers=address, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=50)
    await consumer.start()
    got: list = []
    try:
        consumer.assign([TopicPartition(SOURCE, p) for p in range(2)])

        async def enough():
            for records in (await consumer.getmany(timeout_ms=200)).values():
                got.extend(records)
            return len(got) >= want
        await until(enough, timeout=15, message=f"{want} record(s) on {SOURCE}")
        # and no more than that: everything up to the end was read
        ends = await consumer.end_offsets([TopicPartition(SOURCE, p) for p in range(2)])
        assert sum(ends.values()) == want, ends
    finally:
        await consumer.stop()
    return got


async def test_list_then_replay_one_dead_letter_to_its_source_topic(bootstrap, capsys, until):
    env = Envelope(tenant_id="ten_1", livemode=False, reply_to="gateway.replies.gw1", correlation_id="c1",
                   payload=ProductUpsert(sku="RICE-2KG", name="Rice 2 kg", base_uom="EA", units={"CASE": 12}))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        good = await producer.send_and_wait(DLT, env.to_bytes(), key=b"RICE-2KG", headers=dlt_headers(
            "permanent", "IntegrityError: price list missing", 1, 17))
        bad = await producer.send_and_wait(DLT, b"{not json", key=b"bad-1", headers=dlt_headers(
            "invalid_message", "invalid message: 1 validation error for Envelope", 0, 4))
    finally:
        await producer.stop()

    code, out, err = await harmon(capsys, "list", SOURCE, "--bootstrap", bootstrap, "--json")
    assert code == 0, err
    listed = {(d["partition"], d["offset"]): d for d in json.loads(out)}
    assert set(listed) == {(good.partition, good.offset), (bad.partition, bad.offset)}
    g, b = listed[(good.partition, good.offset)], listed[(bad.partition, bad.offset)]
    assert (g["key"], g["type"], g["message_id"], g["decodes"], g["class"]) == (
        "RICE-2KG", "ProductUpsert", env.message_id, True, "permanent")
    assert g["headers"]["harmon-dlt-source-topic"] == SOURCE and g["headers"]["harmon-dlt-offset"] == "17"
    assert g["headers"]["harmon-dlt-consumer"] == "pricing" and g["tenant_id"] == "ten_1"
    assert (b["key"], b["type"], b["decodes"], b["class"]) == ("bad-1", None, False, "invalid_message")

    # the .dlt name works too, and people get one block per record
    code, out, _ = await harmon(capsys, "list", DLT, "--bootstrap", bootstrap, "--limit", "1")
    assert code == 0 and out.startswith(f"{DLT}: 1 dead letter(s) (first 1)")
    assert out.count("reason: ") == 1

    # a dry run sends nothing
    code, out, err = await harmon(capsys, "replay", SOURCE, "--bootstrap", bootstrap, "--all", "--dry-run")
    assert code == 0, err
    assert "would send 2 of 2" in out

    position = f"{good.partition}:{good.offset}"
    code, out, err = await harmon(capsys, "replay", SOURCE, "--bootstrap", bootstrap, "--offset", position)
    assert code == 0, err
    assert "sent 1 of 2" in out and env.message_id in out and "bad-1" not in out
    assert f"note: {position} came from HTTP requests" in out  # its client was answered long ago

    [replayed] = await read_source(bootstrap, until, 1)  # the dry run sent nothing, the replay one
    assert (replayed.key, replayed.value) == (b"RICE-2KG", env.to_bytes())
    assert dict(replayed.headers) == {"harmon-replay-of": f"{DLT}:{position}".encode()}
    assert Envelope.from_bytes(replayed.value) == env
    assert f"{SOURCE}[{replayed.partition}]@{replayed.offset}" in out

    # the DLT keeps what was replayed
    code, out, _ = await harmon(capsys, "list", SOURCE, "--bootstrap", bootstrap, "--json")
    assert len(json.loads(out)) == 2


async def test_nothing_is_created_by_asking(bootstrap, capsys):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait("orphan.v1.dlt", b"{}", key=b"k", headers=[
            ("harmon-dlt-source-topic", b"orphan.v1"), ("harmon-dlt-class", b"invalid_message")])
    finally:
        await producer.stop()
    code, _, err = await harmon(capsys, "list", "nope.v1", "--bootstrap", bootstrap)
    assert code == 1 and "no topic nope.v1.dlt" in err
    # a source topic that is gone is not made (with the broker's partition count) by a replay
    code, _, err = await harmon(capsys, "replay", "orphan.v1", "--bootstrap", bootstrap, "--all")
    assert code == 1 and "no topic orphan.v1 " in err
    assert not {"nope.v1.dlt", "orphan.v1"} & await topic_names(bootstrap)
