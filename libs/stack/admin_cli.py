"""`harmon tenants|keys|signing-keys …`: the gateway's admin commands, run as the gateway's own module.

The commands belong to the gateway (services/gateway/admin_cli.py, `python -m services.gateway.admin_cli`);
harmon runs that module as a subprocess with the same arguments and never imports services/. What harmon adds is
where the database is when no `--database-url` is given: `--data-dir DIR` (a running `harmon dev`), else
HARMON_GATEWAY_DATABASE_URL, else a running `./.harmon` — the stack's gateway DSN, found here from its
secrets.json, is handed over in HARMON_STACK_GATEWAY_DATABASE_URL (never on the command line, where `ps` shows it).

Also the small pieces `harmon`'s other commands share (exit codes, CommandError, tables).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from .processes import alive
from .supervisor import running_stack_dsn

EXIT_FAILED = 1  # not found, refused, or the database could not be reached
EXIT_USAGE = 2  # as argparse: the command line itself is wrong
GATEWAY_ADMIN = "services.gateway.admin_cli"
COMMANDS = {
    "tenants": "create, update and list tenants (distributors) in the gateway's database",
    "keys": "create, list, revoke and rotate a tenant's API keys",
    "signing-keys": "a tenant's own public keys (RS256/ES256) for shopper tokens its backend signs",
}
STACK_DSN_ENV = "HARMON_STACK_GATEWAY_DATABASE_URL"  # read by services/gateway/admin_cli.py
PROG_ENV = "HARMON_CLI_PROG"


class CommandError(Exception):
    """Ends a command with a message on stderr and this exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def running_dev_credentials(data_dir: Path, hint: str, *, code: int = EXIT_USAGE,
                            need_credentials: bool = True) -> Path:
    """The credentials.json of the `harmon dev` running on `data_dir` (its stack.lock names a live supervisor);
    CommandError(`code`) with `hint` when none runs there. Another user's stack (an unreadable lock) counts as
    running: its credentials.json, 0600 too, decides."""
    credentials = data_dir / "credentials.json"
    try:
        pid: int | None = int((data_dir / "stack.lock").read_text().strip())
    except PermissionError:
        pid = -1
    except (OSError, ValueError):
        pid = None
    if pid is None or (pid > 0 and not alive(pid)) or (need_credentials and not credentials.exists()):
        raise CommandError(f"no `harmon dev` is running in {data_dir}; {hint}", code)
    return credentials


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])


def add_admin_parsers(commands: Any) -> None:
    """`tenants`, `keys` and `signing-keys` in harmon's help; everything after the command goes to the gateway's."""
    for name, help_text in COMMANDS.items():
        # prefix_chars that no argument starts with: --help and every option reach the gateway's parser
        parser = commands.add_parser(name, help=help_text, add_help=False, prefix_chars="\0")
        parser.add_argument("arguments", nargs=argparse.REMAINDER)
        parser.set_defaults(run=run_gateway_admin)


def _option(arguments: list[str], name: str) -> tuple[bool, str | None]:
    """Whether `--name` is given (before a `--`), and its value."""
    for i, arg in enumerate(arguments):
        if arg == "--":
            break
        if arg == name:
            return True, arguments[i + 1] if i + 1 < len(arguments) else None
        if arg.startswith(name + "="):
            return True, arg.partition("=")[2]
    return False, None


def stack_dsn(arguments: list[str], environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """The gateway DSN of the running stack these arguments name, if they name one: `--data-dir DIR`, or
    `./.harmon` when neither --database-url nor HARMON_GATEWAY_DATABASE_URL says where. CommandError if that
    stack is not there or not running."""
    has_url, _ = _option(arguments, "--database-url")
    has_dir, data_dir = _option(arguments, "--data-dir")
    if has_url or "-h" in arguments or "--help" in arguments:
        return None  # the gateway's parser answers (and refuses --database-url with --data-dir)
    if not has_dir:
        if environ.get("HARMON_GATEWAY_DATABASE_URL") or not Path(".harmon", "secrets.json").exists():
            return None
        data_dir = ".harmon"
    if not data_dir:
        return None  # `--data-dir` without its value: argparse says so
    try:
        return running_stack_dsn(Path(data_dir), "gateway")
    except (RuntimeError, ValueError) as exc:
        raise CommandError(str(exc)) from None


async def run_gateway_admin(args: argparse.Namespace) -> int:
    """Run `python -m services.gateway.admin_cli COMMAND ARGUMENTS…`; its exit code is harmon's."""
    arguments: list[str] = args.arguments
    env = {**os.environ, PROG_ENV: "harmon"}
    env.pop(STACK_DSN_ENV, None)
    try:
        dsn = stack_dsn(arguments)
    except CommandError as exc:
        action = next((a for a in arguments if not a.startswith("-")), "")
        print(f"harmon {args.command} {action}: {exc}".replace("  ", " "), file=sys.stderr)
        return exc.code
    if dsn is not None:
        env[STACK_DSN_ENV] = dsn
    project_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, env.get("PYTHONPATH")) if p)
    child = await asyncio.create_subprocess_exec(sys.executable, "-m", GATEWAY_ADMIN, args.command, *arguments,
                                                 env=env)
    return await child.wait()
