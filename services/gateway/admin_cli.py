"""The gateway's admin commands: tenants, API keys and tenants' signing keys in its own database.

    python -m services.gateway.admin_cli tenants|keys|signing-keys ACTION … [--database-url URL] [--json]

`harmon tenants|keys|signing-keys …` runs this module (libs/stack/admin_cli.py): that is how an operator
meets it, so its messages name the command as `harmon …` when harmon says so (HARMON_CLI_PROG). The database
is `--database-url`, else HARMON_GATEWAY_DATABASE_URL; `--data-dir DIR` (a running `harmon dev`) is resolved
by harmon, which hands the DSN over in HARMON_STACK_GATEWAY_DATABASE_URL.

A full key is printed once, on stdout, when it is created or rotated; lists show prefix + last four.
`--json` on the commands that create or change something prints one JSON object instead (what scripts and
`harmon dev`'s demo data read; a created key is in it in full, once).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from libs.runtime.db import make_engine, make_sessionmaker
from libs.runtime.logs import cli_logging

from . import admin
from .auth import TENANT_ALGORITHMS
from .state import KIND_RESTRICTED, SCOPES

log = logging.getLogger("harmon.cli")

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


def _print_rows(as_json: bool, rows: list[dict[str, Any]], header: tuple[str, ...],
                cells: list[tuple[str, ...]]) -> None:
    """A listing: `rows` as JSON for scripts, or `cells` under `header` as a table for people."""
    print(json.dumps(rows, indent=2, ensure_ascii=False) if as_json else _table(header, cells))


class CommandError(Exception):
    """Ends a command with a message on stderr and this exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


PROG_ENV = "HARMON_CLI_PROG"  # harmon sets it to `harmon`
STACK_DSN_ENV = "HARMON_STACK_GATEWAY_DATABASE_URL"  # harmon's answer for --data-dir, or a running ./.harmon


def gateway_dsn(args: argparse.Namespace) -> str:
    """--database-url, else --data-dir's running stack, else HARMON_GATEWAY_DATABASE_URL, else ./.harmon's stack
    (the stacks' as harmon found them)."""
    if args.database_url:
        return args.database_url
    stack_dsn = os.environ.get(STACK_DSN_ENV)
    if args.data_dir is not None:
        if not stack_dsn:
            raise CommandError("--data-dir names a running `harmon dev`: use it through `harmon`, or give "
                               "--database-url URL", EXIT_USAGE)
        return stack_dsn
    if os.environ.get("HARMON_GATEWAY_DATABASE_URL"):
        return os.environ["HARMON_GATEWAY_DATABASE_URL"]
    if stack_dsn:
        return stack_dsn
    raise CommandError("which gateway database? give --database-url URL or --data-dir DIR (a running "
                       "`harmon dev`), or set HARMON_GATEWAY_DATABASE_URL", EXIT_USAGE)


@asynccontextmanager
async def gateway_session(args: argparse.Namespace) -> AsyncIterator[AsyncSession]:
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
    name = f"{os.environ.get(PROG_ENV) or 'gateway admin'} {args.command} {args.action}"
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


def _tenant_json(tenant: Any) -> dict[str, Any]:
    return {"id": tenant.id, "name": tenant.name, "created": _when(tenant.created_at),
            "rate_limit": tenant.rate_limit, "mint_rate_limit": tenant.mint_rate_limit,
            "order_prefix": tenant.order_prefix}


def _key_json(issued: Any) -> dict[str, Any]:
    return {"id": issued.id, "key": issued.key, "tenant_id": issued.tenant_id,
            "mode": "live" if issued.livemode else "test", "kind": admin.KIND_RESTRICTED if issued.scopes else
            issued.kind, "scopes": list(issued.scopes) if issued.scopes else None, "name": issued.name,
            "replaces": issued.replaces}


async def tenants_create(args: argparse.Namespace) -> int:
    livemode = args.mode == "live"
    async with gateway_session(args) as session:
        tenant = await admin.create_tenant(session, args.name, rate_limit=args.rate_limit,
                                           mint_rate_limit=args.mint_rate_limit, order_prefix=args.order_prefix)
        keys = [await admin.create_api_key(session, tenant.id, livemode, kind)
                for kind in ((admin.KIND_SECRET, admin.KIND_PUBLISHABLE) if args.with_keys else ())]
    if args.json:
        print(json.dumps({**_tenant_json(tenant), "keys": [_key_json(k) for k in keys]}), flush=True)
    else:
        print(tenant.id, flush=True)
        for issued in keys:
            _announce_key(issued, "created key")
    print(f"created tenant {tenant.id} ({tenant.name}, order numbers {tenant.order_prefix}-000001 on)"
          + ("" if keys else
          f"; next: harmon keys create --tenant {tenant.id}"), file=sys.stderr)
    return 0


async def tenants_update(args: argparse.Namespace) -> int:
    if args.rate_limit is None and args.mint_rate_limit is None:
        raise CommandError("nothing to change: give --rate-limit and/or --mint-rate-limit", EXIT_USAGE)
    async with gateway_session(args) as session:
        before = await admin.get_tenant(session, args.tenant_id)
        previous = {"rate_limit": before.rate_limit, "mint_rate_limit": before.mint_rate_limit}
        tenant = await admin.update_tenant(session, args.tenant_id, rate_limit=args.rate_limit,
                                           mint_rate_limit=args.mint_rate_limit)
    if args.json:
        print(json.dumps({**_tenant_json(tenant), "previous": previous}))
        return 0
    print(f"tenant {tenant.id} ({tenant.name}): rate limit {_limit_cell(tenant.rate_limit)}, "
          f"mint rate limit {_limit_cell(tenant.mint_rate_limit)}")
    return 0


def _limit_cell(limit: str | None) -> str:
    return limit or "default"


async def tenants_list(args: argparse.Namespace) -> int:
    async with gateway_session(args) as session:
        tenants = await admin.list_tenants(session)
    _print_rows(args.json,
                [_tenant_json(t) for t in tenants],
                ("ID", "NAME", "CREATED", "RATE_LIMIT", "MINT_RATE_LIMIT", "ORDER_PREFIX"),
                [(t.id, t.name, _when(t.created_at), _limit_cell(t.rate_limit), _limit_cell(t.mint_rate_limit),
                  t.order_prefix or admin.DEFAULT_ORDER_PREFIX) for t in tenants])
    return 0


def _key_status(row: Any, now: datetime) -> str:
    if row.revoked_at is not None:
        return f"revoked {_when(row.revoked_at)}"
    if row.expires_at is not None:
        return f"{'expired' if row.expires_at <= now else 'expires'} {_when(row.expires_at)}"
    return "active"


def _scopes_cell(kind: str, scopes: list[str] | None) -> str:
    return ",".join(scopes) if scopes else "-" if kind == "publishable" else "all"


def _announce_key(issued: Any, what: str, as_json: bool = False) -> None:
    """The full key alone on stdout (so `KEY=$(harmon keys create …)` works), or `--json`'s object; everything
    else on stderr."""
    mode = "live" if issued.livemode else "test"
    kind = f"restricted to {','.join(issued.scopes)}" if issued.scopes else issued.kind
    print(json.dumps(_key_json(issued)) if as_json else issued.key, flush=True)
    print(f"{what} {issued.id} ({issued.hint}, {kind}, {mode} mode) for tenant {issued.tenant_id}.\n"
          "This is the only time the full key is shown: store it now in a secret manager.", file=sys.stderr)


async def keys_create(args: argparse.Namespace) -> int:
    kind = KIND_RESTRICTED if args.kind == "secret" and args.scopes else args.kind
    async with gateway_session(args) as session:
        issued = await admin.create_api_key(session, args.tenant, args.mode == "live", kind,
                                            scopes=args.scopes, name=args.name)
    _announce_key(issued, "created key", args.json)
    return 0


async def keys_list(args: argparse.Namespace) -> int:
    async with gateway_session(args) as session:
        keys = await admin.list_api_keys(session, args.tenant)
    now = datetime.now(UTC)
    rows = [{"id": k.id, "key": admin.key_hint(k), "kind": admin.key_kind(k), "mode": "live" if k.livemode else "test",
             "scopes": k.scopes, "name": k.name, "created": _when(k.created_at), "status": _key_status(k, now)}
            for k in keys]
    _print_rows(args.json, rows, ("ID", "KEY", "KIND", "MODE", "SCOPES", "NAME", "CREATED", "STATUS"),
                [(r["id"], r["key"], r["kind"], r["mode"], _scopes_cell(r["kind"], r["scopes"]),
                  r["name"] or "-", r["created"], r["status"]) for r in rows])
    return 0


async def keys_revoke(args: argparse.Namespace) -> int:
    async with gateway_session(args) as session:
        revoked = await admin.revoke_api_key(session, args.key_id)
        row = await admin.get_api_key(session, args.key_id)
    if revoked:
        print(f"revoked {row.id} ({admin.key_hint(row)}): it is refused from now on")
    else:
        print(f"{row.id} ({admin.key_hint(row)}) was already revoked at {_when(row.revoked_at)}")
    return 0


async def keys_rotate(args: argparse.Namespace) -> int:
    try:
        overlap = parse_duration(args.overlap)
    except ValueError as exc:
        raise CommandError(f"--overlap: {exc}", EXIT_USAGE) from None
    async with gateway_session(args) as session:
        issued = await admin.rotate_api_key(session, args.key_id, overlap)
        old = await admin.get_api_key(session, args.key_id)
    _announce_key(issued, f"rotated {old.id} ({admin.key_hint(old)}) to new key", args.json)
    ends = "now" if not overlap else f"at {_when(old.expires_at)} (in {args.overlap})"
    print(f"The old key {admin.key_hint(old)} stops working {ends}.", file=sys.stderr)
    return 0


def _add_database_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--database-url", metavar="URL",
                       help="the gateway's database (default: HARMON_GATEWAY_DATABASE_URL)")
    where.add_argument("--data-dir", metavar="DIR",
                       help="use the gateway database of the `harmon dev` running on DIR (default when nothing "
                            "else is given: .harmon; harmon finds it)")


def _add_rate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate-limit", metavar="RATE",
                        help="requests per API key, e.g. 500/second or '1000 per 10 seconds'; default: the "
                             "deployment's (HARMON_GATEWAY_RATE_LIMIT)")
    parser.add_argument("--mint-rate-limit", metavar="RATE",
                        help="shopper tokens minted per API key, e.g. 50/second; default: the deployment's "
                             "(HARMON_GATEWAY_MINT_RATE_LIMIT)")


def add_admin_parsers(commands: Any) -> None:
    tenants = commands.add_parser("tenants", help="create and list tenants (distributors) in the gateway's database")
    tenant_actions = tenants.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = tenant_actions.add_parser("create", help="a new tenant; prints its id")
    create.add_argument("name", metavar="NAME", help="the distributor's name")
    _add_rate_options(create)
    create.add_argument("--order-prefix", metavar="PREFIX",
                        help="starts its order numbers, PREFIX-000001 (1 to 12 letters or digits); default: the "
                             "name's first six letters and digits, upper case (ORD if it has none)")
    create.add_argument("--with-keys", action="store_true",
                        help="also create its first secret and publishable key (of --mode), printed once")
    create.add_argument("--mode", choices=("test", "live"), default="test", help="of --with-keys' keys; default: test")
    create.add_argument("--json", action="store_true", help="one JSON object on stdout (full keys included, this once) instead of text")
    create.set_defaults(admin=tenants_create)
    update = tenant_actions.add_parser("update", help="change a tenant's rate limits")
    update.add_argument("tenant_id", metavar="TENANT_ID")
    _add_rate_options(update)
    update.add_argument("--json", action="store_true", help="the tenant as JSON, with its limits before the change")
    update.set_defaults(admin=tenants_update)
    listing = tenant_actions.add_parser("list", help="every tenant: id, name, created, rate limits, order prefix")
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
    create.add_argument("--json", action="store_true", help="one JSON object on stdout (full keys included, this once) instead of text")
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
    rotate.add_argument("--json", action="store_true", help="one JSON object on stdout (full keys included, this once) instead of text")
    rotate.set_defaults(admin=keys_rotate)
    for parser in (*tenant_actions.choices.values(), *key_actions.choices.values()):
        _add_database_options(parser)
        parser.set_defaults(run=run_admin)
        parser.allow_abbrev = False  # --data-dir must be spelt out: harmon looks for it


# --- harmon signing-keys: tenants' own public keys for shopper tokens ----------------------------------

def _signing_key_status(row: Any) -> str:
    return f"revoked {_when(row.revoked_at)}" if row.revoked_at is not None else "active"


async def signing_keys_add(args: argparse.Namespace) -> int:
    try:
        pem = Path(args.public_key).read_bytes()[:admin.MAX_PUBLIC_KEY_CHARS + 1]
    except OSError as exc:
        raise CommandError(f"--public-key: cannot read {args.public_key}: {exc.strerror}", EXIT_USAGE) from None
    async with gateway_session(args) as session:
        row = await admin.add_signing_key(session, args.tenant, args.mode == "live", args.kid, args.alg, pem)
    print(json.dumps({"id": row.id, "tenant_id": row.tenant_id, "mode": "live" if row.livemode else "test",
                      "kid": row.kid, "algorithm": row.algorithm,
                      "fingerprint": admin.key_fingerprint(row.public_key)}) if args.json else row.id)
    mode = "live" if row.livemode else "test"
    print(f"registered {row.id}: {row.algorithm} key {row.kid!r} ({admin.key_fingerprint(row.public_key)}, "
          f"{mode} mode) for tenant {row.tenant_id}.\nTokens your backend signs with its private key need the "
          f"header kid {row.kid!r} and the claims iss={row.tenant_id}, aud=harmon:{row.tenant_id}:{mode}, sub, "
          "iat, exp, jti.", file=sys.stderr)
    return 0


async def signing_keys_list(args: argparse.Namespace) -> int:
    async with gateway_session(args) as session:
        keys = await admin.list_signing_keys(session, args.tenant)
    rows = [{"id": k.id, "kid": k.kid, "algorithm": k.algorithm, "mode": "live" if k.livemode else "test",
             "fingerprint": admin.key_fingerprint(k.public_key), "created": _when(k.created_at),
             "status": _signing_key_status(k)} for k in keys]
    _print_rows(args.json, rows, ("ID", "KID", "ALG", "MODE", "FINGERPRINT", "CREATED", "STATUS"),
                [(r["id"], r["kid"], r["algorithm"], r["mode"], r["fingerprint"], r["created"], r["status"])
                 for r in rows])
    return 0


async def signing_keys_revoke(args: argparse.Namespace) -> int:
    async with gateway_session(args) as session:
        revoked = await admin.revoke_signing_key(session, args.key_id)
        row = await admin.get_signing_key(session, args.key_id)
    if revoked:
        print(f"revoked {row.id} (kid {row.kid!r}): tokens it signed are refused from now on")
    else:
        print(f"{row.id} (kid {row.kid!r}) was already revoked at {_when(row.revoked_at)}")
    return 0


def add_signing_key_parsers(commands: Any) -> None:
    group = commands.add_parser(
        "signing-keys", help="a tenant's own public keys (RS256/ES256) for shopper tokens its backend signs",
        description="Register the PUBLIC half of a key pair; the tenant's backend keeps the private key and signs "
                    "shopper tokens itself (header kid, claims iss=<tenant id>, aud=harmon:<tenant id>:<mode>, sub, "
                    "iat, exp, jti). Private keys are refused.")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="register a public key; prints its tsk_… id")
    add.add_argument("--tenant", required=True, metavar="TENANT_ID")
    mode = add.add_mutually_exclusive_group()
    mode.add_argument("--mode", choices=("test", "live"), default="test", help="default: test")
    mode.add_argument("--live", dest="mode", action="store_const", const="live", help="same as --mode live")
    add.add_argument("--kid", required=True, metavar="KID", help="the kid your tokens' header will carry")
    add.add_argument("--alg", required=True, choices=TENANT_ALGORITHMS,
                     help="RS256 (RSA, 2048 bits or more) or ES256 (EC P-256)")
    add.add_argument("--public-key", required=True, metavar="FILE", help="PEM file of the public key")
    add.add_argument("--json", action="store_true", help="one JSON object on stdout instead of the id")
    add.set_defaults(admin=signing_keys_add)
    listing = actions.add_parser("list", help="a tenant's signing keys: id, kid, algorithm, mode, fingerprint")
    listing.add_argument("--tenant", required=True, metavar="TENANT_ID")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    listing.set_defaults(admin=signing_keys_list)
    revoke = actions.add_parser("revoke", help="refuse tokens signed with this key from now on")
    revoke.add_argument("key_id", metavar="KEY_ID", help="tsk_… (from harmon signing-keys list)")
    revoke.set_defaults(admin=signing_keys_revoke)
    for parser in actions.choices.values():
        _add_database_options(parser)
        parser.set_defaults(run=run_admin)
        parser.allow_abbrev = False


COMMANDS = ("tenants", "keys", "signing-keys")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog or os.environ.get(PROG_ENV) or "python -m services.gateway.admin_cli",
                                     description="Tenants, API keys and tenants' signing keys in the gateway's "
                                                 "database.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_admin_parsers(commands)
    add_signing_key_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    cli_logging("harmon-admin")
    sys.exit(asyncio.run(args.run(args)))


if __name__ == "__main__":
    main()
