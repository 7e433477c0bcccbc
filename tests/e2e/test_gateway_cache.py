"""What the gateway remembers, on two instances of it (services/gateway/cache.py): a revoked key and a
deactivated customer are refused on both within a second; with its LISTEN connection cut, a gateway reads
PostgreSQL on every request (a key revoked meanwhile is refused at once) and remembers again once it listens;
and the SQL statements an authenticated request costs, remembered or not."""

import asyncio
import re
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest
import pytest_asyncio

from libs.contracts.erp import CustomerUpsert
from libs.contracts.ids import new_id
from libs.runtime.db import make_engine, make_sessionmaker
from services.gateway import admin
from services.gateway.cache import listener_name

from tests.conftest import until

from .conftest import issue_key
from .gateways import extra_gateway
from .storefront import Reply, Storefront

pytestmark = pytest.mark.e2e

WITHIN_S = 1.0  # docs/operations.md: a change holds on every gateway within a second


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of /metrics (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if m and ",".join(sorted((m.group(1) or "").split(","))) == want:
            return float(m.group(2))
    return 0.0


async def metrics_of(http: aiohttp.ClientSession) -> str:
    async with http.get("/metrics") as r:
        return await r.text()


async def readyz_of(http: aiohttp.ClientSession) -> dict:
    async with http.get("/readyz") as r:
        return await r.json()


async def refused_on_all(calls, code: str, within_s: float = WITHIN_S) -> float:
    """Poll every call (one per gateway) until each answers 401 `code`; the seconds that took, at most `within_s`."""
    started = time.monotonic()
    pending = dict(enumerate(calls))
    last: dict[int, Reply] = {}
    while pending:
        for i, call in list(pending.items()):
            last[i] = reply = await call()
            if reply.status == 401 and reply.error.get("code") == code:
                del pending[i]
        elapsed = time.monotonic() - started
        assert not pending or elapsed <= within_s, \
            f"still accepted after {elapsed:.2f} s on gateway(s) {sorted(pending)}: {[last[i].body for i in pending]}"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def second(stack, http) -> AsyncIterator[aiohttp.ClientSession]:
    """A second gateway for this module's tests, once the two share the customers topic's partitions (until then
    the group is rebalancing and customer records wait)."""
    async with extra_gateway(stack, until, f"c2-{new_id('g')[-6:]}") as other:
        async def shared():
            held = [(await readyz_of(g)).get("customers_partitions_assigned", 0) for g in (http, other)]
            return all(held) and sum(held) == stack.partitions
        await until(shared, timeout=30, message="both gateways hold customer partitions")
        yield other


def on(http: aiohttp.ClientSession, key: str) -> Storefront:
    return Storefront(http, "", key)


async def revoke(stack, key_id: str, dsn: str | None = None) -> None:
    """`harmon keys revoke`'s own call (services/gateway/admin.py), on the gateway's database."""
    engine = make_engine(dsn or stack.dsns["gateway"], pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            assert await admin.revoke_api_key(session, key_id)
    finally:
        await engine.dispose()


async def key_id_of(db, key: str) -> str:
    rows = await db("gateway", "SELECT id FROM api_keys WHERE last4 = $1 ORDER BY created_at DESC", key[-4:])
    return rows[0]["id"]


async def test_a_revoked_key_is_refused_on_every_gateway_within_a_second(stack, shop, http, second, db):
    key = await issue_key(stack, shop.tenant_id, False, "secret")
    gateways = [on(http, key), on(second, key)]
    hits_before = [metric(await metrics_of(g.http), "harmon_gateway_cache_lookups_total", kind="api_keys",
                          result="hit") for g in gateways]
    for _ in range(3):
        for g in gateways:
            assert (await g.call("GET", "/v1/products?limit=1")).status == 200
    for g, before in zip(gateways, hits_before):  # remembered on both: the later lookups read no database
        assert metric(await metrics_of(g.http), "harmon_gateway_cache_lookups_total", kind="api_keys",
                      result="hit") >= before + 2
        assert (await readyz_of(g.http))["cache"] == "on"

    await revoke(stack, await key_id_of(db, key))
    took = await refused_on_all([lambda g=g: g.call("GET", "/v1/products?limit=1") for g in gateways],
                                "api_key_revoked")
    print(f"revoked key refused on both gateways after {took * 1000:.0f} ms")


async def test_a_deactivated_customer_is_refused_on_every_gateway_within_a_second(stack, shop, store, http, second,
                                                                                   erp):
    token = await store.token(shop.big)
    gateways = [on(http, shop.secret_key), on(second, shop.secret_key)]
    for _ in range(3):
        for g in gateways:
            r = await g.call("GET", "/v1/orders", token=token)
            assert r.status == 200, r.body

    await erp.publish(None, CustomerUpsert(customer_id=shop.big, name="Big Shop Ltd", terms="net_30", active=False),
                      shop.tenant_id)
    took = await refused_on_all([lambda g=g: g.call("GET", "/v1/orders", token=token) for g in gateways],
                                "shopper_token_invalid")
    print(f"deactivated customer refused on both gateways {took * 1000:.0f} ms after the ERP record was published")
    minted = await on(second, shop.secret_key).call("POST", "/v1/shopper_tokens", json={"customer_id": shop.big})
    assert minted.status == 404, minted.body


async def test_with_its_listener_cut_a_gateway_reads_postgresql_and_remembers_again_once_back(
        stack, shop, http, second, db, until):
    a = await issue_key(stack, shop.tenant_id, False, "secret")
    b = await issue_key(stack, shop.tenant_id, False, "secret")
    a_id, b_id = await key_id_of(db, a), await key_id_of(db, b)  # before the gateway's role is locked out
    for key in (a, b, a, b):
        assert (await on(second, key).call("GET", "/v1/products?limit=1")).status == 200
    ready = await readyz_of(second)
    assert ready["cache"] == "on", ready
    listener = listener_name(ready_instance := (await instance_of(db, second)))
    role = urlsplit(stack.dsns["gateway"]).username
    superuser_gateway_db = stack.admin_dsn.rsplit("/", 1)[0] + "/" + urlsplit(stack.dsns["gateway"]).path[1:]
    admin_conn = await asyncpg.connect(stack.admin_dsn)
    try:
        await admin_conn.execute(f'ALTER ROLE "{role}" NOLOGIN')  # it cannot listen again until allowed
        try:
            killed = await admin_conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", listener)
            assert killed == 1, f"no connection named {listener} ({ready_instance})"

            async def bypassed():
                return (await readyz_of(second))["cache"].startswith("bypassed")
            await until(bypassed, timeout=5, message="the gateway noticed its listener is gone")
            bypasses = metric(await metrics_of(second), "harmon_gateway_cache_lookups_total", kind="api_keys",
                              result="bypass")

            # revoked while nobody listens: no NOTIFY reaches this gateway, and it is refused at once all the same
            await revoke(stack, a_id, dsn=superuser_gateway_db)
            refused = await on(second, a).call("GET", "/v1/products?limit=1")
            assert (refused.status, refused.error.get("code")) == (401, "api_key_revoked"), refused.body
            assert (await on(second, b).call("GET", "/v1/products?limit=1")).status == 200
            assert metric(await metrics_of(second), "harmon_gateway_cache_lookups_total", kind="api_keys",
                          result="bypass") >= bypasses + 2
        finally:
            await admin_conn.execute(f'ALTER ROLE "{role}" LOGIN')

        async def listening_again():
            return (await readyz_of(second))["cache"] == "on"
        await until(listening_again, timeout=15, interval=0.1, message="the gateway listens again")
        assert await admin_conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                                         listener) == 1
    finally:
        await admin_conn.close()

    # remembered again, and forgotten again on a change
    hits = metric(await metrics_of(second), "harmon_gateway_cache_lookups_total", kind="api_keys", result="hit")
    for _ in range(2):
        assert (await on(second, b).call("GET", "/v1/products?limit=1")).status == 200
    assert metric(await metrics_of(second), "harmon_gateway_cache_lookups_total", kind="api_keys",
                  result="hit") >= hits + 1
    await revoke(stack, b_id)
    await refused_on_all([lambda: on(second, b).call("GET", "/v1/products?limit=1")], "api_key_revoked")


async def instance_of(db, http: aiohttp.ClientSession) -> str:
    """The instance id a gateway's listener carries, from pg_stat_activity (the test named the instance)."""
    rows = await db("gateway", "SELECT application_name FROM pg_stat_activity "
                               "WHERE application_name LIKE 'harmon-gateway-listen:c2-%'")
    assert len(rows) == 1, rows
    return rows[0]["application_name"].split(":", 1)[1]


async def statements_so_far(http: aiohttp.ClientSession) -> float:
    return metric(await metrics_of(http), "harmon_gateway_db_statements_total")


async def statements_per_request(http: aiohttp.ClientSession, call, n: int = 20) -> float:
    await call()  # the first one fills the memory
    # the gateway's own work (start-up pruning, a customer record) must not be counted as the requests'
    (before,) = await until(lambda: _settled(http), timeout=10, message="the gateway's own statements stopped")
    for _ in range(n):
        r = await call()
        assert r.status in (200, 201), r.body
    return (await statements_so_far(http) - before) / n


async def _settled(http: aiohttp.ClientSession) -> tuple[float] | None:
    first = await statements_so_far(http)
    await asyncio.sleep(0.5)
    return (first,) if await statements_so_far(http) == first else None


async def test_sql_statements_per_authenticated_request_remembered_and_not(stack, until, shop, store, http, second):
    """Counted by the gateway itself (harmon_gateway_db_statements_total); without the memory
    (HARMON_GATEWAY_CACHE=false) a request reads what every request read before it existed."""
    token = await store.token(shop.big)
    requests = {
        "secret key": lambda s: s.call("GET", "/v1/products?limit=1"),
        "secret key + shopper token": lambda s: s.call("GET", "/v1/products?limit=1", token=token),
        "mint a shopper token": lambda s: s.call("POST", "/v1/shopper_tokens", json={"customer_id": shop.big}),
    }
    counts: dict[str, dict[str, float]] = {}
    async with extra_gateway(stack, until, f"nc-{new_id('g')[-6:]}", {"HARMON_GATEWAY_CACHE": "false"}) as plain:
        assert (await readyz_of(plain))["cache"] == "off"
        for mode, gateway in (("without", plain), ("with", second)):
            s = on(gateway, shop.secret_key)
            counts[mode] = {name: await statements_per_request(gateway, lambda c=call: c(s))
                            for name, call in requests.items()}
    print(f"SQL statements per request: {counts}")
    rounded = {name: round(n, 1) for name, n in counts["without"].items()}
    assert rounded == {"secret key": 1, "secret key + shopper token": 2, "mint a shopper token": 2}
    # remembered: none, but for the odd lookup that read PostgreSQL again (the listener's heartbeat late on a busy
    # machine, which bypasses the memory, or a customer record that dropped the customers it remembered)
    assert all(n <= 0.15 for n in counts["with"].values()), counts["with"]
