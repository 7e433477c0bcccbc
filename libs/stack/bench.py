"""`harmon bench`: N concurrent shoppers against a running stack, each looping cart → 2 lines → price → checkout.

Bench shoppers are customers it publishes itself on erp.* (as the ERP would) with a limit large
enough never to refuse, so every checkout is a real order. Reports orders/s, errors,
p50/p90/p99 per step, and the CPU each part of the stack (and the bench itself) spent per order at
each concurrency level — on one machine, that is what limits the figure.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt

from libs.contracts.erp import CreditLimitUpsert, CustomerUpsert, PriceUpsert, ProductUpsert
from libs.contracts.ids import CUSTOMER, new_id

from .cpu import CpuMeter
from .demo import ErpPublisher, NotYet, _poll, set_tenant_rate_limits
from .supervisor import running_stack_dsn

STEPS = ("cart", "line_1", "line_2", "price", "checkout")
BENCH_SKUS = (("BENCH-RICE", {"CASE": 12}, 1_250), ("BENCH-OIL", {}, 899))
UNLIMITED = 10**15
BENCH_RATE_LIMIT = "1000000/second"


@dataclass
class Level:
    shoppers: int
    seconds: float
    orders: int = 0
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per part of the stack

    def percentile(self, step: str, q: float) -> float:
        xs = sorted(self.latencies[step])
        if not xs:
            return float("nan")
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000

    def summary(self) -> dict[str, Any]:
        return {
            "shoppers": self.shoppers, "seconds": round(self.seconds, 2), "orders": self.orders,
            "orders_per_s": round(self.orders / self.seconds, 1) if self.seconds else 0.0,
            "errors": dict(self.errors),
            "ms": {s: {"p50": round(self.percentile(s, 0.5), 1), "p90": round(self.percentile(s, 0.9), 1),
                       "p99": round(self.percentile(s, 0.99), 1), "n": len(self.latencies[s])} for s in STEPS},
            "cpu_ms_per_order": {part: round(s * 1000 / self.orders, 1)
                                 for part, s in sorted(self.cpu_s.items(), key=lambda kv: -kv[1])} if self.orders else {},
            "cores_busy": round(sum(self.cpu_s.values()) / self.seconds, 2) if self.seconds else 0.0,
        }


async def prepare(http: aiohttp.ClientSession, creds: dict[str, Any], bootstrap: str, shoppers: int) -> list[str]:
    """Publish bench customers and products for the demo tenant; return one shopper token each (minted once)."""
    tenant = creds["tenant_id"]
    auth = {"Authorization": f"Bearer {creds['secret_key']}"}
    customers = [new_id(CUSTOMER) for _ in range(shoppers)]
    async with ErpPublisher(bootstrap) as erp:
        for sku, units, price in BENCH_SKUS:
            await erp.publish(None, ProductUpsert(sku=sku, name=sku.title(), base_uom="EA", units=units), tenant)
            await erp.publish(None, PriceUpsert(price_id=f"{sku}-list", sku=sku, unit_amount=price), tenant)
        for i, cid in enumerate(customers):
            await erp.publish(None, CustomerUpsert(customer_id=cid, name=f"Bench shopper {i}", terms="net_30"), tenant)
            await erp.publish(None, CreditLimitUpsert(customer_id=cid, limit=UNLIMITED), tenant)

    async def token(cid: str) -> str:
        async with http.post("/v1/shopper_tokens", json={"customer_id": cid}, headers=auth) as r:
            if r.status != 201:
                raise NotYet(f"{r.status}")
            return (await r.json())["token"]

    tokens = [await _poll(f"bench shopper {cid}", lambda c=cid: token(c)) for cid in customers]
    # the last shopper's first checkout proves cart, pricing and credit have the records too
    await _poll("bench data visible to every service", lambda: _one_checkout(http, auth, tokens[-1], None))
    return tokens


async def _one_checkout(http: aiohttp.ClientSession, auth: dict, token: str,
                        level: Callable[[], Level] | None) -> None:
    """One cart to order; each step is recorded in the `level()` current when it ends (None: not recorded)."""
    h = {**auth, "X-Storefront-Shopper-Token": token}

    async def step(name: str, method: str, path: str, body: dict, ok: int, extra: dict | None = None) -> dict:
        t0 = time.perf_counter()
        async with http.request(method, path, json=body, headers={**h, **(extra or {})}) as r:
            payload = await r.json(content_type=None)
            if r.status != ok:
                if r.status == 401 and payload.get("error", {}).get("code") == "shopper_token_expired":
                    raise _TokenExpired
                if level is None:
                    raise NotYet(f"{name}: {r.status} {payload}")
                level().errors[f"{name} {r.status} {payload.get('error', {}).get('code')}"] += 1
                raise _StepFailed
        if level is not None:
            level().latencies[name].append(time.perf_counter() - t0)
        return payload

    cart = await step("cart", "POST", "/v1/carts", {}, 201)
    path = f"/v1/carts/{cart['id']}"
    await step("line_1", "POST", f"{path}/lines", {"sku": "BENCH-RICE", "order_uom": "CASE", "order_quantity": 1}, 200)
    await step("line_2", "POST", f"{path}/lines", {"sku": "BENCH-OIL", "quantity": 2}, 200)
    await step("price", "POST", f"{path}/price", {}, 200)
    await step("checkout", "POST", "/v1/checkout", {"cart_id": cart["id"]}, 201, {"Idempotency-Key": new_id("bench")})
    if level is not None:
        level().orders += 1


class _StepFailed(Exception):
    pass


class _TokenExpired(Exception):
    """The shopper token outlived its TTL (a run longer than HARMON_GATEWAY_TOKEN_TTL_S): mint another."""


async def _renewed(http: aiohttp.ClientSession, auth: dict, token: str) -> str:
    customer = jwt.decode(token, options={"verify_signature": False})["sub"]  # our own token, to learn whose
    async with http.post("/v1/shopper_tokens", json={"customer_id": customer}, headers=auth) as r:
        return (await r.json())["token"] if r.status == 201 else token


async def shop(http: aiohttp.ClientSession, auth: dict, token: str, level: Callable[[], Level],
               done: Callable[[], bool]) -> None:
    """One shopper's checkouts, one after another until `done()`; each result counts in the `level()` it ends in."""
    while not done():
        try:
            await _one_checkout(http, auth, token, level)
        except _StepFailed:
            pass
        except _TokenExpired:
            renewed = await _renewed(http, auth, token)
            if renewed == token:  # not minted: an error, so a run counted in checkouts still ends
                level().errors["shopper token not renewed"] += 1
            token = renewed
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            level().errors[type(e).__name__] += 1


def attempts(level: Level) -> int:
    """Checkouts tried so far: each cycle ends in an order or in exactly one counted error."""
    return level.orders + sum(level.errors.values())


def level_done(level: Level, now: float, stop_at: float, checkouts: int | None) -> bool:
    """Whether a shopper should start no further cycle: `checkouts` tried (when set), else the time is up."""
    if checkouts is not None:
        return attempts(level) >= checkouts
    return now >= stop_at


async def run_level(http: aiohttp.ClientSession, auth: dict, tokens: list[str], shoppers: int, duration: float,
                    meter: CpuMeter | None = None, checkouts: int | None = None) -> Level:
    """`shoppers` shoppers for `duration` seconds, or (`checkouts` set) until that many checkouts were tried:
    cycles in flight then finish, so a level with several shoppers may end a few above it."""
    level = Level(shoppers=shoppers, seconds=duration)
    before = meter.snapshot() if meter else {}
    stop_at = time.monotonic() + duration

    started = time.monotonic()
    await asyncio.gather(*(shop(http, auth, t, lambda: level,
                                lambda: level_done(level, time.monotonic(), stop_at, checkouts))
                           for t in tokens[:shoppers]))
    level.seconds = time.monotonic() - started
    if meter:
        level.cpu_s = meter.since(before, meter.snapshot())
    return level


def format_level(s: dict[str, Any]) -> str:
    rows = [f"{s['shoppers']:>3} shoppers: {s['orders']} orders in {s['seconds']} s = {s['orders_per_s']} orders/s, "
            f"errors {sum(s['errors'].values())} {s['errors'] or ''}"]
    for step in STEPS:
        m = s["ms"][step]
        rows.append(f"      {step:<9} p50 {m['p50']:>7.1f} ms   p90 {m['p90']:>7.1f} ms   p99 {m['p99']:>7.1f} ms   (n={m['n']})")
    if s["cpu_ms_per_order"]:
        parts = ", ".join(f"{part} {ms:.0f}" for part, ms in s["cpu_ms_per_order"].items())
        rows.append(f"      CPU per order: {sum(s['cpu_ms_per_order'].values()):.0f} ms ({parts}); "
                    f"{s['cores_busy']} cores busy")
    return "\n".join(rows)


async def run_bench(data_dir: Path, levels: list[int], duration: float, output: Path | None,
                    checkouts: int | None = None) -> list[dict[str, Any]]:
    """Each level for `duration` seconds, or (`checkouts` set) until that many checkouts were tried."""
    creds = json.loads((data_dir / "credentials.json").read_text())
    bootstrap = creds["kafka_bootstrap"]
    auth = {"Authorization": f"Bearer {creds['secret_key']}"}
    connector = aiohttp.TCPConnector(limit=max(levels) * 2)
    timeout = aiohttp.ClientTimeout(total=60)
    results = []
    meter = CpuMeter(data_dir)
    if not meter.available:
        print("harmon bench: no CPU figures (needs Linux /proc and the stack's stack.lock)", flush=True)
    # the bench measures the stack, not the rate limiter: its tenant's limits are raised while it runs
    gateway_dsn = running_stack_dsn(data_dir, "gateway")
    before = await set_tenant_rate_limits(gateway_dsn, creds["tenant_id"], BENCH_RATE_LIMIT, BENCH_RATE_LIMIT)
    try:
        async with aiohttp.ClientSession(creds["base_url"], connector=connector, timeout=timeout) as http:
            tokens = await prepare(http, creds, bootstrap, max(levels))
            await run_level(http, auth, tokens, min(max(levels), 8), 2.0)  # warm-up: connection pools on every hop
            for n in levels:
                summary = (await run_level(http, auth, tokens, n, duration, meter, checkouts)).summary()
                print(format_level(summary), flush=True)
                results.append(summary)
    finally:
        await set_tenant_rate_limits(gateway_dsn, creds["tenant_id"], *before)
    if output:
        plan = {"checkouts": checkouts} if checkouts is not None else {"duration_s": duration}
        output.write_text(json.dumps({**plan, "levels": results}, indent=2) + "\n")
    return results


