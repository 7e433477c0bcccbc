"""`harmon dlt list|replay TOPIC`: see what was dead-lettered, and drive it again once the cause is fixed.

A dead letter is the original record (key and value, byte for byte) on `<topic>.dlt`, with why in its
headers (libs/runtime/messaging.py, `dead_letter`). A replay publishes the key and value to the source
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from libs.contracts.envelope import Envelope
from libs.contracts.fields import CONTROLS
from libs.contracts.topics import GATEWAY_REPLIES_PREFIX

from .admin_cli import EXIT_FAILED, EXIT_USAGE, CommandError, _table
from .processes import alive

DLT_SUFFIX = ".dlt"
HEADER_PREFIX = "harmon-dlt-"
REPLAY_HEADER = "harmon-replay-of"  # on a replayed record: which dead letter it came from
READ_TIMEOUT_S = 30.0
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
    extra: dict[str, Any] = field(default_factory=dict)  # tenant_id, livemode when it decodes

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
    try:
        pid = int((data_dir / "stack.lock").read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid is None or not alive(pid):
        raise CommandError(f"no `harmon dev` is running in {data_dir}; start it with: harmon dev --data-dir {data_dir}")
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


async def read_dead_letters(bootstrap: str, dlt: str, partitions: int, limit: int | None = None,
                            timeout_s: float = READ_TIMEOUT_S) -> list[DeadLetter]:
    """Every record of `dlt` from the beginning to its end when asked (the first `limit` by time)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: PLC0415

    tps = [TopicPartition(dlt, p) for p in range(partitions)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                client_id="harmon-dlt", request_timeout_ms=10000, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        want = {tp: end[tp] if limit is None else min(end[tp], begin[tp] + limit) for tp in tps}
        expected = {tp: begin[tp] for tp in tps}  # the next offset: a DLT has no gaps of its own
        sought: dict[TopicPartition, int] = {}
        for tp in tps:
            consumer.seek(tp, begin[tp])
        letters: list[DeadLetter] = []
        deadline = time.monotonic() + timeout_s
        while any(expected[tp] < want[tp] for tp in tps):
            if time.monotonic() > deadline:
                short = {tp.partition: (expected[tp], want[tp]) for tp in tps if expected[tp] < want[tp]}
                raise CommandError(f"{dlt}: not read to its end within {timeout_s:.0f} s (partition: (at, end)) {short}")
            for tp, records in (await consumer.getmany(*tps, timeout_ms=500)).items():
                for rec in records:
                    if rec.offset < expected[tp] or rec.offset >= want[tp]:
                        continue
                    if rec.offset > expected[tp] and sought.get(tp) != expected[tp]:
                        # the embedded broker may skip a record for a reader (docs/architecture.md): read
                        # again, once (a second gap at the same offset is taken as real)
                        sought[tp] = expected[tp]
                        consumer.seek(tp, expected[tp])
                        break
                    letters.append(describe(rec.partition, rec.offset, rec.timestamp, rec.key, rec.value,
                                            rec.headers))
                    expected[tp] = rec.offset + 1
        letters.sort(key=lambda d: (d.timestamp_ms, d.partition, d.offset))
        return letters if limit is None else letters[:limit]
    finally:
        await consumer.stop()


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
    letters = await read_dead_letters(bootstrap, dlt, counts[dlt], args.limit)
    if args.json:
        print(json.dumps([_as_json(d) for d in letters], indent=2))  # ASCII: no control character reaches the terminal
    elif not letters:
        print(f"{dlt} is empty")
    else:
        print(f"{dlt}: {len(letters)} dead letter(s){' (first ' + str(args.limit) + ')' if args.limit else ''}")
        print("\n".join(_text(d) for d in letters))
    return 0


def _chosen(letters: list[DeadLetter], wanted: list[str], dlt: str) -> list[DeadLetter]:
    """`P:N` names one record; a bare `N` only when a single partition has that offset."""
    by_position = {d.position: d for d in letters}
    chosen: list[DeadLetter] = []
    for raw in wanted:
        text = raw.strip()
        if re.fullmatch(r"\d+:\d+", text):
            found = [by_position[text]] if text in by_position else []
        elif text.isdigit():
            found = [d for d in letters if d.offset == int(text)]
            if len(found) > 1:
                raise CommandError(f"offset {text} is in partitions {', '.join(str(d.partition) for d in found)} of "
                                   f"{dlt}; say which: {' or '.join(d.position for d in found)}", EXIT_USAGE)
        else:
            raise CommandError(f"--offset {raw!r}: give PARTITION:OFFSET as `harmon dlt list` shows it, or OFFSET",
                               EXIT_USAGE)
        if not found:
            raise CommandError(f"no record {text} on {dlt} (see `harmon dlt list {dlt}`)")
        if found[0] not in chosen:
            chosen.append(found[0])
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
    letters = await read_dead_letters(bootstrap, dlt, counts[dlt])
    chosen = letters if args.all else _chosen(letters, args.offset, dlt)
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
            target = targets[d.position]
            where = "(dry run: not sent)"
            if producer is not None:
                sent = await producer.send_and_wait(
                    target, d.value, key=d.key, headers=[(REPLAY_HEADER, f"{dlt}:{d.position}".encode())])
                where = f"{target}[{sent.partition}]@{sent.offset}"
            rows.append((d.position, printable(d.key), printable(d.type) if d.type else "?",
                         printable(d.message_id), target if producer is None else where))
    finally:
        if producer is not None:
            await producer.stop()
    verb = "would send" if args.dry_run else "sent"
    print(f"{verb} {len(rows)} of {len(letters)} dead letter(s) from {dlt} to their source topic")
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
