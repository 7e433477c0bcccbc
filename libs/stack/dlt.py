"""`harmon dlt list|replay TOPIC`: see what was dead-lettered, and drive it again once the cause is fixed.

A dead letter is the original record (key and value, byte for byte) on `<topic>.dlt`, with why in its
headers (libs/runtime/dispatch.py, `dead_letter`). A replay publishes the key and value to the source
topic again; handlers are idempotent by message id, so replaying something already applied is dropped
by the consumer's inbox. Nothing is ever removed from the DLT.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from libs.contracts.envelope import Envelope
from libs.contracts.fields import CONTROLS
from libs.contracts.topics import GATEWAY_REPLIES_PREFIX

from .admin_cli import EXIT_FAILED, EXIT_USAGE, CommandError, _table, running_dev_credentials

DLT_SUFFIX = ".dlt"
HEADER_PREFIX = "harmon-dlt-"
REPLAY_HEADER = "harmon-replay-of"  # on a replayed record: which dead letter it came from
STALL_S = 30.0  # reading gives up when no record came for this long
_CONTROL = re.compile(f"[{CONTROLS}]")


@dataclass
class DeadLetter:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    type: str | None = None
    message_id: str | None = None
    decodes: bool = False  # as this version's envelope
    extra: dict[str, Any] = field(default_factory=dict)  # tenant_id, livemode, reply_to when it decodes

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"


def dlt_and_source(topic: str) -> tuple[str, str]:
    """(`<topic>.dlt`, `<topic>`) from either name."""
    source = topic.removesuffix(DLT_SUFFIX)
    return source + DLT_SUFFIX, source


def describe(partition: int, offset: int, timestamp_ms: int, key: bytes | None, value: bytes,
             headers: list[tuple[str, bytes]] | tuple) -> DeadLetter:
    """A DLT record, with its type and message id from the envelope if it decodes (or from its JSON if not)."""
    letter = DeadLetter(partition, offset, timestamp_ms, key, value,
                        {k: v.decode(errors="replace") for k, v in headers or ()})
    try:
        env = Envelope.from_bytes(value)
    except ValidationError:
        try:  # a type this version does not know, a bad field: what the record says it is still helps
            raw = json.loads(value)
        except ValueError:
            return letter
        if isinstance(raw, dict):
            payload = raw.get("payload")
            kind = raw.get("type") or (payload.get("type") if isinstance(payload, dict) else None)
            letter.type = kind if isinstance(kind, str) else None
            letter.message_id = raw["message_id"] if isinstance(raw.get("message_id"), str) else None
        return letter
    letter.type, letter.message_id, letter.decodes = env.type, env.message_id, True
    letter.extra = {"tenant_id": env.tenant_id, "livemode": env.livemode, "reply_to": env.reply_to}
    return letter


def printable(text: str | bytes | None) -> str:
    """Control characters escaped: a dead letter may hold anything, and this goes to a terminal."""
    if text is None:
        return "-"
    if isinstance(text, bytes):
        text = text.decode(errors="backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


# --- the broker ------------------------------------------------------------------------------------

def broker_address(args: argparse.Namespace) -> str:
    """--bootstrap, else --data-dir's running stack, else HARMON_KAFKA_BOOTSTRAP, else ./.harmon's stack."""
    if args.bootstrap:
        return args.bootstrap
    if args.data_dir is None and os.environ.get("HARMON_KAFKA_BOOTSTRAP"):
        return os.environ["HARMON_KAFKA_BOOTSTRAP"]
    data_dir = Path(args.data_dir or ".harmon").absolute()
    credentials = data_dir / "credentials.json"
    if args.data_dir is None and not credentials.exists():
        raise CommandError("which broker? give --bootstrap HOST:PORT or --data-dir DIR (a running `harmon dev`), "
                           "or set HARMON_KAFKA_BOOTSTRAP", EXIT_USAGE)
    running_dev_credentials(data_dir, f"start it with: harmon dev --data-dir {data_dir}", code=EXIT_FAILED,
                            need_credentials=False)  # a missing credentials.json is "cannot read" below
    try:
        return json.loads(credentials.read_text())["kafka_bootstrap"]
    except (OSError, ValueError, KeyError) as exc:
        raise CommandError(f"cannot read the broker's address from {credentials}: {exc}") from None


async def _partitions(bootstrap: str, *names: str) -> dict[str, int]:
    """name -> partition count of each topic that exists (asked without creating any: the broker would)."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 (only these commands need it)
    from aiokafka.errors import KafkaConnectionError  # noqa: PLC0415

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, client_id="harmon-dlt")
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        await admin.close()
        raise CommandError(f"cannot reach the broker at {bootstrap}: {exc}") from None
    try:
        every = await admin.describe_topics()  # all topics: naming one may auto-create it
        return {t["topic"]: len(t["partitions"]) for t in every if t["topic"] in names and not t["error_code"]}
    finally:
        await admin.close()


class DltReader:
    """Reads a `.dlt` topic's records by position, with no consumer group (nothing is committed)."""

    def __init__(self, bootstrap: str, dlt: str, partitions: int, stall_s: float = STALL_S) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: PLC0415 (only these commands need it)

        self.dlt, self.stall_s = dlt, stall_s
        self._tps = {p: TopicPartition(dlt, p) for p in range(partitions)}
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                          client_id="harmon-dlt", request_timeout_ms=10000, fetch_max_wait_ms=100)
        self.ranges: dict[int, tuple[int, int]] = {}  # partition -> (first offset, end offset)

    async def __aenter__(self) -> "DltReader":
        await self._consumer.start()
        try:
            tps = list(self._tps.values())
            self._consumer.assign(tps)
            begin = await self._consumer.beginning_offsets(tps)
            end = await self._consumer.end_offsets(tps)
        except BaseException:
            await self._consumer.stop()
            raise
        self.ranges = {p: (begin[tp], end[tp]) for p, tp in self._tps.items()}
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    @property
    def total(self) -> int:
        return sum(e - b for b, e in self.ranges.values())

    async def read(self, windows: dict[int, tuple[int, int]],
                   keep: Callable[[int, int], bool] = lambda p, o: True) -> list[DeadLetter]:
        """The records in each partition's [start, stop) that `keep`, oldest first."""
        consumer = self._consumer
        todo = {self._tps[p]: (start, stop) for p, (start, stop) in windows.items() if start < stop}
        expected = {tp: start for tp, (start, _) in todo.items()}  # the next offset: a DLT has no gaps of its own
        sought: dict[Any, int] = {}
        consumer.pause(*(tp for tp in self._tps.values() if tp not in todo))
        consumer.resume(*todo)
        for tp, (start, _) in todo.items():
            consumer.seek(tp, start)
        letters: list[DeadLetter] = []
        stalled_at = time.monotonic() + self.stall_s
        while any(expected[tp] < stop for tp, (_, stop) in todo.items()):
            if time.monotonic() > stalled_at:
                short = {tp.partition: (expected[tp], stop) for tp, (_, stop) in todo.items() if expected[tp] < stop}
                raise CommandError(f"{self.dlt}: no records came for {self.stall_s:.0f} s; "
                                   f"partition: (at, end) {short}")
            for tp, records in (await consumer.getmany(*todo, timeout_ms=500)).items():
                stop = todo[tp][1]
                for rec in records:
                    if rec.offset < expected[tp] or rec.offset >= stop:
                        continue
                    if rec.offset > expected[tp] and sought.get(tp) != expected[tp]:
                        # the embedded broker may skip a record for a reader (docs/architecture.md): read
                        # again, once (a second gap at the same offset is taken as real)
                        sought[tp] = expected[tp]
                        consumer.seek(tp, expected[tp])
                        break
                    stalled_at = time.monotonic() + self.stall_s
                    expected[tp] = rec.offset + 1
                    if keep(rec.partition, rec.offset):
                        letters.append(describe(rec.partition, rec.offset, rec.timestamp, rec.key, rec.value,
                                                rec.headers))
                if expected[tp] >= stop:
                    consumer.pause(tp)
        letters.sort(key=lambda d: (d.timestamp_ms, d.partition, d.offset))
        return letters


# --- the commands ----------------------------------------------------------------------------------

def _as_json(d: DeadLetter) -> dict[str, Any]:
    return {"partition": d.partition, "offset": d.offset, "timestamp": _when(d),
            "key": d.key.decode(errors="backslashreplace") if d.key is not None else None,
            "type": d.type, "message_id": d.message_id, "decodes": d.decodes, **d.extra,
            "class": d.headers.get(HEADER_PREFIX + "class"), "reason": d.headers.get(HEADER_PREFIX + "reason"),
            "headers": d.headers}


def _when(d: DeadLetter) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(d.timestamp_ms / 1000))


def _text(d: DeadLetter) -> str:
    h = {k.removeprefix(HEADER_PREFIX): printable(v) for k, v in d.headers.items()}
    kind = printable(d.type) if d.type else "?"
    if not d.decodes:
        kind += " (does not decode as this version's envelope)"
    lines = [f"{d.position}  {_when(d)}  key {printable(d.key)}  {kind}  {printable(d.message_id)}",
             f"      {h.get('class', '?')}: {h.get('attempts', '?')} attempt(s) by {h.get('consumer', '?')}, "
             f"from {h.get('source-topic', '?')}[{h.get('partition', '?')}]@{h.get('offset', '?')}",
             f"      reason: {h.get('reason', '-')}"]
    others = {k: v for k, v in d.headers.items() if not k.startswith(HEADER_PREFIX)}
    if others:
        lines.append("      headers: " + ", ".join(f"{printable(k)}={printable(v)}" for k, v in others.items()))
    return "\n".join(lines)


async def run_list(args: argparse.Namespace) -> int:
    dlt, _ = dlt_and_source(args.topic)
    bootstrap = broker_address(args)
    counts = await _partitions(bootstrap, dlt)
    if dlt not in counts:
        raise CommandError(f"no topic {dlt} on {bootstrap}")
    async with DltReader(bootstrap, dlt, counts[dlt]) as reader:
        # the first N of each partition hold the first N of all (each partition is in time order)
        windows = {p: (b, e if args.limit is None else min(e, b + args.limit)) for p, (b, e) in reader.ranges.items()}
        letters = (await reader.read(windows))[:args.limit]
    if args.json:
        print(json.dumps([_as_json(d) for d in letters], indent=2))  # ASCII: no control character reaches the terminal
    elif not letters:
        print(f"{dlt} is empty")
    else:
        print(f"{dlt}: {len(letters)} dead letter(s){' (first ' + str(args.limit) + ')' if args.limit else ''}")
        print("\n".join(_text(d) for d in letters))
    return 0


def positions(wanted: list[str], ranges: dict[int, tuple[int, int]], dlt: str) -> list[tuple[int, int]]:
    """`P:N` names one record; a bare `N` only when a single partition has that offset. In the order given."""
    chosen: list[tuple[int, int]] = []
    for raw in wanted:
        text = raw.strip()
        if m := re.fullmatch(r"(\d+):(\d+)", text):
            partition, offset = int(m[1]), int(m[2])
            first, end = ranges.get(partition, (0, 0))
            found = [partition] if first <= offset < end else []
        elif text.isdigit():
            offset = int(text)
            found = [p for p, (b, e) in sorted(ranges.items()) if b <= offset < e]
            if len(found) > 1:
                raise CommandError(f"offset {text} is in partitions {', '.join(map(str, found))} of {dlt}; say "
                                   f"which: {' or '.join(f'{p}:{offset}' for p in found)}", EXIT_USAGE)
        else:
            raise CommandError(f"--offset {raw!r}: give PARTITION:OFFSET as `harmon dlt list` shows it, or OFFSET",
                               EXIT_USAGE)
        if not found:
            raise CommandError(f"no record {text} on {dlt} (see `harmon dlt list {dlt}`)")
        if (found[0], offset) not in chosen:
            chosen.append((found[0], offset))
    return chosen


async def run_replay(args: argparse.Namespace) -> int:
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415

    if not args.all and not args.offset:
        raise CommandError("say which records: --offset PARTITION:OFFSET (repeatable) or --all", EXIT_USAGE)
    dlt, source = dlt_and_source(args.topic)
    bootstrap = broker_address(args)
    counts = await _partitions(bootstrap, dlt)
    if dlt not in counts:
        raise CommandError(f"no topic {dlt} on {bootstrap}")
    async with DltReader(bootstrap, dlt, counts[dlt]) as reader:
        total = reader.total
        if args.all:
            chosen = await reader.read(reader.ranges)
        else:
            picked = positions(args.offset, reader.ranges, dlt)
            by_partition: dict[int, list[int]] = {}
            for p, o in picked:
                by_partition.setdefault(p, []).append(o)
            windows = {p: (min(offsets), max(offsets) + 1) for p, offsets in by_partition.items()}
            found = {d.position: d for d in await reader.read(windows, lambda p, o: (p, o) in picked)}
            gone = [f"{p}:{o}" for p, o in picked if f"{p}:{o}" not in found]
            if gone:  # the broker's retention removed them meanwhile
                raise CommandError(f"could not read {', '.join(gone)} from {dlt}")
            chosen = [found[f"{p}:{o}"] for p, o in picked]  # as asked
    targets = {d.position: d.headers.get(HEADER_PREFIX + "source-topic") or source for d in chosen}
    present = await _partitions(bootstrap, *set(targets.values()))
    missing = sorted(set(targets.values()) - set(present))
    if missing:  # a publish would have the broker create it, with its own partition count
        raise CommandError(f"no topic {', '.join(missing)} on {bootstrap} to replay to")
    if not chosen:
        print(f"{dlt} is empty: nothing to replay")
        return 0
    producer = None if args.dry_run else AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0,
                                                          client_id="harmon-dlt", request_timeout_ms=10000)
    rows: list[tuple[str, ...]] = []
    if producer is not None:
        await producer.start()
    try:
        for d in chosen:
            where = target = targets[d.position]
            if producer is not None:  # the key picks the partition, as for the original
                sent = await producer.send_and_wait(
                    target, d.value, key=d.key, headers=[(REPLAY_HEADER, f"{dlt}:{d.position}".encode())])
                where = f"{target}[{sent.partition}]@{sent.offset}"
            rows.append((d.position, printable(d.key), printable(d.type) if d.type else "?",
                         printable(d.message_id), where))
    finally:
        if producer is not None:
            await producer.stop()
    verb = "would send" if args.dry_run else "sent"
    print(f"{verb} {len(rows)} of {total} dead letter(s) from {dlt} to their source topic")
    print(_table(("DEAD LETTER", "KEY", "TYPE", "MESSAGE ID", "TO" if args.dry_run else "SENT TO"), rows))
    answered = [d.position for d in chosen if str(d.extra.get("reply_to") or "").startswith(GATEWAY_REPLIES_PREFIX)]
    if answered:  # the client was told it failed, and may have retried since
        print(f"note: {', '.join(answered)} came from HTTP requests whose clients were answered with an error "
              "at the time; a replay carries them out now, with nobody waiting for the answer")
    return 0


async def run_dlt(args: argparse.Namespace) -> int:
    name = f"harmon dlt {args.action}"
    try:
        return await args.dlt(args)
    except CommandError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return exc.code
    except (OSError, asyncio.TimeoutError) as exc:
        print(f"{name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # aiokafka's errors: the broker refused or went away
        print(f"{name}: the broker failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_dlt_parsers(commands: argparse._SubParsersAction) -> None:
    dlt = commands.add_parser("dlt", help="list or replay a topic's dead letters (<topic>.dlt)",
                              description="The broker: --bootstrap HOST:PORT, or --data-dir DIR for the `harmon dev` "
                                          "running there, or HARMON_KAFKA_BOOTSTRAP, or else a running ./.harmon.")
    actions = dlt.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("topic", metavar="TOPIC", help="the source topic (erp.products.v1) or its .dlt")
        p.add_argument("--bootstrap", metavar="HOST:PORT", help="the broker (default: see `harmon dlt --help`)")
        p.add_argument("--data-dir", metavar="DIR", help="a running `harmon dev`'s data dir")
        p.set_defaults(run=run_dlt)

    ls = actions.add_parser("list", help="every dead letter of TOPIC, oldest first: position, key, type, id, why")
    common(ls)
    ls.add_argument("--limit", type=_positive, metavar="N", help="only the first N")
    ls.add_argument("--json", action="store_true", help="as JSON, every header in full")
    ls.set_defaults(dlt=run_list)

    replay = actions.add_parser("replay", help="publish chosen dead letters' key and value to their source topic again",
                                description="Handlers are idempotent by message id: replaying a message already "
                                            "applied is dropped by the inbox. The DLT keeps every record.")
    common(replay)
    pick = replay.add_mutually_exclusive_group()
    pick.add_argument("--offset", action="append", metavar="PARTITION:OFFSET",
                      help="one record, as `harmon dlt list` shows it (repeatable); a bare OFFSET if only one "
                           "partition has it")
    pick.add_argument("--all", action="store_true", help="every record on the DLT")
    replay.add_argument("--dry-run", action="store_true", help="show what would be sent, send nothing")
    replay.set_defaults(dlt=run_replay)
