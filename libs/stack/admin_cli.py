"""`harmon tenants` and `harmon keys`: tenants and API keys in the gateway's own database.

A full key is printed once, on stdout, when it is created or rotated; lists show prefix + last four.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .supervisor import running_stack_dsn

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

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
        tenant = await admin.create_tenant(session, args.name, rate_limit=args.rate_limit,
                                           mint_rate_limit=args.mint_rate_limit)
    print(tenant.id)
    print(f"created tenant {tenant.id} ({tenant.name}); next: harmon keys create --tenant {tenant.id}",
          file=sys.stderr)
    return 0


async def tenants_update(args: argparse.Namespace) -> int:
    from services.gateway import admin

    if args.rate_limit is None and args.mint_rate_limit is None:
        raise CommandError("nothing to change: give --rate-limit and/or --mint-rate-limit", EXIT_USAGE)
    async with gateway_session(args) as session:
        tenant = await admin.update_tenant(session, args.tenant_id, rate_limit=args.rate_limit,
                                           mint_rate_limit=args.mint_rate_limit)
    print(f"tenant {tenant.id} ({tenant.name}): rate limit {_limit_cell(tenant.rate_limit)}, "
          f"mint rate limit {_limit_cell(tenant.mint_rate_limit)}")
    return 0


def _limit_cell(limit: str | None) -> str:
    return limit or "default"


async def tenants_list(args: argparse.Namespace) -> int:
    from services.gateway import admin

    async with gateway_session(args) as session:
        tenants = await admin.list_tenants(session)
    _print_rows(args.json,
                [{"id": t.id, "name": t.name, "created": _when(t.created_at), "rate_limit": t.rate_limit,
                  "mint_rate_limit": t.mint_rate_limit} for t in tenants],
                ("ID", "NAME", "CREATED", "RATE_LIMIT", "MINT_RATE_LIMIT"),
                [(t.id, t.name, _when(t.created_at), _limit_cell(t.rate_limit), _limit_cell(t.mint_rate_limit))
                 for t in tenants])
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
    _print_rows(args.json, rows, ("ID", "KEY", "KIND", "MODE", "SCOPES", "NAME", "CREATED", "STATUS"),
                [(r["id"], r["key"], r["kind"], r["mode"], _scopes_cell(r["kind"], r["scopes"]),
                  r["name"] or "-", r["created"], r["status"]) for r in rows])
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


def _add_rate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate-limit", metavar="RATE",
                        help="requests per API key, e.g. 500/second or '1000 per 10 seconds'; default: the "
                             "deployment's (HARMON_GATEWAY_RATE_LIMIT)")
    parser.add_argument("--mint-rate-limit", metavar="RATE",
                        help="shopper tokens minted per API key, e.g. 50/second; default: the deployment's "
                             "(HARMON_GATEWAY_MINT_RATE_LIMIT)")


def add_admin_parsers(commands: Any) -> None:
    from services.gateway.admin import SCOPES  # noqa: PLC0415 (light: no app, no broker)

    tenants = commands.add_parser("tenants", help="create and list tenants (distributors) in the gateway's database")
    tenant_actions = tenants.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = tenant_actions.add_parser("create", help="a new tenant; prints its id")
    create.add_argument("name", metavar="NAME", help="the distributor's name")
    _add_rate_options(create)
    create.set_defaults(admin=tenants_create)
    update = tenant_actions.add_parser("update", help="change a tenant's rate limits")
    update.add_argument("tenant_id", metavar="TENANT_ID")
    _add_rate_options(update)
    update.set_defaults(admin=tenants_update)
    listing = tenant_actions.add_parser("list", help="every tenant: id, name, created, rate limits")
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


# --- harmon signing-keys: tenants' own public keys for shopper tokens ----------------------------------

def _signing_key_status(row: Any) -> str:
    return f"revoked {_when(row.revoked_at)}" if row.revoked_at is not None else "active"


async def signing_keys_add(args: argparse.Namespace) -> int:
    from services.gateway import admin

    try:
        pem = Path(args.public_key).read_bytes()[:admin.MAX_PUBLIC_KEY_CHARS + 1]
    except OSError as exc:
        raise CommandError(f"--public-key: cannot read {args.public_key}: {exc.strerror}", EXIT_USAGE) from None
    async with gateway_session(args) as session:
        row = await admin.add_signing_key(session, args.tenant, args.mode == "live", args.kid, args.alg, pem)
    print(row.id)
    mode = "live" if row.livemode else "test"
    print(f"registered {row.id}: {row.algorithm} key {row.kid!r} ({admin.key_fingerprint(row.public_key)}, "
          f"{mode} mode) for tenant {row.tenant_id}.\nTokens your backend signs with its private key need the "
          f"header kid {row.kid!r} and the claims iss={row.tenant_id}, aud=harmon:{row.tenant_id}:{mode}, sub, "
          "iat, exp, jti.", file=sys.stderr)
    return 0


async def signing_keys_list(args: argparse.Namespace) -> int:
    from services.gateway import admin

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
    from services.gateway import admin

    async with gateway_session(args) as session:
        revoked = await admin.revoke_signing_key(session, args.key_id)
        row = await admin.get_signing_key(session, args.key_id)
    if revoked:
        print(f"revoked {row.id} (kid {row.kid!r}): tokens it signed are refused from now on")
    else:
        print(f"{row.id} (kid {row.kid!r}) was already revoked at {_when(row.revoked_at)}")
    return 0


def add_signing_key_parsers(commands: Any) -> None:
    from services.gateway.auth import TENANT_ALGORITHMS  # noqa: PLC0415

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
