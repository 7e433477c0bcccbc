"""`harmon tenants` and `harmon keys` as an operator runs them: separate processes against the test stack's
gateway database, with every key they make tried on the real gateway.

harmon runs the gateway's own command (services/gateway/admin_cli.py) as a subprocess; most tests here run that
command in this process instead, with the database found as harmon finds it (libs/stack/admin_cli.py)."""
from __future__ import annotations

import asyncio
import io
import json
import os
import re
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from libs.stack.admin_cli import STACK_DSN_ENV, CommandError, stack_dsn
from libs.stack.supervisor import Stack
from services.gateway.admin_cli import build_parser, parse_duration
from tests.conftest import connect_unscoped

KEY = re.compile(r"^hk_(test|live)_(sec|pub)_[A-Za-z0-9_-]{43}$")


def _harmon() -> list[str]:
    script = Path(sys.executable).parent / "harmon"
    return [str(script)] if script.exists() else [sys.executable, "-m", "libs.stack.cli"]


@dataclass
class Run:
    code: int
    out: str
    err: str

    def ok(self) -> Run:
        assert self.code == 0, f"exit {self.code}: {self.err}"
        return self


@pytest.fixture(scope="module")
def harmon_process(stack: Stack):
    """`harmon ARGS…` as its own process on the stack's gateway database (--database-url unless `where` says)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARMON_")}

    async def run(*args: str, where: tuple[str, ...] | None = None) -> Run:
        where = ("--database-url", stack.dsns["gateway"]) if where is None else where
        proc = await asyncio.create_subprocess_exec(*_harmon(), *args, *where, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return Run(proc.returncode or 0, out.decode(), err.decode())

    return run


@pytest.fixture
def harmon(stack: Stack, monkeypatch: pytest.MonkeyPatch):
    """The same command line run in this process (a process costs a CPU-second of imports on a busy runner):
    the database found as harmon finds it, then parsed and run by the gateway's command, stdout and stderr
    captured. One at a time."""
    for name in [n for n in os.environ if n.startswith("HARMON_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HARMON_CLI_PROG", "harmon")

    async def run(*args: str, where: tuple[str, ...] | None = None) -> Run:
        where = ("--database-url", stack.dsns["gateway"]) if where is None else where
        argv = [*args, *where]
        try:
            found = stack_dsn(argv)
        except CommandError as exc:
            return Run(exc.code, "", f"harmon {args[0]} {args[1]}: {exc}")
        if found is None:
            monkeypatch.delenv(STACK_DSN_ENV, raising=False)
        else:
            monkeypatch.setenv(STACK_DSN_ENV, found)
        parsed = build_parser().parse_args(argv)
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = await parsed.run(parsed)
        return Run(code, out.getvalue(), err.getvalue())

    return run


async def refused_within(http: aiohttp.ClientSession, key: str, seconds: float = 1.0) -> dict:
    """The gateway refuses `key` (401) within `seconds`: every instance hears of a change through NOTIFY."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        status, body = await status_with(http, key)
        if status == 401 or asyncio.get_running_loop().time() > deadline:
            assert status == 401, (status, body)
            return body
        await asyncio.sleep(0.02)


async def status_with(http: aiohttp.ClientSession, key: str) -> tuple[int, dict]:
    async with http.get("/v1/products", headers={"Authorization": f"Bearer {key}"}) as r:
        return r.status, await r.json()


def hint(key: str) -> str:
    return f"{key[:11]}_…{key[-4:]}"


def created_key(run: Run) -> tuple[str, str]:
    """(key id, full key) from the output of `harmon keys create` or `rotate`."""
    run.ok()
    key = run.out.strip()
    assert KEY.match(key), run.out
    assert "only time the full key is shown" in run.err and key not in run.err
    return re.search(r"\b(key_[0-9A-Z]{26})\b(?!.*\bkey_)", run.err.split("\n")[0]).group(1), key


async def new_key(harmon, tenant_id: str, *args: str) -> tuple[str, str]:
    return created_key(await harmon("keys", "create", "--tenant", tenant_id, *args))


async def listed_keys(harmon, tenant_id: str) -> dict[str, dict]:
    run = (await harmon("keys", "list", "--tenant", tenant_id, "--json")).ok()
    return {k["id"]: k for k in json.loads(run.out)}


async def test_an_operator_manages_tenants_and_keys_with_the_harmon_command(harmon_process, http, stack) -> None:
    harmon = harmon_process
    created = (await harmon("tenants", "create", "Ocho Rios Wholesale")).ok()
    tenant_id = created.out.strip()
    assert re.fullmatch(r"ten_[0-9A-Z]{26}", tenant_id), created.out
    tenants = (await harmon("tenants", "list", where=("--data-dir", str(stack.data_dir)))).ok()
    assert tenants.out.splitlines()[0].split() == ["ID", "NAME", "CREATED", "RATE_LIMIT", "MINT_RATE_LIMIT",
                                                   "ORDER_PREFIX"]
    assert re.search(rf"^{tenant_id}\s.*\sOCHORI$", tenants.out, re.M), tenants.out  # from the name
    assert any(line.startswith(tenant_id) and "Ocho Rios Wholesale" in line for line in tenants.out.splitlines())

    (sec_id, sec), (pub_id, pub) = [created_key(run) for run in await asyncio.gather(
        harmon("keys", "create", "--tenant", tenant_id, "--name", "web shop"),
        harmon("keys", "create", "--tenant", tenant_id, "--kind", "publishable", "--mode", "test"))]
    assert sec.startswith("hk_test_sec_") and pub.startswith("hk_test_pub_")
    assert (await status_with(http, sec))[0] == 200 and (await status_with(http, pub))[0] == 200

    table = (await harmon("keys", "list", "--tenant", tenant_id)).ok()
    assert table.out.splitlines()[0].split() == ["ID", "KEY", "KIND", "MODE", "SCOPES", "NAME", "CREATED", "STATUS"]
    assert sec not in table.out + table.err and pub not in table.out + table.err
    assert sec[12:] not in table.out and pub[12:] not in table.out  # not even the random part
    assert re.search(rf"{sec_id}\s+{re.escape(hint(sec))}\s+secret\s+test\s+all\s+web shop .* active", table.out)
    assert re.search(rf"{pub_id}\s+{re.escape(hint(pub))}\s+publishable\s+test\s+-\s+- .* active", table.out)

    # rotated with an overlap: old and new both work; with none: the old one stops at once
    slow = await harmon("keys", "rotate", sec_id, "--overlap", "1h")
    new_sec_id, new_sec = created_key(slow)
    assert new_sec.startswith("hk_test_sec_") and new_sec_id != sec_id
    assert "The old key" in slow.err and "stops working at" in slow.err and sec not in slow.out + slow.err
    assert (await status_with(http, sec))[0] == 200 and (await status_with(http, new_sec))[0] == 200
    fast = await harmon("keys", "rotate", pub_id, "--overlap", "0")
    _, new_pub = created_key(fast)
    assert new_pub.startswith("hk_test_pub_") and "stops working now" in fast.err
    body = await refused_within(http, pub)
    assert body["error"]["code"] == "api_key_revoked", body
    assert "rotated" in body["error"]["message"] and hint(pub) in body["error"]["message"]
    assert pub not in json.dumps(body)
    assert (await status_with(http, new_pub))[0] == 200

    revoked = (await harmon("keys", "revoke", new_sec_id)).ok()
    assert new_sec_id in revoked.out and hint(new_sec) in revoked.out and new_sec not in revoked.out + revoked.err
    body = await refused_within(http, new_sec)
    assert body["error"]["code"] == "api_key_revoked", body
    assert hint(new_sec) in body["error"]["message"] and new_sec not in json.dumps(body)

    bad = await harmon("keys", "create", "--tenant", tenant_id, "--scope", "orders:delete")
    assert bad.code == 2 and bad.out == "" and "unknown scope 'orders:delete'" in bad.err
    assert "Traceback" not in bad.err


async def test_tenants_list_as_json(harmon) -> None:
    tenant_id = (await harmon("tenants", "create", "Listed as JSON")).ok().out.strip()
    listed = json.loads((await harmon("tenants", "list", "--json")).ok().out)
    assert {"id": tenant_id, "name": "Listed as JSON"}.items() <= next(t for t in listed if t["id"] == tenant_id).items()


async def test_a_tenants_order_prefix_is_given_or_derived_from_its_name(harmon, stack: Stack) -> None:
    given = json.loads((await harmon("tenants", "create", "Prefixed", "--order-prefix", "acme9", "--json")).ok().out)
    assert given["order_prefix"] == "ACME9"  # upper case, as order numbers show it
    derived = {name: json.loads((await harmon("tenants", "create", name, "--json")).ok().out)["order_prefix"]
               for name in ("Island Grocers Ltd", "J&B 4 U", "Épicerie", "—")}
    assert derived == {"Island Grocers Ltd": "ISLAND", "J&B 4 U": "JB4U", "Épicerie": "PICERI", "—": "ORD"}
    listed = {t["id"]: t for t in json.loads((await harmon("tenants", "list", "--json")).ok().out)}
    assert listed[given["id"]]["order_prefix"] == "ACME9"
    # the gateway reads it with the key, to send it with every PlaceOrder
    conn = await connect_unscoped(stack.dsns["gateway"])
    try:
        assert await conn.fetchval("SELECT order_prefix FROM tenants WHERE id = $1", given["id"]) == "ACME9"
    finally:
        await conn.close()
    for bad in ("ACME-1", "X" * 13, " "):
        run = await harmon("tenants", "create", "Bad prefix", "--order-prefix", bad)
        assert (run.code, run.out) == (2, ""), (bad, run)
        assert "an order prefix is 1 to 12 letters or digits" in run.err, run.err


async def test_a_tenants_own_rate_limits_are_set_listed_and_enforced(harmon, http) -> None:
    tenant_id = (await harmon("tenants", "create", "Limited", "--rate-limit", "2/minute")).ok().out.strip()
    _, sec = await new_key(harmon, tenant_id)
    assert [(await status_with(http, sec))[0] for _ in range(3)] == [200, 200, 429]
    updated = (await harmon("tenants", "update", tenant_id, "--rate-limit", "default",
                            "--mint-rate-limit", "5 per 10 seconds")).ok()
    assert "rate limit default" in updated.out and "mint rate limit 5 per 10 seconds" in updated.out
    async def limit_lifted() -> bool:  # within a second on every gateway: NOTIFY from the tenants table
        return (await status_with(http, sec))[0] == 200
    deadline = asyncio.get_running_loop().time() + 1.0
    while not await limit_lifted():
        assert asyncio.get_running_loop().time() < deadline, "the new rate limit was not in force within 1 s"
        await asyncio.sleep(0.05)
    listed = json.loads((await harmon("tenants", "list", "--json")).ok().out)
    mine = next(t for t in listed if t["id"] == tenant_id)
    assert (mine["rate_limit"], mine["mint_rate_limit"]) == (None, "5 per 10 seconds")
    bad = await harmon("tenants", "update", tenant_id, "--rate-limit", "lots")
    assert bad.code == 2 and "not a rate limit: 'lots'" in bad.err
    assert (await harmon("tenants", "update", tenant_id)).code == 2
    assert (await harmon("tenants", "update", "ten_nobody", "--rate-limit", "1/second")).code == 1


async def test_revoking_stops_that_key_only_and_is_idempotent(harmon, http) -> None:
    tenant_id = (await harmon("tenants", "create", "Revocation")).ok().out.strip()
    sec_id, sec = await new_key(harmon, tenant_id)
    _, other = await new_key(harmon, tenant_id)
    (await harmon("keys", "revoke", sec_id)).ok()
    await refused_within(http, sec)
    assert (await status_with(http, other))[0] == 200
    assert (await listed_keys(harmon, tenant_id))[sec_id]["status"].startswith("revoked ")
    again = (await harmon("keys", "revoke", sec_id)).ok()
    assert "already revoked" in again.out


async def test_live_and_restricted_keys(harmon, http) -> None:
    tenant_id = (await harmon("tenants", "create", "Restricted keys")).ok().out.strip()
    live_id, live = await new_key(harmon, tenant_id, "--mode", "live")
    rk_id, rk = await new_key(harmon, tenant_id, "--scope", "orders:read", "--scope", "catalog:read",
                              "--scope", "orders:read")
    rk2_id, _ = await new_key(harmon, tenant_id, "--kind", "restricted", "--scope", "carts:write")
    assert live.startswith("hk_live_sec_") and rk.startswith("hk_test_sec_")  # restricted keys are secret keys
    listed = await listed_keys(harmon, tenant_id)
    assert listed[live_id]["mode"] == "live" and listed[live_id]["scopes"] is None
    assert listed[rk_id]["kind"] == "restricted" and listed[rk_id]["scopes"] == ["catalog:read", "orders:read"]
    assert listed[rk2_id]["scopes"] == ["carts:write"]
    assert (await status_with(http, live))[0] == 200 and (await status_with(http, rk))[0] == 200


async def test_a_successor_inherits_the_key_and_a_key_is_rotated_once(harmon) -> None:
    tenant_id = (await harmon("tenants", "create", "Rotation")).ok().out.strip()
    slow_id, _ = await new_key(harmon, tenant_id, "--scope", "catalog:read", "--name", "pos")
    fast_id, _ = await new_key(harmon, tenant_id, "--kind", "publishable", "--mode", "live")
    new_slow_id, _ = created_key(await harmon("keys", "rotate", slow_id, "--overlap", "30m"))
    new_fast_id, new_fast = created_key(await harmon("keys", "rotate", fast_id, "--overlap", "0"))
    assert new_fast.startswith("hk_live_pub_")
    listed = await listed_keys(harmon, tenant_id)
    assert listed[slow_id]["status"].startswith("expires ") and listed[fast_id]["status"].startswith("expired ")
    assert {k: listed[new_slow_id][k] for k in ("kind", "mode", "scopes", "name", "status")} == \
        {"kind": "restricted", "mode": "test", "scopes": ["catalog:read"], "name": "pos", "status": "active"}
    assert {k: listed[new_fast_id][k] for k in ("kind", "mode", "status")} == \
        {"kind": "publishable", "mode": "live", "status": "active"}
    again = await harmon("keys", "rotate", slow_id)
    assert again.code == 2 and "already rotated" in again.err


async def test_mistakes_are_refused_clearly(harmon) -> None:
    tenant_id = (await harmon("tenants", "create", "Mistakes")).ok().out.strip()
    key_id, _ = await new_key(harmon, tenant_id)
    revoked_id, _ = await new_key(harmon, tenant_id)
    (await harmon("keys", "revoke", revoked_id)).ok()
    missing_key = "key_01JZZZZZZZZZZZZZZZZZZZZZZZ"
    cases = {
        ("keys", "create", "--tenant", tenant_id, "--scope", "orders:delete"): (2, "unknown scope 'orders:delete'"),
        ("keys", "create", "--tenant", tenant_id, "--kind", "restricted"): (2, "needs at least one scope"),
        ("keys", "create", "--tenant", tenant_id, "--kind", "publishable", "--scope", "catalog:read"):
            (2, "publishable keys take no scopes"),
        ("keys", "create", "--tenant", "ten_nope"): (1, "no tenant ten_nope"),
        ("keys", "list", "--tenant", "ten_nope"): (1, "no tenant ten_nope"),
        ("keys", "revoke", missing_key): (1, f"no API key {missing_key}"),
        ("keys", "rotate", missing_key): (1, f"no API key {missing_key}"),
        ("keys", "rotate", key_id, "--overlap", "soon"): (2, "not a duration: 'soon'"),
        ("keys", "rotate", key_id, "--overlap", "8d"): (2, "between 0 and 7 days"),
        ("keys", "rotate", revoked_id): (2, "was revoked"),
        ("tenants", "create", "  "): (2, "name is 1 to"),
    }
    for args, (code, message) in cases.items():
        run = await harmon(*args)
        assert (run.code, run.out) == (code, ""), (args, run)
        assert message in run.err, (args, run.err)
    # none of the refused rotations touched the key
    assert (await listed_keys(harmon, tenant_id))[key_id]["status"] == "active"


async def test_which_database(harmon, stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    by_dir = (await harmon("tenants", "create", "Found by data dir", where=("--data-dir", str(stack.data_dir)))).ok()
    assert by_dir.out.strip() in (await harmon("tenants", "list")).ok().out  # the same database
    nothing = await harmon("tenants", "list", where=("--data-dir", str(tmp_path)))
    assert nothing.code == 1 and "no stack in" in nothing.err
    monkeypatch.chdir(tmp_path)  # no flag, no variable, no ./.harmon
    unsaid = await harmon("tenants", "list", where=())
    assert unsaid.code == 2 and "which gateway database?" in unsaid.err
    monkeypatch.setenv("HARMON_GATEWAY_DATABASE_URL", stack.dsns["gateway"])
    assert by_dir.out.strip() in (await harmon("tenants", "list", where=())).ok().out
    unreachable = await harmon("tenants", "list", where=("--database-url", "postgresql://u:hunter2@127.0.0.1:1/db"))
    assert unreachable.code == 1 and "cannot use the gateway database" in unreachable.err
    assert "hunter2" not in unreachable.err


@pytest.mark.parametrize("text, expected", [
    ("0", timedelta(0)), ("0s", timedelta(0)), ("90s", timedelta(seconds=90)), ("30m", timedelta(minutes=30)),
    ("24h", timedelta(hours=24)), ("7d", timedelta(days=7)), ("1h30m", timedelta(minutes=90)),
    (" 2H ", timedelta(hours=2)),
])
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "h", "24", "-1h", "1.5h", "1h 30m", "1w", "00", "soon"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
