"""`harmon`: the operator's command line.

    harmon dev [--data-dir DIR] [--port N]   the whole stack on this machine, with demo data
    harmon migrate [SERVICE ...]             external mode: create topics, migrate each service's database
    harmon bench [--shoppers N,N] [--seconds S]   checkout benchmark against a running `harmon dev`
    harmon tenants create NAME | list        tenants in the gateway's database
    harmon keys create|list|revoke|rotate    a tenant's API keys (a full key is printed once, at creation)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shlex
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from libs.contracts.topics import all_topic_names

from .supervisor import DEFAULT_PARTITIONS, SERVICES, Stack, migrate, running_stack_dsn

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger("harmon.cli")

EXIT_INTERRUPTED = 130


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
        "Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)


async def run_dev(args: argparse.Namespace) -> int:
    from .demo import load_demo  # imports the gateway's admin module: only `dev` needs it

    stack = Stack(Path(args.data_dir), gateway_port=args.port, partitions=args.partitions, fsync=True)
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
        await watch(stack, stop)
        return 0
    finally:
        if stack.running:
            await stack.stop()
            log.info("stopped in %.1f s", stack.timings.get("stop", 0))


async def watch(stack: Stack, stop: asyncio.Event) -> None:
    """Until `stop`: say so when a service dies. No restart: a crash in development should be seen."""
    reported: set[str] = set()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass
        for service, code in stack.exited().items():
            if service not in reported:
                reported.add(service)
                log.error("%s exited with code %s; the rest keeps running. %s:\n%s",
                          service, code, stack.log_path(service), stack.log_tail(service, 20))


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
        print(f"harmon migrate: unknown services {', '.join(unknown)}; known: {', '.join(SERVICES)}", file=sys.stderr)
        return 2
    wanted = ["HARMON_KAFKA_BOOTSTRAP", *(f"HARMON_{s.upper()}_DATABASE_URL" for s in services)]
    missing = [name for name in wanted if not os.environ.get(name)]
    partitions = _env_partitions()
    if missing or isinstance(partitions, str):
        problems = ([f"missing environment variables: {', '.join(missing)}"] if missing else []) + \
                   ([partitions] if isinstance(partitions, str) else [])
        print("harmon migrate: " + "; ".join(problems) + "\n(external mode: HARMON_KAFKA_BOOTSTRAP is the "
              "broker, HARMON_<SERVICE>_DATABASE_URL each service's own database)", file=sys.stderr)
        return 2
    bootstrap = os.environ["HARMON_KAFKA_BOOTSTRAP"]
    try:
        await ensure_topics(bootstrap, all_topic_names(), partitions)
        log.info("%d topics present with %d partitions on %s", len(all_topic_names()), partitions, bootstrap)
        await migrate({s: os.environ[f"HARMON_{s.upper()}_DATABASE_URL"] for s in services})
    except Exception as exc:
        print(f"harmon migrate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"harmon migrate: topics ready ({partitions} partitions), databases migrated: {', '.join(services)}")
    return 0


async def run_bench_command(args: argparse.Namespace) -> int:
    from .bench import run_bench  # noqa: PLC0415 (only this command needs it)

    data_dir = Path(args.data_dir)
    if not (data_dir / "credentials.json").exists():
        print(f"harmon bench: no {data_dir / 'credentials.json'}; start the stack first: harmon dev --data-dir {data_dir}",
              file=sys.stderr)
        return 2
    levels = [int(x) for x in args.shoppers.split(",")]
    await run_bench(data_dir, levels, args.seconds, Path(args.json) if args.json else None)
    return 0


# --- tenants and keys ------------------------------------------------------------------------------

EXIT_FAILED = 1  # not found, refused, or the database could not be reached
EXIT_USAGE = 2  # as argparse: the command line itself is wrong
DEFAULT_OVERLAP = "24h"
_DURATION = re.compile(r"(\d+)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """`0`, `90s`, `30m`, `24h`, `7d` or a sum such as `1h30m`; ValueError otherwise."""
    raw = text.strip().lower()
    if raw == "0":
        return timedelta(0)
    parts = _DURATION.findall(raw)
    if not raw or "".join(n + u for n, u in parts) != raw:
        raise ValueError(f"not a duration: {text!r} (e.g. 0, 30m, 24h, 7d, 1h30m)")
    return timedelta(seconds=sum(int(n) * _UNIT_S[u] for n, u in parts))


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])


class CommandError(Exception):
    """Ends a command with a message on stderr and this exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def gateway_dsn(args: argparse.Namespace) -> str:
    """--database-url, else --data-dir's running stack, else HARMON_GATEWAY_DATABASE_URL, else ./.harmon's stack."""
    if args.database_url:
        return args.database_url
    if args.data_dir is None and os.environ.get("HARMON_GATEWAY_DATABASE_URL"):
        return os.environ["HARMON_GATEWAY_DATABASE_URL"]
    data_dir = Path(args.data_dir or ".harmon")
    if args.data_dir is None and not (data_dir / "secrets.json").exists():
        raise CommandError("which gateway database? give --database-url URL or --data-dir DIR (a running "
                           "`harmon dev`), or set HARMON_GATEWAY_DATABASE_URL", EXIT_USAGE)
    try:
        return running_stack_dsn(data_dir, "gateway")
    except (RuntimeError, ValueError) as exc:
        raise CommandError(str(exc)) from None


@asynccontextmanager
async def gateway_session(args: argparse.Namespace) -> AsyncIterator[AsyncSession]:
    from libs.runtime.db import make_engine, make_sessionmaker

    engine = make_engine(gateway_dsn(args), pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            yield session
    finally:
        await engine.dispose()


def _database_error(exc: Exception) -> str:
    # the first line only: SQLAlchemy appends statements and parameters; asyncpg never shows the password
    first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}"


async def run_admin(args: argparse.Namespace) -> int:
    """Run a tenants/keys command; its errors become one line on stderr and an exit code."""
    name = f"harmon {args.command} {args.action}"
    try:
        return await args.admin(args)
    except CommandError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return exc.code
    except LookupError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # the database unreachable, refusing the login, not migrated…
        print(f"{name}: cannot use the gateway database: {_database_error(exc)}", file=sys.stderr)
        log.debug("database failure", exc_info=True)
        return EXIT_FAILED


async def tenants_create(args: argparse.Namespace) -> int:
    from services.gateway import admin

    async with gateway_session(args) as session:
        tenant = await admin.create_tenant(session, args.name)
    print(tenant.id)
    print(f"created tenant {tenant.id} ({tenant.name}); next: harmon keys create --tenant {tenant.id}",
          file=sys.stderr)
    return 0


async def tenants_list(args: argparse.Namespace) -> int:
    from services.gateway import admin

    async with gateway_session(args) as session:
        tenants = await admin.list_tenants(session)
    if args.json:
        print(json.dumps([{"id": t.id, "name": t.name, "created": _when(t.created_at)} for t in tenants], indent=2))
    else:
        print(_table(("ID", "NAME", "CREATED"), [(t.id, t.name, _when(t.created_at)) for t in tenants]))
    return 0


def _key_status(row: Any, now: datetime) -> str:
    if row.revoked_at is not None:
        return f"revoked {_when(row.revoked_at)}"
    if row.expires_at is not None:
        return f"{'expired' if row.expires_at <= now else 'expires'} {_when(row.expires_at)}"
    return "active"


def _scopes_cell(kind: str, scopes: list[str] | None) -> str:
    return ",".join(scopes) if scopes else "-" if kind == "publishable" else "all"


def _announce_key(issued: Any, what: str) -> None:
    """The full key alone on stdout (so `KEY=$(harmon keys create …)` works); everything else on stderr."""
    mode = "live" if issued.livemode else "test"
    kind = f"restricted to {','.join(issued.scopes)}" if issued.scopes else issued.kind
    print(issued.key, flush=True)
    print(f"{what} {issued.id} ({issued.hint}, {kind}, {mode} mode) for tenant {issued.tenant_id}.\n"
          "This is the only time the full key is shown: store it now in a secret manager.", file=sys.stderr)


async def keys_create(args: argparse.Namespace) -> int:
    from services.gateway import admin

    kind = admin.KIND_RESTRICTED if args.kind == "secret" and args.scopes else args.kind
    async with gateway_session(args) as session:
        issued = await admin.create_api_key(session, args.tenant, args.mode == "live", kind,
                                            scopes=args.scopes, name=args.name)
    _announce_key(issued, "created key")
    return 0


async def keys_list(args: argparse.Namespace) -> int:
    from services.gateway import admin

    async with gateway_session(args) as session:
        keys = await admin.list_api_keys(session, args.tenant)
    now = datetime.now(UTC)
    rows = [{"id": k.id, "key": admin.key_hint(k), "kind": admin.key_kind(k), "mode": "live" if k.livemode else "test",
             "scopes": k.scopes, "name": k.name, "created": _when(k.created_at), "status": _key_status(k, now)}
            for k in keys]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        print(_table(("ID", "KEY", "KIND", "MODE", "SCOPES", "NAME", "CREATED", "STATUS"),
                     [(r["id"], r["key"], r["kind"], r["mode"], _scopes_cell(r["kind"], r["scopes"]),
                       r["name"] or "-", r["created"], r["status"]) for r in rows]))
    return 0


async def keys_revoke(args: argparse.Namespace) -> int:
    from services.gateway import admin

    async with gateway_session(args) as session:
        revoked = await admin.revoke_api_key(session, args.key_id)
        row = await admin.get_api_key(session, args.key_id)
    if revoked:
        print(f"revoked {row.id} ({admin.key_hint(row)}): it is refused from now on")
    else:
        print(f"{row.id} ({admin.key_hint(row)}) was already revoked at {_when(row.revoked_at)}")
    return 0


async def keys_rotate(args: argparse.Namespace) -> int:
    from services.gateway import admin

    try:
        overlap = parse_duration(args.overlap)
    except ValueError as exc:
        raise CommandError(f"--overlap: {exc}", EXIT_USAGE) from None
    async with gateway_session(args) as session:
        issued = await admin.rotate_api_key(session, args.key_id, overlap)
        old = await admin.get_api_key(session, args.key_id)
    _announce_key(issued, f"rotated {old.id} ({admin.key_hint(old)}) to new key")
    ends = "now" if not overlap else f"at {_when(old.expires_at)} (in {args.overlap})"
    print(f"The old key {admin.key_hint(old)} stops working {ends}.", file=sys.stderr)
    return 0


def _add_database_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--database-url", metavar="URL",
                       help="the gateway's database (default: HARMON_GATEWAY_DATABASE_URL)")
    where.add_argument("--data-dir", metavar="DIR",
                       help="use the gateway database of the `harmon dev` running on DIR (default when nothing "
                            "else is given: .harmon)")


def _add_admin_parsers(commands: Any) -> None:
    from services.gateway.admin import SCOPES  # noqa: PLC0415 (light: no app, no broker)

    tenants = commands.add_parser("tenants", help="create and list tenants (distributors) in the gateway's database")
    tenant_actions = tenants.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = tenant_actions.add_parser("create", help="a new tenant; prints its id")
    create.add_argument("name", metavar="NAME", help="the distributor's name")
    create.set_defaults(admin=tenants_create)
    listing = tenant_actions.add_parser("list", help="every tenant: id, name, created")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    listing.set_defaults(admin=tenants_list)

    keys = commands.add_parser("keys", help="create, list, revoke and rotate a tenant's API keys",
                               description="Keys are stored as SHA-256 hashes: a full key is printed once, when it "
                                           "is created or rotated, and listed afterwards as prefix…last4.")
    key_actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = key_actions.add_parser("create", help="a new key; prints it once")
    create.add_argument("--tenant", required=True, metavar="TENANT_ID")
    create.add_argument("--mode", choices=("test", "live"), default="test", help="default: test")
    create.add_argument("--kind", choices=("secret", "publishable", "restricted"), default="secret",
                        help="default: secret; restricted is a secret key limited to its --scope list")
    create.add_argument("--scope", dest="scopes", action="append", metavar="SCOPE",
                        help=f"repeatable; makes the secret key restricted to these: {', '.join(SCOPES)}")
    create.add_argument("--name", metavar="LABEL", help="a label to tell keys apart (e.g. 'web shop')")
    create.set_defaults(admin=keys_create)
    listing = key_actions.add_parser("list", help="a tenant's keys as prefix…last4, never in full")
    listing.add_argument("--tenant", required=True, metavar="TENANT_ID")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    listing.set_defaults(admin=keys_list)
    revoke = key_actions.add_parser("revoke", help="refuse a key from now on")
    revoke.add_argument("key_id", metavar="KEY_ID", help="key_… (from harmon keys list)")
    revoke.set_defaults(admin=keys_revoke)
    rotate = key_actions.add_parser("rotate", help="a new key with the same tenant, mode, kind and scopes; "
                                                   "the old one keeps working for the overlap")
    rotate.add_argument("key_id", metavar="KEY_ID", help="key_… (from harmon keys list)")
    rotate.add_argument("--overlap", default=DEFAULT_OVERLAP, metavar="DURATION",
                        help=f"how long the old key still works: 0 (stop now), 30m, 24h, 7d at most "
                             f"(default: {DEFAULT_OVERLAP})")
    rotate.set_defaults(admin=keys_rotate)
    for parser in (*tenant_actions.choices.values(), *key_actions.choices.values()):
        _add_database_options(parser)
        parser.set_defaults(run=run_admin)


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
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bench.set_defaults(run=run_bench_command)

    _add_admin_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not args.verbose:
        for noisy in ("alembic", "aiokafka"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    command: Callable[[argparse.Namespace], Any] = args.run
    sys.exit(asyncio.run(command(args)))


if __name__ == "__main__":
    main()
