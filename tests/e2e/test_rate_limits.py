"""Rate limits on the real stack: a tenant's own per-key limit, the stricter minting limit, the failed-auth
guard (on a second gateway started with a low limit), Retry-After that tells the truth, nothing written on 429.

The session stack's deployment limits are far above what the suite sends (tests/conftest.py TEST_ENV); these
tests give their tenant low limits with the same admin call `harmon tenants update` makes."""

import asyncio
import re
import signal
import sys
import time

import aiohttp
import pytest

from libs.contracts.ids import new_id
from libs.stack.demo import set_tenant_rate_limits
from libs.stack.processes import free_port

from .storefront import Reply

pytestmark = pytest.mark.e2e


def assert_rate_limited(reply, window_s: int) -> int:
    assert reply.status == 429, (reply.status, reply.body)
    assert reply.error["type"] == "rate_limit_error" and reply.error["code"] == "rate_limited", reply.body
    assert reply.error["request_id"] == reply.headers["Request-Id"]
    retry_after = reply.headers["Retry-After"]
    assert re.fullmatch(r"\d+", retry_after) and 1 <= int(retry_after) <= window_s, retry_after
    return int(retry_after)


def refused_count(metrics: str, reason: str) -> float:
    found = re.search(rf'harmon_rate_limited_total\{{reason="{reason}"\}} (\S+)', metrics)
    return float(found.group(1)) if found else 0.0


async def metrics_of(http: aiohttp.ClientSession, base_url: str) -> str:
    async with http.get(f"{base_url}/metrics") as r:
        return await r.text()


async def test_a_key_over_its_tenants_limit_gets_429_then_recovers_and_nothing_is_written(
        stack, store, shop, new_tenant, http, until):
    token = await store.token(shop.big)  # before the limit is lowered
    await set_tenant_rate_limits(stack.dsns["gateway"], shop.tenant_id, "5/10 seconds", None)
    before = refused_count(await metrics_of(http, stack.base_url), "key")
    started = time.monotonic()
    for _ in range(5):
        r = await store.call("GET", "/v1/products?limit=1")
        assert r.status == 200, r.body
    refused = await store.call("GET", "/v1/products?limit=1")
    retry_after = assert_rate_limited(refused, 10)
    assert retry_after <= 10 - int(time.monotonic() - started) + 1  # the wait until the oldest request leaves

    # refused before anything runs: no cart, no idempotency record
    key = new_id("rl")
    cart = await store.call("POST", "/v1/carts", json={}, token=token, headers={"Idempotency-Key": key})
    assert_rate_limited(cart, 10)
    # the tenant's limit, per key: its publishable key and another tenant's key are not held back
    assert (await store.call("GET", "/v1/products?limit=1", key=shop.publishable_key)).status == 200
    other = await new_tenant()
    assert (await store.call("GET", "/v1/products?limit=1", key=other.secret_key)).status == 200
    assert refused_count(await metrics_of(http, stack.base_url), "key") >= before + 2

    async def passes():
        r = await store.call("POST", "/v1/carts", json={}, token=token, headers={"Idempotency-Key": key})
        return r if r.status != 429 else None
    created = await until(passes, timeout=retry_after + 5, interval=0.25, message="the key's window moved on")
    assert time.monotonic() - started >= 9  # not before the window: 5 in any 10 s
    assert created.status == 201, created.body
    assert "Idempotent-Replayed" not in created.headers  # the 429 stored nothing under this key


async def test_minting_shopper_tokens_has_its_own_stricter_limit(stack, store, shop, http):
    await set_tenant_rate_limits(stack.dsns["gateway"], shop.tenant_id, "1000/second", "2/minute")
    before = refused_count(await metrics_of(http, stack.base_url), "token_mint")
    for _ in range(2):
        await store.token(shop.big)
    refused = await store.call("POST", "/v1/shopper_tokens", json={"customer_id": shop.big})
    assert 50 <= assert_rate_limited(refused, 60)
    assert (await store.call("GET", "/v1/products?limit=1")).status == 200  # the key itself is within its limit
    assert refused_count(await metrics_of(http, stack.base_url), "token_mint") == before + 1
    # back to the deployment's limits: the change holds from the next request on, no restart
    await set_tenant_rate_limits(stack.dsns["gateway"], shop.tenant_id, None, None)
    assert (await store.call("POST", "/v1/shopper_tokens", json={"customer_id": shop.big})).status == 201


async def test_failed_authentication_closes_the_address_before_any_key_is_checked(stack, shop, until, tmp_path):
    port = free_port()
    env = {**stack.service_env("gateway"), "HARMON_INSTANCE_ID": f"rl-{new_id('g')[-8:]}",
           "HARMON_GATEWAY_PORT": str(port), "HARMON_GATEWAY_FAILED_AUTH_RATE_LIMIT": "3/10 seconds"}
    log = open(tmp_path / "gateway-2.log", "wb")
    second = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.gateway", env=env,
                                                  cwd=stack.data_dir, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    started_up = False
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            async def ready():
                try:
                    async with http.get(f"{base}/readyz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False
            await until(ready, timeout=60, interval=0.1, message="second gateway ready")
            started_up = True

            async def get(key: str | None):
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                async with http.get(f"{base}/v1/products?limit=1", headers=headers) as r:
                    return Reply(r.status, await r.json(content_type=None), dict(r.headers))

            good = shop.secret_key
            assert (await get(good)).status == 200  # a good key is not a failure
            started = time.monotonic()
            wrong = good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB")
            codes = [(await get(k)).error.get("code") for k in (wrong, None, "hk_test_sec_nope")]
            assert codes == ["api_key_invalid", "api_key_missing", "api_key_invalid"]
            retry_after = assert_rate_limited(await get(wrong), 10)
            # the right key from this address is refused too, so a guess that hits cannot be told apart
            assert_rate_limited(await get(good), 10)
            assert refused_count(await metrics_of(http, base), "failed_auth") == 2
            # memory storage is per instance: the first gateway has not seen these failures
            async with http.get(f"{stack.base_url}/v1/products?limit=1",
                                headers={"Authorization": f"Bearer {good}"}) as r:
                assert r.status == 200

            async def open_again():
                return (await get(good)).status == 200
            await until(open_again, timeout=retry_after + 5, interval=0.25, message="the address's window moved on")
            assert time.monotonic() - started >= 9
    finally:
        second.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(second.wait(), 30)
        log.close()
        assert code == 0 or not started_up, f"second gateway exited {code}: {tmp_path / 'gateway-2.log'}"
