"""`harmon erp fulfil|deliver|pay|cancel` against a real broker (the embedded Tansu; no services, no PostgreSQL).

Each command publishes its record for the `harmon dev` a data dir names (credentials.json and a live stack.lock,
this process standing in for the supervisor); the test reads it back from the topic. Where `fulfil` must read
the order, the test answers the GetOrder on orders.commands.v1 as orders would (tests/e2e/test_lifecycle.py runs
the commands against the real orders service).
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from libs.contracts import topics
from libs.contracts.base import Failure
from libs.contracts.envelope import Envelope
from libs.contracts.erp import (DeliveryRecorded, FulfilmentLine, FulfilmentRecorded, OrderCancellationRecorded,
                                PaymentRecorded)
from libs.contracts.ids import new_id
from libs.contracts.orders import GetOrder, OrderLine, OrderView
from libs.runtime.kafka import ensure_topics
from libs.stack.cli import build_parser
from libs.stack.embedded import EmbeddedBroker
from libs.stack.erp import REPLY_TOPIC

PARTITIONS = 2
TOPICS = [topics.ERP_FULFILMENTS, topics.ERP_DELIVERIES, topics.ERP_ORDER_CANCELLATIONS, topics.ERP_PAYMENTS,
          topics.ORDERS_COMMANDS]
TENANT = "ten_01TESTERPCLI"


@pytest_asyncio.fixture
async def bootstrap(tmp_path: Path) -> AsyncIterator[str]:
    broker = EmbeddedBroker(tmp_path / "run")
    try:
        address = await broker.start()
        await ensure_topics(address, [t.name for t in TOPICS], PARTITIONS)
        yield address
    finally:
        await broker.stop()


@pytest.fixture
def dev_dir(tmp_path: Path, bootstrap: str) -> Path:
    """A running `harmon dev`'s data dir as the commands find it: this process holds its stack.lock."""
    path = tmp_path / "dev"
    path.mkdir()
    (path / "credentials.json").write_text(json.dumps({"kafka_bootstrap": bootstrap, "tenant_id": TENANT,
                                                       "livemode": False}))
    (path / "stack.lock").write_text(str(os.getpid()))
    return path


async def harmon(capsys, *argv: str) -> tuple[int, str, str]:
    args = build_parser().parse_args(["erp", *argv])
    code = await args.run(args)
    out, err = capsys.readouterr()
    return code, out, err


async def read_back(bootstrap: str, topic: str, until: Callable[..., Awaitable], want: int = 1) -> list:
    """Every record on `topic` (all partitions), once `want` of them arrived; exactly `want` are there."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=50)
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    await consumer.start()
    got: list = []
    try:
        consumer.assign(tps)

        async def enough() -> bool:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                got.extend(records)
            return len(got) >= want
        await until(enough, timeout=15, message=f"{want} record(s) on {topic}")
        assert sum((await consumer.end_offsets(tps)).values()) == want
    finally:
        await consumer.stop()
    return got


def an_order(order_id: str, fulfilled: dict[str, int] | None = None) -> OrderView:
    """An order of two lines: 12 RICE (one CASE) and 6 MILK, as orders would answer GetOrder."""
    fulfilled = fulfilled or {}

    def line(line_id: str, sku: str, qty: int, price: int, rate: int) -> OrderLine:
        subtotal = qty * price
        tax = subtotal * rate // 10_000
        return OrderLine(line_id=line_id, sku=sku, order_uom="EA", order_quantity=qty, factor=1, base_uom="EA",
                         base_quantity=qty, unit_price=price, price_source="list", subtotal=subtotal,
                         tax_category="standard" if rate else "zero_rated", tax_rate_bp=rate, tax=tax,
                         total=subtotal + tax, quantity_fulfilled=fulfilled.get(line_id, 0))
    lines = [line("cli_01RICE", "RICE-2KG", 12, 39_900, 1_500), line("cli_01MILK", "MILK-UHT-1L", 6, 32_000, 0)]
    return OrderView(order_id=order_id, cart_id="cart_01X", customer_id="cus_01BUYER", bill_to_id="cus_01BUYER",
                     status="partially_fulfilled" if fulfilled else "confirmed", terms="net_30", currency="JMD",
                     subtotal=sum(ln.subtotal for ln in lines), tax=sum(ln.tax for ln in lines),
                     total=sum(ln.total for ln in lines), notes=None, po_number=None, lines=lines,
                     created_at=datetime.now(UTC))


class OrdersStandIn:
    """Answers GetOrder on orders.commands.v1 with `answer(order_id)`, on the query's reply topic."""

    def __init__(self, bootstrap: str, answer: Callable[[str], object]) -> None:
        self.bootstrap, self.answer = bootstrap, answer
        self.asked: list[Envelope] = []

    async def __aenter__(self) -> "OrdersStandIn":
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                         auto_offset_reset="earliest", fetch_max_wait_ms=20)
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await self.consumer.start()
        await self.producer.start()
        self.consumer.assign([TopicPartition(topics.ORDERS_COMMANDS.name, p) for p in range(PARTITIONS)])
        self.task = asyncio.create_task(self._serve())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.consumer.stop()
        await self.producer.stop()

    async def _serve(self) -> None:
        async for rec in self.consumer:
            query = Envelope.from_bytes(rec.value)
            assert isinstance(query.payload, GetOrder) and rec.key == query.payload.order_id.encode()
            self.asked.append(query)
            reply = Envelope(tenant_id=query.tenant_id, livemode=query.livemode, correlation_id=query.correlation_id,
                             payload=self.answer(query.payload.order_id))
            await self.producer.send_and_wait(query.reply_to, reply.to_bytes(), key=query.correlation_id.encode())


async def test_fulfil_with_line_ids_publishes_them_as_given(bootstrap, dev_dir, capsys, until):
    order = new_id("ord")
    code, out, err = await harmon(capsys, "fulfil", order, "--line", "cli_01RICE=5", "--line", "cli_01MILK=6",
                                  "--id", "SHIP-1001", "--at", "2026-11-23T12:00:00Z", "--carrier", "Knutsford",
                                  "--tracking-number", "KX-77", "--data-dir", str(dev_dir))
    assert code == 0, err
    [rec] = await read_back(bootstrap, topics.ERP_FULFILMENTS.name, until)
    env = Envelope.from_bytes(rec.value)
    assert rec.key == order.encode()
    assert (env.tenant_id, env.livemode) == (TENANT, False)
    assert env.payload == FulfilmentRecorded(
        fulfilment_id="SHIP-1001", order_id=order, shipped_at=datetime(2026, 11, 23, 12, tzinfo=UTC),
        lines=[FulfilmentLine(line_id="cli_01RICE", quantity=5), FulfilmentLine(line_id="cli_01MILK", quantity=6)],
        carrier="Knutsford", tracking_number="KX-77")
    assert "SHIP-1001" in out and env.message_id in out and f"{topics.ERP_FULFILMENTS.name}[{rec.partition}]" in out


async def test_fulfil_without_lines_ships_what_remains_of_each_line(bootstrap, dev_dir, capsys, until):
    order = new_id("ord")
    async with OrdersStandIn(bootstrap, lambda oid: an_order(oid, fulfilled={"cli_01RICE": 5})) as orders:
        code, out, err = await harmon(capsys, "fulfil", order, "--data-dir", str(dev_dir), "--json")
    assert code == 0, err
    [asked] = orders.asked
    assert (asked.payload.order_id, asked.payload.customer_id, asked.tenant_id, asked.reply_to) == (
        order, None, TENANT, REPLY_TOPIC)
    [rec] = await read_back(bootstrap, topics.ERP_FULFILMENTS.name, until)
    record = Envelope.from_bytes(rec.value).payload
    assert [(ln.line_id, ln.quantity) for ln in record.lines] == [("cli_01RICE", 7), ("cli_01MILK", 6)]
    assert record.fulfilment_id.startswith("ful_") and record.order_id == order
    printed = json.loads(out)
    assert (printed["topic"], printed["key"], printed["record"]["fulfilment_id"]) == (
        topics.ERP_FULFILMENTS.name, order, record.fulfilment_id)
    assert (printed["partition"], printed["offset"]) == (rec.partition, rec.offset)


async def test_fulfil_by_sku_and_an_order_orders_does_not_know(bootstrap, dev_dir, capsys, until):
    known = new_id("ord")
    answers = {known: an_order(known)}
    async with OrdersStandIn(bootstrap, lambda oid: answers.get(oid) or Failure(
            code="resource_missing", message=f"no order {oid}", param="id")):
        code, _, err = await harmon(capsys, "fulfil", known, "--line", "MILK-UHT-1L=2", "--data-dir", str(dev_dir))
        assert code == 0, err
        code, _, err = await harmon(capsys, "fulfil", known, "--line", "BLEACH-3L=1", "--data-dir", str(dev_dir))
        assert code == 1 and "no line or sku 'BLEACH-3L'" in err
        code, _, err = await harmon(capsys, "fulfil", new_id("ord"), "--data-dir", str(dev_dir))
        assert code == 1 and "resource_missing" in err
    [rec] = await read_back(bootstrap, topics.ERP_FULFILMENTS.name, until)  # only the first was published
    assert [(ln.line_id, ln.quantity) for ln in Envelope.from_bytes(rec.value).payload.lines] == [("cli_01MILK", 2)]


async def test_fulfil_without_lines_of_an_order_with_nothing_left_to_ship_says_so(bootstrap, dev_dir, capsys):
    shipped, cancelled = new_id("ord"), new_id("ord")
    answers = {shipped: an_order(shipped, fulfilled={"cli_01RICE": 12, "cli_01MILK": 6}),
               cancelled: an_order(cancelled).model_copy(update={"status": "cancelled"})}
    async with OrdersStandIn(bootstrap, answers.__getitem__):
        code, _, err = await harmon(capsys, "fulfil", shipped, "--data-dir", str(dev_dir))
        assert code == 1 and "fulfilled already" in err
        code, _, err = await harmon(capsys, "fulfil", cancelled, "--data-dir", str(dev_dir))
        assert code == 1 and "is cancelled" in err
    assert await _ends(bootstrap, topics.ERP_FULFILMENTS.name) == 0


async def test_deliver_pay_and_cancel_publish_on_their_topics_with_their_keys(bootstrap, dev_dir, capsys, until):
    order, account, invoice = new_id("ord"), new_id("cus"), new_id("inv")
    code, out, err = await harmon(capsys, "deliver", order, "--fulfilment", "SHIP-1001",
                                  "--at", "2026-11-24T09:30:00-05:00", "--data-dir", str(dev_dir))
    assert code == 0, err
    code, paid, err = await harmon(capsys, "pay", account, "103400", "--invoice", invoice, "--method", "cheque",
                                   "--reference", "CHQ-881", "--data-dir", str(dev_dir))
    assert code == 0, err
    assert "JMD 1,034.00" in paid
    code, _, err = await harmon(capsys, "pay", account, "500", "--id", "PAY-2", "--currency", "USD",
                                "--at", "2026-11-25T00:00:00Z", "--data-dir", str(dev_dir))
    assert code == 0, err
    code, out, err = await harmon(capsys, "cancel", order, "--reason", "Customer closed", "--data-dir", str(dev_dir))
    assert code == 0, err

    [delivery] = await read_back(bootstrap, topics.ERP_DELIVERIES.name, until)
    assert delivery.key == order.encode()
    assert Envelope.from_bytes(delivery.value).payload == DeliveryRecorded(
        order_id=order, fulfilment_id="SHIP-1001", delivered_at=datetime(2026, 11, 24, 14, 30, tzinfo=UTC))

    payments = await read_back(bootstrap, topics.ERP_PAYMENTS.name, until, want=2)
    assert {p.key for p in payments} == {account.encode()}
    first, second = sorted((Envelope.from_bytes(p.value).payload for p in payments), key=lambda r: r.amount,
                           reverse=True)
    assert isinstance(first, PaymentRecorded) and first.payment_id.startswith("pay_")
    assert f"payment_id {first.payment_id}" in paid  # the generated id, told
    assert (first.customer_id, first.amount, first.currency, first.invoice_id, first.method, first.reference) == (
        account, 103_400, "JMD", invoice, "cheque", "CHQ-881")
    assert abs((datetime.now(UTC) - first.received_at).total_seconds()) < 60  # now, by default
    assert second == PaymentRecorded(payment_id="PAY-2", customer_id=account, amount=500, currency="USD",
                                     received_at=datetime(2026, 11, 25, tzinfo=UTC), method="bank_transfer")

    [cancel] = await read_back(bootstrap, topics.ERP_ORDER_CANCELLATIONS.name, until)
    assert cancel.key == order.encode()
    assert Envelope.from_bytes(cancel.value).payload == OrderCancellationRecorded(order_id=order,
                                                                                  reason="Customer closed")
    assert order in out and "Customer closed" in out


async def test_without_a_running_harmon_dev_nothing_is_published(bootstrap, dev_dir, tmp_path, capsys, until):
    # a stack that stopped: its supervisor is gone, its credentials.json names the broker still
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (dev_dir / "stack.lock").write_text(dead.stdout.strip())
    code, out, err = await harmon(capsys, "cancel", new_id("ord"), "--data-dir", str(dev_dir))
    assert (code, out) == (2, "")
    assert f"no `harmon dev` is running in {dev_dir}" in err and "harmon dev --data-dir" in err
    # a directory that never had one
    code, _, err = await harmon(capsys, "pay", new_id("cus"), "100", "--data-dir", str(tmp_path / "nothing"))
    assert code == 2 and "no `harmon dev` is running" in err
    # the command's own exit code, as a person sees it
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "libs.stack.cli", "erp", "deliver", new_id("ord"),
                         "--data-dir", str(tmp_path / "nothing")], capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2 and "no `harmon dev` is running" in done.stderr, done.stderr
    # --bootstrap names a broker directly, with the tenant
    code, _, err = await harmon(capsys, "cancel", new_id("ord"), "--bootstrap", bootstrap)
    assert code == 2 and "--tenant" in err
    ends = await _ends(bootstrap, topics.ERP_ORDER_CANCELLATIONS.name, topics.ERP_PAYMENTS.name,
                       topics.ERP_DELIVERIES.name)
    assert ends == 0


async def test_a_record_its_fields_refuse_is_not_published(bootstrap, dev_dir, capsys):
    code, _, err = await harmon(capsys, "pay", new_id("cus"), "100", "--currency", "jmd", "--data-dir", str(dev_dir))
    assert code == 2 and "currency" in err
    code, _, err = await harmon(capsys, "deliver", "not-an-order", "--data-dir", str(dev_dir))
    assert code == 2 and "order_id" in err
    code, _, err = await harmon(capsys, "fulfil", new_id("ord"), "--line", "cli_01RICE=0", "--data-dir", str(dev_dir))
    assert code == 2 and "LINE=QTY" in err
    code, _, err = await harmon(capsys, "deliver", new_id("ord"), "--at", "2026-11-24 09:30", "--data-dir",
                                str(dev_dir))
    assert code == 2 and "no offset" in err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["erp", "pay", "cus_1", "10.34"])  # minor units, not a decimal
    with pytest.raises(SystemExit):
        build_parser().parse_args(["erp", "pay", "cus_1", "100", "--method", "barter"])
    assert await _ends(bootstrap, *(t.name for t in TOPICS if t is not topics.ORDERS_COMMANDS)) == 0


async def _ends(bootstrap: str, *names: str) -> int:
    """How many records the topics hold in all."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(n, p) for n in names for p in range(PARTITIONS)])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def test_fulfil_asks_the_real_orders_service(stack, capsys):
    """The GetOrder round trip with orders itself (HARMON_TEST_SERVICES=orders is enough): an order it does not
    have is said so, and nothing is published."""
    order = new_id("ord")
    code, out, err = await harmon(capsys, "fulfil", order, "--bootstrap", stack.bootstrap,
                                  "--tenant", new_id("ten"))
    assert (code, out) == (1, "")
    assert f"order {order}: resource_missing" in err
