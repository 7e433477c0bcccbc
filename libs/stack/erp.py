"""`harmon erp fulfil|deliver|pay|cancel`: publish the ERP's lifecycle records for a running `harmon dev`.

What an ERP sends over Kafka (docs/topics.md, "Lifecycle records"), without writing Kafka code: one envelope per
record on its `erp.*.v1` topic, keyed as the topic says (order id; the bill-to account for payments), in the dev
tenant's test mode. The broker and the tenant come from `<data-dir>/credentials.json` of the running stack (as
`harmon dlt` finds it), or from `--bootstrap` and `--tenant`. `fulfil` without `--line` (or with a sku for LINE)
reads the order with a GetOrder over the broker, as the gateway asks orders: no database and no API key needed.

Publishing is all it does: orders applies the record, or dead-letters it with its reason
(`harmon dlt list erp.fulfilments.v1`).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from libs.contracts import topics
from libs.contracts.base import Failure, Message
from libs.contracts.envelope import Envelope
from libs.contracts.erp import (DeliveryRecorded, FulfilmentLine, FulfilmentRecorded, OrderCancellationRecorded,
                                PaymentMethod, PaymentRecorded)
from libs.contracts.ids import new_id
from libs.contracts.money import DEFAULT_CURRENCY
from libs.contracts.orders import GetOrder, OrderView

from .admin_cli import EXIT_FAILED, EXIT_USAGE, CommandError, running_dev_credentials

REPLY_TOPIC = "harmon.erp.replies"  # GetOrder's answers (1 partition, like harmon.demo.replies)
QUERY_TIMEOUT_S = 10.0
FULFILMENT, PAYMENT = "ful", "pay"  # generated ids: ful_01J…, pay_01J… (the ERP's own ids are any Code)
DEFAULT_REASON = "Cancelled by the merchant"


@dataclass(frozen=True)
class Target:
    """Where to publish: the broker, and whose records they are."""

    bootstrap: str
    tenant_id: str
    livemode: bool


def find_target(args: argparse.Namespace) -> Target:
    """--bootstrap with --tenant, else the `harmon dev` running on --data-dir (default ./.harmon).

    Not running (no credentials.json, or the supervisor in stack.lock is gone): CommandError, exit 2."""
    if args.bootstrap:
        if not args.tenant:
            raise CommandError("--bootstrap needs --tenant TEN (whose records they are)", EXIT_USAGE)
        return Target(args.bootstrap, args.tenant, args.live)
    data_dir = Path(args.data_dir).absolute()
    hint = f"start it with: harmon dev --data-dir {data_dir} (or give --bootstrap HOST:PORT --tenant TEN)"
    credentials_path = running_dev_credentials(data_dir, hint)
    try:
        credentials = json.loads(credentials_path.read_text())
        bootstrap = credentials["kafka_bootstrap"]
        tenant_id = args.tenant or credentials["tenant_id"]
        livemode = args.live or bool(credentials.get("livemode", False))
    except (OSError, ValueError, KeyError) as exc:
        raise CommandError(f"cannot read the broker and tenant from {credentials_path}: {exc}") from None
    return Target(bootstrap, tenant_id, livemode)


def parse_time(text: str | None) -> datetime:
    """An ISO 8601 time with its offset (`2026-11-23T12:00:00Z`), or now (UTC)."""
    if text is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{text!r} is not an ISO 8601 time (2026-11-23T12:00:00Z)", EXIT_USAGE) from None
    if at.tzinfo is None:
        raise CommandError(f"{text!r} has no offset: give Z or +00:00", EXIT_USAGE)
    return at.astimezone(UTC)


def parse_lines(raw: list[str]) -> list[tuple[str, int]]:
    """`LINE=QTY` pairs, LINE a line id (cli_…) or a sku of the order, QTY base units."""
    pairs: list[tuple[str, int]] = []
    for item in raw:
        line, sep, qty = item.rpartition("=")
        if not sep or not line or not qty.strip().isdigit() or int(qty) < 1:
            raise CommandError(f"--line {item!r}: give LINE=QTY, LINE a line id or sku, QTY base units (≥ 1)",
                               EXIT_USAGE)
        pairs.append((line.strip(), int(qty)))
    return pairs


class OrderReader:
    """GetOrder over the broker, answered by orders on our own reply topic (matched by correlation id)."""

    def __init__(self, target: Target, producer: Any) -> None:
        self.target, self.producer = target, producer

    async def get(self, order_id: str) -> OrderView:
        from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: PLC0415 (only these commands need it)

        from libs.runtime.kafka import ensure_topics  # noqa: PLC0415

        await ensure_topics(self.target.bootstrap, [REPLY_TOPIC], 1)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.target.bootstrap, enable_auto_commit=False,
                                    group_id=None, fetch_max_wait_ms=20, client_id="harmon-erp")
        tp = TopicPartition(REPLY_TOPIC, 0)
        consumer.assign([tp])
        await consumer.start()
        try:
            await consumer.seek_to_end(tp)
            await consumer.position(tp)  # the offset is fixed before the question goes out
            correlation = f"erp-{secrets.token_hex(8)}"
            query = Envelope(tenant_id=self.target.tenant_id, livemode=self.target.livemode,
                             correlation_id=correlation, reply_to=REPLY_TOPIC, payload=GetOrder(order_id=order_id))
            await self.producer.send_and_wait(topics.ORDERS_COMMANDS.name, query.to_bytes(), key=order_id.encode())
            deadline = asyncio.get_running_loop().time() + QUERY_TIMEOUT_S
            while asyncio.get_running_loop().time() < deadline:
                for records in (await consumer.getmany(tp, timeout_ms=200)).values():
                    for rec in records:
                        try:
                            env = Envelope.from_bytes(rec.value)
                        except ValidationError:
                            continue
                        if env.correlation_id != correlation:
                            continue
                        if isinstance(env.payload, OrderView):
                            return env.payload
                        if isinstance(env.payload, Failure):
                            raise CommandError(f"order {order_id}: {env.payload.code}: {env.payload.message}")
                        raise CommandError(f"order {order_id}: unexpected answer {env.type}")
            raise CommandError(f"orders did not answer GetOrder {order_id} within {QUERY_TIMEOUT_S:.0f} s "
                               "(is the orders service running?)")
        finally:
            await consumer.stop()


def fulfilment_lines(order: OrderView, wanted: list[tuple[str, int]]) -> list[FulfilmentLine]:
    """The lines to ship: each `wanted` LINE resolved to the order's line id, or (none wanted) every line's rest."""
    if not wanted:
        if order.status == "cancelled":
            raise CommandError(f"order {order.order_id} is cancelled: nothing to fulfil")
        rest = [FulfilmentLine(line_id=ln.line_id, quantity=ln.base_quantity - ln.quantity_fulfilled)
                for ln in order.lines if ln.base_quantity > ln.quantity_fulfilled]
        if not rest:
            raise CommandError(f"order {order.order_id} is fulfilled already: nothing left to ship")
        return rest
    by_sku = {ln.sku: ln.line_id for ln in order.lines}
    ids = {ln.line_id for ln in order.lines}
    lines = []
    for line, qty in wanted:
        if line not in ids and line not in by_sku:
            raise CommandError(f"order {order.order_id} has no line or sku {line!r} "
                               f"(its lines: {', '.join(f'{ln.line_id} {ln.sku}' for ln in order.lines)})")
        lines.append(FulfilmentLine(line_id=line if line in ids else by_sku[line], quantity=qty))
    return lines


def _needs_order(wanted: list[tuple[str, int]]) -> bool:
    return not wanted or any(not line.startswith("cli_") for line, _ in wanted)


async def build_record(args: argparse.Namespace, target: Target, producer: Any) -> tuple[topics.TopicSpec, str, Message]:
    """The record the command publishes, its topic and its key."""
    if args.erp == "fulfil":
        wanted = parse_lines(args.line or [])
        if _needs_order(wanted):
            order = await OrderReader(target, producer).get(args.order)
            lines = fulfilment_lines(order, wanted)
        else:  # line ids only: published as given (orders refuses what does not fit, to the .dlt)
            lines = [FulfilmentLine(line_id=line, quantity=qty) for line, qty in wanted]
        record: Message = FulfilmentRecorded(
            fulfilment_id=args.id or new_id(FULFILMENT), order_id=args.order, lines=lines,
            shipped_at=parse_time(args.at), carrier=args.carrier, tracking_number=args.tracking_number)
        return topics.ERP_FULFILMENTS, args.order, record
    if args.erp == "deliver":
        record = DeliveryRecorded(order_id=args.order, fulfilment_id=args.fulfilment, delivered_at=parse_time(args.at))
        return topics.ERP_DELIVERIES, args.order, record
    if args.erp == "cancel":
        return topics.ERP_ORDER_CANCELLATIONS, args.order, OrderCancellationRecorded(order_id=args.order,
                                                                                     reason=args.reason)
    record = PaymentRecorded(payment_id=args.id or new_id(PAYMENT), customer_id=args.customer, amount=args.amount,
                             currency=args.currency, invoice_id=args.invoice, received_at=parse_time(args.at),
                             method=PaymentMethod(args.method), reference=args.reference)
    return topics.ERP_PAYMENTS, args.customer, record


def _summary(spec: topics.TopicSpec, key: str, env: Envelope, partition: int, offset: int) -> str:
    r: Any = env.payload
    head = f"published {env.type} on {spec.name}[{partition}]@{offset} (key {key}, message {env.message_id})"
    if isinstance(r, FulfilmentRecorded):
        what = [f"fulfilment_id {r.fulfilment_id}", f"order {r.order_id}",
                "lines " + ", ".join(f"{ln.line_id}={ln.quantity}" for ln in r.lines),
                f"shipped_at {r.shipped_at.isoformat()}"]
    elif isinstance(r, DeliveryRecorded):
        what = [f"order {r.order_id}", f"fulfilment {r.fulfilment_id or 'every one not delivered yet'}",
                f"delivered_at {r.delivered_at.isoformat()}"]
    elif isinstance(r, OrderCancellationRecorded):
        what = [f"order {r.order_id}", f"reason {r.reason!r}"]
    else:
        what = [f"payment_id {r.payment_id}", f"account {r.customer_id}", f"amount {r.amount} ({r.currency} "
                f"{r.amount / 100:,.2f})", f"invoice {r.invoice_id or 'oldest due first'}", f"method {r.method}",
                f"received_at {r.received_at.isoformat()}"]
    return head + "\n  " + "\n  ".join(what)


async def run_erp_command(args: argparse.Namespace) -> int:
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415
    from aiokafka.errors import KafkaError  # noqa: PLC0415

    name = f"harmon erp {args.erp}"
    try:
        target = find_target(args)
        producer = AIOKafkaProducer(bootstrap_servers=target.bootstrap, acks="all", linger_ms=0,
                                    client_id="harmon-erp", request_timeout_ms=10000)
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise CommandError(f"cannot reach the broker at {target.bootstrap}: {exc}") from None
        try:
            try:
                spec, key, record = await build_record(args, target, producer)
            except ValidationError as exc:  # what the record's own fields refuse (a bad id, a negative amount)
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in exc.errors())
                raise CommandError(f"not a valid record: {problems}", EXIT_USAGE) from None
            env = Envelope(tenant_id=target.tenant_id, livemode=target.livemode, payload=record)
            sent = await producer.send_and_wait(spec.name, env.to_bytes(), key=key.encode())
        finally:
            await producer.stop()
    except CommandError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return exc.code
    except (OSError, asyncio.TimeoutError, KafkaError) as exc:
        print(f"{name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps({"topic": spec.name, "key": key, "partition": sent.partition, "offset": sent.offset,
                          "message_id": env.message_id, "type": env.type, "tenant_id": env.tenant_id,
                          "livemode": env.livemode, "record": record.model_dump(mode="json")}))
    else:
        print(_summary(spec, key, env, sent.partition, sent.offset))
    return 0


def _amount(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("integer minor units (cents), at least 1: 103400 is JMD 1,034.00")
    return int(text)


def add_erp_parsers(commands: argparse._SubParsersAction) -> None:
    erp = commands.add_parser(
        "erp", help="publish the ERP's lifecycle records (fulfil, deliver, pay, cancel) for a running `harmon dev`",
        description="Each command publishes one record on its erp.*.v1 topic, in the dev tenant's test mode, prints "
                    "what it published and exits 0 (2: no `harmon dev` running, or a wrong request; 1: the broker "
                    "or the order could not be reached). Orders applies it, or dead-letters it with the reason: "
                    "`harmon dlt list erp.fulfilments.v1`.")
    actions = erp.add_subparsers(dest="erp", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", default=".harmon", metavar="DIR",
                       help="the running `harmon dev`'s data dir (default: .harmon)")
        p.add_argument("--bootstrap", metavar="HOST:PORT", help="another broker (needs --tenant)")
        p.add_argument("--tenant", metavar="TEN", help="whose records (default: the dev tenant)")
        p.add_argument("--live", action="store_true", help="live mode (default: test mode)")
        p.add_argument("--json", action="store_true", help="print the published record as one JSON object")
        p.set_defaults(run=run_erp_command)

    fulfil = actions.add_parser("fulfil", help="FulfilmentRecorded: a shipment (it issues an invoice)",
                                description="Without --line, ships every line's remaining quantity (read from "
                                            "orders over the broker).")
    fulfil.add_argument("order", metavar="ORDER", help="the order id (ord_…)")
    fulfil.add_argument("--line", action="append", metavar="LINE=QTY",
                        help="ship QTY base units of LINE (a line id cli_…, or a sku of the order); repeatable")
    fulfil.add_argument("--id", metavar="FULFILMENT_ID", help="the ERP's fulfilment id (default: a new ful_…)")
    fulfil.add_argument("--at", metavar="TIME", help="shipped_at, ISO 8601 with offset (default: now)")
    fulfil.add_argument("--carrier", metavar="NAME")
    fulfil.add_argument("--tracking-number", metavar="CODE")
    common(fulfil)

    deliver = actions.add_parser("deliver", help="DeliveryRecorded: a fulfilment (or every one shipped) delivered")
    deliver.add_argument("order", metavar="ORDER")
    deliver.add_argument("--fulfilment", metavar="F", help="this fulfilment only (default: every one not delivered)")
    deliver.add_argument("--at", metavar="TIME", help="delivered_at, ISO 8601 with offset (default: now)")
    common(deliver)

    pay = actions.add_parser("pay", help="PaymentRecorded: money received from a bill-to account")
    pay.add_argument("customer", metavar="CUSTOMER", help="the bill-to account that paid (cus_…)")
    pay.add_argument("amount", type=_amount, metavar="AMOUNT", help="integer minor units (103400 = JMD 1,034.00)")
    pay.add_argument("--invoice", metavar="INV", help="the invoice it pays (default: open invoices, oldest due first)")
    pay.add_argument("--method", default=PaymentMethod.BANK_TRANSFER.value, choices=[m.value for m in PaymentMethod],
                     help="default: bank_transfer")
    pay.add_argument("--currency", default=DEFAULT_CURRENCY, metavar="CUR", help=f"default: {DEFAULT_CURRENCY}")
    pay.add_argument("--reference", metavar="CODE", help="the bank's or cheque's reference")
    pay.add_argument("--id", metavar="PAYMENT_ID", help="the ERP's payment id (default: a new pay_…)")
    pay.add_argument("--at", metavar="TIME", help="received_at, ISO 8601 with offset (default: now)")
    common(pay)

    cancel = actions.add_parser("cancel", help="OrderCancellationRecorded: the merchant cancels an order")
    cancel.add_argument("order", metavar="ORDER")
    cancel.add_argument("--reason", default=DEFAULT_REASON, help=f"default: {DEFAULT_REASON!r}")
    common(cancel)
