"""`harmon`: the operator's command line.

    harmon dev [--data-dir DIR] [--port N]   the whole stack on this machine, with demo data
    harmon migrate [SERVICE ...]             external mode: create topics, migrate each service's database
    harmon bench [--shoppers N,N] [--seconds S | --checkouts N]   checkout benchmark against a running `harmon dev`
    harmon tenants create NAME | update TEN | list   tenants (and their rate limits) in the gateway's database
    harmon keys create|list|revoke|rotate    a tenant's API keys (a full key is printed once, at creation)
    harmon signing-keys add|list|revoke      a tenant's own public keys for shopper tokens
    (these three run the gateway's own `python -m services.gateway.admin_cli`: libs/stack/admin_cli.py)
    harmon dlt list|replay TOPIC             a topic's dead letters: what and why, and re-driving them after a fix
    harmon erp fulfil|deliver|pay|cancel     publish the ERP's lifecycle records for a running `harmon dev` (erp.py)
    harmon webhooks listen [--events …]      a local receiver, registered in test mode, printing each verified event
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from libs.contracts.topics import all_topic_names
from libs.runtime.logs import cli_logging

from .admin_cli import add_admin_parsers
from .databases import migrate
from .dlt import add_dlt_parsers
from .erp import add_erp_parsers
from .supervision import BrokerBound
from .supervisor import DEFAULT_PARTITIONS, SERVICES, Stack
from .webhooks import add_webhooks_parsers

log = logging.getLogger("harmon.cli")

EXIT_INTERRUPTED = 130
EXIT_PART_DOWN = 3  # the supervisor gave up on the broker or PostgreSQL
DEFAULT_BROKER_MAX_RSS_MIB = 100  # docs/benchmarks.md: throughput halves by ≈ 150 MiB


def mask(key: str) -> str:
    """`hk_test_sec_…wxyz`: enough to tell keys apart, too little to use one."""
    prefix = "_".join(key.split("_")[:3]) + "_"
    return f"{prefix}...{key[-4:]}" if len(key) > len(prefix) + 8 else "****"


def _money(minor: int, currency: str) -> str:
    return f"{currency} {minor / 100:,.2f}" if minor >= 0 else f"-{currency} {-minor / 100:,.2f}"


def dev_summary(stack: Stack, credentials: dict[str, Any]) -> str:
    """What `harmon dev` prints once everything is ready."""
    path = stack.data_dir / "credentials.json"
    show = mask  # credentials.json (0600) is the one place the full demo keys appear
    currency = credentials["currency"]
    customers = credentials["customers"]
    first = customers[0]
    read_key = (f"python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"secret_key\"])' "
                f"{shlex.quote(str(path))}")
    lines = [
        "",
        f"Harmon Storefront is running: {len(stack.services)} services ready in {stack.timings.get('start', 0):.1f} s",
        f"  API              {stack.base_url}",
        f"  tenant           {credentials['tenant_id']} (test mode, {currency})",
        f"  secret key       {show(credentials['secret_key'])}",
        f"  publishable key  {show(credentials['publishable_key'])}",
        f"  credentials      {path} (full keys, mode 0600)",
        f"  logs             {stack.logs_dir}/",
        "  customers",
        *(f"    {c['id']}  {c['name']:<36} {c['terms']:<7} available {_money(c['available_credit'], currency)}"
          for c in customers),
        "",
        f"Mint a shopper token for {first['name']}:",
        f"  curl -sS -X POST {stack.base_url}/v1/shopper_tokens \\",
        f"    -H \"Authorization: Bearer $({read_key})\" \\",
        "    -H 'Content-Type: application/json' \\",
        f"    -d '{{\"customer_id\": \"{first['id']}\"}}'",
        "",
        "Receive signed webhooks (order.confirmed, invoice.issued, …) on this machine:",
        f"  harmon webhooks listen --data-dir {shlex.quote(str(stack.data_dir))}"
        "     registers a local receiver, prints each verified event",
        "  or register your own receiver (test mode accepts http://127.0.0.1; the answer holds its whsec_ secret once):",
        f"  curl -sS -X POST {stack.base_url}/v1/webhook_endpoints \\",
        f"    -H \"Authorization: Bearer $({read_key})\" \\",
        "    -H 'Content-Type: application/json' \\",
        "    -d '{\"url\": \"http://127.0.0.1:4242/webhooks\", \"enabled_events\": [\"order.confirmed\", \"invoice.issued\"]}'",
        "",
        "Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)


async def run_dev(args: argparse.Namespace) -> int:
    from .demo import load_demo  # only `dev` needs it

    bound = BrokerBound(max_rss_mib=args.broker_max_rss) if args.broker_max_rss > 0 else None
    stack = Stack(Path(args.data_dir), gateway_port=args.port, partitions=args.partitions, fsync=True,
                  supervise=True, broker_bound=bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("%s again: still stopping, please wait", sig.name)
        else:
            log.info("%s: stopping", sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)

    async def start() -> dict[str, Any]:
        await stack.start()
        return await load_demo(stack)

    try:
        starting = asyncio.create_task(start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            return EXIT_INTERRUPTED
        stopping.cancel()
        try:
            credentials = starting.result()
        except Exception as exc:
            log.error("harmon dev could not start: %s", exc)
            log.debug("start-up failure", exc_info=True)
            return 1
        print(dev_summary(stack, credentials), flush=True)
        failed = asyncio.create_task(stack.failed.wait())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({failed, stopping}, return_when=asyncio.FIRST_COMPLETED)
        failed.cancel()
        stopping.cancel()
        if stack.failed.is_set():
            log.error("harmon dev stops: the supervisor gave up on %s", ", ".join(sorted(stack.gave_up)))
            return EXIT_PART_DOWN
        return 0
    finally:
        if stack.running:
            await stack.stop()
            log.info("stopped in %.1f s", stack.timings.get("stop", 0))


def _env_partitions() -> int | str:
    raw = os.environ.get("HARMON_PARTITIONS", str(DEFAULT_PARTITIONS))
    try:
        value = int(raw)
    except ValueError:
        return f"HARMON_PARTITIONS must be a whole number, not {raw!r}"
    return value if value >= 1 else "HARMON_PARTITIONS must be at least 1"


async def run_migrate(args: argparse.Namespace) -> int:
    from libs.runtime.kafka import ensure_topics

    services = args.services or list(SERVICES)
    unknown = [s for s in services if s not in SERVICES]
    if unknown:
        log.error("harmon migrate: unknown services %s; known: %s", ", ".join(unknown), ", ".join(SERVICES))
        return 2
    wanted = ["HARMON_KAFKA_BOOTSTRAP", *(f"HARMON_{s.upper()}_DATABASE_URL" for s in services)]
    missing = [name for name in wanted if not os.environ.get(name)]
    partitions = _env_partitions()
    if missing or isinstance(partitions, str):
        problems = ([f"missing environment variables: {', '.join(missing)}"] if missing else []) + \
                   ([partitions] if isinstance(partitions, str) else [])
        log.error("harmon migrate: %s (external mode: HARMON_KAFKA_BOOTSTRAP is the broker, "
                  "HARMON_<SERVICE>_DATABASE_URL each service's own database)", "; ".join(problems))
        return 2
    bootstrap = os.environ["HARMON_KAFKA_BOOTSTRAP"]
    try:
        await ensure_topics(bootstrap, all_topic_names(), partitions)
        log.info("%d topics present with %d partitions on %s", len(all_topic_names()), partitions, bootstrap)
        await migrate({s: os.environ[f"HARMON_{s.upper()}_DATABASE_URL"] for s in services})
    except Exception as exc:
        log.error("harmon migrate: %s: %s", type(exc).__name__, exc)
        return 1
    log.info("harmon migrate: topics ready (%d partitions), databases migrated: %s", partitions, ", ".join(services))
    return 0


async def run_bench_command(args: argparse.Namespace) -> int:
    from .bench import run_bench  # noqa: PLC0415 (only this command needs it)

    data_dir = Path(args.data_dir)
    if not (data_dir / "credentials.json").exists():
        print(f"harmon bench: no {data_dir / 'credentials.json'}; start the stack first: harmon dev --data-dir {data_dir}",
              file=sys.stderr)
        return 2
    levels = [int(x) for x in args.shoppers.split(",")]
    if args.checkouts is not None and args.checkouts < 1:
        print("harmon bench: --checkouts must be at least 1", file=sys.stderr)
        return 2
    await run_bench(data_dir, levels, args.seconds, Path(args.json) if args.json else None, args.checkouts)
    return 0


# --- tenants and keys ------------------------------------------------------------------------------

async def run_asyncapi(args: argparse.Namespace) -> int:
    from libs.contracts.asyncapi import asyncapi_document  # noqa: PLC0415 (only this command needs it)
    from libs.contracts.compat import breaking_changes  # noqa: PLC0415

    document = asyncapi_document()
    text = json.dumps(document, indent=2) + "\n"
    if not args.output:
        sys.stdout.write(text)
        return 0
    output = Path(args.output)
    try:
        before = json.loads(output.read_text())
    except (OSError, ValueError):
        before = None  # nothing (readable) to keep compatible with
    if isinstance(before, dict) and "asyncapi" in before and not args.allow_breaking:
        # refreshing a committed v1 document must not quietly accept a break (docs/topics.md)
        breaks = breaking_changes(before, json.loads(text))
        if breaks:
            print(f"harmon asyncapi: {output} not written: this version breaks it:\n  " + "\n  ".join(breaks) +
                  "\nadd optional fields or new message types instead; --allow-breaking writes it anyway",
                  file=sys.stderr)
            return 1
    output.write_text(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harmon", description="Harmon Storefront operator commands")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser("dev", help="run broker, PostgreSQL, the six services and demo data on this machine",
                              description="Start everything on loopback, load demo data, print keys and a curl; "
                                          "Ctrl-C stops it all.")
    dev.add_argument("--data-dir", default=".harmon", metavar="DIR",
                     help="where databases, logs, secrets and credentials.json live (default: .harmon)")
    dev.add_argument("--port", type=int, default=8080, metavar="N", help="the gateway's HTTP port (default: 8080)")
    dev.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS, metavar="N",
                     help=f"partitions per topic (default: {DEFAULT_PARTITIONS})")
    dev.add_argument("--broker-max-rss", type=int, default=DEFAULT_BROKER_MAX_RSS_MIB, metavar="MIB",
                     help="restart the embedded broker, when every service is quiet, once it holds more than this "
                          f"(it keeps every message in memory; default: {DEFAULT_BROKER_MAX_RSS_MIB}, 0: never)")
    dev.set_defaults(run=run_dev)

    mig = commands.add_parser("migrate", help="external mode: create topics and migrate every service's database",
                              description="Reads HARMON_KAFKA_BOOTSTRAP, HARMON_PARTITIONS (default 8) and "
                                          "HARMON_<SERVICE>_DATABASE_URL of each service.")
    mig.add_argument("services", nargs="*", metavar="SERVICE", help=f"only these ({', '.join(SERVICES)}; default all)")
    mig.set_defaults(run=run_migrate)

    bench = commands.add_parser("bench", help="checkout benchmark against a running `harmon dev`",
                                description="N concurrent shoppers each loop cart -> 2 lines -> price -> checkout; "
                                            "reports orders/s, errors and p50/p90/p99 per step.")
    bench.add_argument("--data-dir", default=".harmon", metavar="DIR", help="the running stack's data dir")
    bench.add_argument("--shoppers", default="1,8,32", metavar="N,N,...", help="concurrency levels (default: 1,8,32)")
    bench.add_argument("--seconds", type=float, default=20.0, metavar="S", help="duration of each level (default: 20)")
    bench.add_argument("--checkouts", type=int, metavar="N",
                       help="run each level until N checkouts were tried (orders plus failed ones) instead of for "
                            "--seconds")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bench.set_defaults(run=run_bench_command)

    spec = commands.add_parser("asyncapi", help="the AsyncAPI 3.0 document of every topic and message, for ERP integrators")
    spec.add_argument("-o", "--output", metavar="FILE",
                      help="write it here instead of stdout; an AsyncAPI document already there is kept if the "
                           "new one would break it (a field removed, renamed, retyped or made required)")
    spec.add_argument("--allow-breaking", action="store_true", help="overwrite FILE even so")
    spec.set_defaults(run=run_asyncapi)

    add_admin_parsers(commands)  # tenants, keys, signing-keys: the gateway's own command, as a subprocess
    add_dlt_parsers(commands)
    add_erp_parsers(commands)
    add_webhooks_parsers(commands)
    return parser


def setup_cli_logging(verbose: bool) -> None:
    cli_logging("harmon", verbose)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_cli_logging(args.verbose)
    command: Callable[[argparse.Namespace], Any] = args.run
    sys.exit(asyncio.run(command(args)))


if __name__ == "__main__":
    main()
