"""Shared fixtures: one real stack per session (the same `Stack` as `harmon dev`), fresh tenants per test.

    stack       the running Stack (all six services unless HARMON_TEST_SERVICES=cart,pricing,… says fewer)
    http        aiohttp.ClientSession with base_url = the gateway, e.g. `await http.get("/v1/products", …)`
    erp         ErpPublisher: `await erp.publish(topics.ERP_PRODUCTS, ProductUpsert(...), tenant_id, livemode)`
    new_tenant  `keys = await new_tenant()` → TenantKeys(tenant_id, secret_key, publishable_key, livemode)
    tenant      a fresh test-mode tenant for this test
    until       `await until(lambda: ..., timeout=5)`: wait for a condition, never sleep
"""
from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from libs.contracts.ids import new_id
from libs.stack.demo import ErpPublisher, TenantKeys
from libs.stack.supervisor import SERVICES, Stack
from tests.logscan import assert_no_secrets

T = TypeVar("T")

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Short deadlines so timeout paths are tested in seconds, not minutes.
TEST_ENV: dict[str, dict[str, str]] = {
    # the overdue sweep every second: tests/e2e/test_lifecycle.py waits for an invoice to go overdue
    "orders": {"HARMON_ORDERS_STEP_TIMEOUT_S": "4", "HARMON_ORDERS_OVERDUE_SWEEP_INTERVAL_S": "1"},
    # the lease just outlives the checkout timeout, so a killed gateway's key is free again in seconds
    "gateway": {"HARMON_GATEWAY_CHECKOUT_TIMEOUT_S": "10", "HARMON_GATEWAY_REQUEST_TIMEOUT_S": "8",
                "HARMON_GATEWAY_IDEMPOTENCY_LEASE_S": "12",
                # far above what the suite sends (auth matrix, 50 concurrent POSTs, property runs from one key
                # and 127.0.0.1); tests of the limits give their tenant, or a second gateway, low ones
                "HARMON_GATEWAY_RATE_LIMIT": "100000/second", "HARMON_GATEWAY_MINT_RATE_LIMIT": "100000/second",
                "HARMON_GATEWAY_FAILED_AUTH_RATE_LIMIT": "100000/minute"},
    # webhooks (tests/e2e/test_webhooks.py): retries within a second, polled every 0.1 s; a killed instance's
    # claims free again in seconds (the lease still outlives the 10 s attempt timeout)
    "notifier": {"HARMON_NOTIFIER_WEBHOOK_RETRY_S": "0.2,0.4,0.8", "HARMON_NOTIFIER_WEBHOOK_POLL_INTERVAL_S": "0.1",
                 "HARMON_NOTIFIER_WEBHOOK_LEASE_S": "12"},
}


async def until(predicate: Callable[[], T | Awaitable[T]], timeout: float = 10.0, interval: float = 0.02,
                message: str = "") -> T:
    """Wait until `predicate()` (sync or async) returns something truthy, and return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {message or predicate!r}; last: {value!r}")
        await asyncio.sleep(interval)


async def connect_unscoped(dsn: str) -> "asyncpg.Connection":
    """A test's own connection to a service's database that sees every tenant's rows: row-level security scopes
    every table to `harmon.scope` (libs/runtime/database.py); `*` is the deliberate cross-tenant scope."""
    conn = await asyncpg.connect(dsn)
    await conn.execute("SELECT set_config('harmon.scope', '*', false)")
    return conn


def stack_services() -> tuple[str, ...]:
    raw = os.environ.get("HARMON_TEST_SERVICES", "")
    return tuple(s.strip() for s in raw.split(",") if s.strip()) or SERVICES


def unwritten_services(services: tuple[str, ...]) -> list[str]:
    return [s for s in services if not (PROJECT_ROOT / "services" / s / "main.py").exists()]


def fresh_data_dir(prefix: str) -> Path:
    # Not pytest's tmp_path: as root, PostgreSQL runs as `nobody`, which cannot enter its 0700 parents.
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o711)  # mkdtemp's 0700 would stop it at this directory too
    return path


def discard_data_dir(path: Path) -> None:
    """Remove a stopped stack's data dir, after checking its logs hold no full key or token (kept if they do)."""
    assert_no_secrets(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def rsa_private() -> rsa.RSAPrivateKey:
    """A tenant's RS256 signing key (the unit and end-to-end signing-key tests share one)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_private() -> ec.EllipticCurvePrivateKey:
    """A tenant's ES256 signing key."""
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session", autouse=True)
def logs_hold_no_secrets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the run, the logs tests wrote under pytest's tmp_path (extra instances, brokers) are clean."""
    yield
    assert_no_secrets(tmp_path_factory.getbasetemp())


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def stack(request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    services = stack_services()
    missing = unwritten_services(services)
    if missing:  # a failure, not a skip: a renamed service must not turn the end-to-end suite into skips
        pytest.fail(f"services without a main.py: {', '.join(missing)} "
                    "(HARMON_TEST_SERVICES=cart,... runs the stack with fewer)")
    # The embedded server always: a shared HARMON_DATABASE_URL server would mix test and dev databases.
    async with running_stack("harmon-test-stack-", lambda: request.session.testsfailed,
                             fsync=False, services=services) as stack:
        yield stack


@asynccontextmanager
async def running_stack(prefix: str, failed: Callable[[], object], *, every_service_env: dict[str, str] | None = None,
                        **options: Any) -> AsyncIterator[Stack]:
    """A started Stack (the test env, the embedded PostgreSQL) on a fresh data dir, stopped afterwards; its
    data dir is removed, or kept and reported when `failed()` says the tests failed (its logs are scanned
    for secrets either way). `every_service_env`: more environment for every service process."""
    data_dir = fresh_data_dir(prefix)
    extra = {svc: {**TEST_ENV.get(svc, {}), **(every_service_env or {})} for svc in SERVICES}
    stack = Stack(data_dir, extra_env=extra, database_url="", **options)
    try:
        await stack.start()
        yield stack
    finally:
        await stack.stop()
        if failed():
            print(f"\nstack data dir kept for the failures above (service logs in {stack.logs_dir})")
            assert_no_secrets(data_dir)
        else:
            discard_data_dir(data_dir)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def http(stack: Stack) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(stack.base_url, timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def erp(stack: Stack) -> AsyncIterator[ErpPublisher]:
    async with ErpPublisher(stack.bootstrap) as publisher:
        yield publisher


async def tenant_in_process(gateway_dsn: str, name: str, livemode: bool = False) -> TenantKeys:
    """What `libs.stack.demo.create_tenant_with_keys` makes by running the gateway's admin command, made here in
    this process with the same gateway functions: tests may import services, and each subprocess costs ≈ 0.7 s."""
    from services.gateway import admin
    from libs.runtime.db import make_engine, make_sessionmaker

    engine = make_engine(gateway_dsn, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            tenant = await admin.create_tenant(session, name)
            secret = await admin.create_api_key(session, tenant.id, livemode, "secret")
            publishable = await admin.create_api_key(session, tenant.id, livemode, "publishable")
    finally:
        await engine.dispose()
    return TenantKeys(tenant.id, secret.key, publishable.key, livemode)


@pytest.fixture(scope="session")
def new_tenant(stack: Stack) -> Callable[..., Awaitable[TenantKeys]]:
    """A factory: each call makes a tenant with one secret and one publishable key, in the gateway's database."""

    async def make(name: str | None = None, livemode: bool = False) -> TenantKeys:
        return await tenant_in_process(stack.dsns["gateway"], name or f"Test tenant {new_id('t')}", livemode)

    return make


@pytest_asyncio.fixture(loop_scope="session")
async def tenant(new_tenant: Callable[..., Awaitable[TenantKeys]]) -> TenantKeys:
    return await new_tenant()


@pytest.fixture(name="until")
def until_fixture() -> Callable[..., Awaitable[Any]]:
    return until
