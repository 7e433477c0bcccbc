"""Soak of the embedded broker: a fresh stack as `harmon dev` runs it, steady checkout load for N minutes,
and every interval the broker's resident memory and CPU, the orders, errors and checkout p50.

    python benchmarks/broker_soak.py --minutes 30 --shoppers 8 --json soak.json              # no bound
    python benchmarks/broker_soak.py --minutes 30 --shoppers 8 --bound-mib 256 --json soak.json

The Tansu memory engine keeps every record, so without a bound its memory and CPU grow with the
messages sent; `--bound-mib` turns on harmon dev's planned restart (only when every service reports
itself quiet). A script, not a test: docs/benchmarks.md has the figures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from libs.stack.bench import BENCH_RATE_LIMIT, Level, prepare, run_level, shop
from libs.stack.cpu import CpuMeter
from libs.stack.demo import load_demo, set_tenant_rate_limits
from libs.stack.processes import resident_bytes
from libs.stack.supervision import MIB, BrokerBound
from libs.stack.supervisor import DEFAULT_PARTITIONS, Stack

COLUMNS = ("t_s", "broker_rss_mib", "broker_cpu_pct", "orders", "errors", "checkout_p50_ms", "cores_busy",
           "broker_restarts")


def row(sample: dict[str, Any]) -> str:
    rss = sample["broker_rss_mib"]
    return (f"{sample['t_s']:>6.0f} {'-' if rss is None else f'{rss:.1f}':>9} {sample['broker_cpu_pct']:>8.0f} "
            f"{sample['orders']:>7} {sample['errors']:>6} {sample['checkout_p50_ms']:>9.1f} "
            f"{sample['cores_busy']:>6.2f} {sample['broker_restarts']:>8}")


HEADER = f"{'t s':>6} {'RSS MiB':>9} {'CPU %':>8} {'orders':>7} {'errors':>6} {'p50 ms':>9} {'cores':>6} {'restarts':>8}"


async def kill_broker_at(stack: Stack, started: float, at: list[float]) -> None:
    """kill -9 the broker at each of these seconds into the load (the supervisor restarts it)."""
    for t in sorted(at):
        await asyncio.sleep(max(0.0, started + t - time.monotonic()))
        if (pid := stack.pid("broker")) is not None:
            os.kill(pid, signal.SIGKILL)
            print(f"{time.monotonic() - started:>6.0f} kill -9 broker (pid {pid})", flush=True)


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="harmon-soak-", dir="/tmp"))
    data_dir.chmod(0o711)  # as root PostgreSQL runs as nobody, which must get in
    bound = BrokerBound(max_rss_mib=args.bound_mib) if args.bound_mib else None
    stack = Stack(data_dir, partitions=args.partitions, supervise=True, broker_bound=bound, database_url="")
    samples: list[dict[str, Any]] = []
    try:
        await stack.start()
        creds = await load_demo(stack)
        auth = {"Authorization": f"Bearer {creds['secret_key']}"}
        before_limits = await set_tenant_rate_limits(stack.dsns["gateway"], creds["tenant_id"], BENCH_RATE_LIMIT,
                                                     BENCH_RATE_LIMIT)
        meter = CpuMeter(data_dir)
        connector = aiohttp.TCPConnector(limit=args.shoppers * 2)
        async with aiohttp.ClientSession(creds["base_url"], connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=60)) as http:
            tokens = await prepare(http, creds, stack.bootstrap, args.shoppers)
            await run_level(http, auth, tokens, min(args.shoppers, 8), 2.0)  # warm-up, as harmon bench does
            current = Level(shoppers=args.shoppers, seconds=args.interval)
            started = time.monotonic()
            end = started + args.minutes * 60
            shoppers = [asyncio.create_task(shop(http, auth, t, lambda: current, lambda: time.monotonic() >= end))
                        for t in tokens]
            print(HEADER, flush=True)
            snap, restarts = meter.snapshot(), 0
            chaos = asyncio.create_task(kill_broker_at(stack, started, args.kill_broker_at))
            try:
                while time.monotonic() < end:
                    t0 = time.monotonic()
                    await asyncio.sleep(min(args.interval, end - t0))
                    level, current = current, Level(shoppers=args.shoppers, seconds=args.interval)
                    now_snap, elapsed = meter.snapshot(), time.monotonic() - t0
                    cpu = CpuMeter.since(snap, now_snap)
                    snap = now_snap
                    total = stack.planned_broker_restarts + stack.restarts.get("broker", 0)
                    rss = resident_bytes(stack.pid("broker"))
                    sample = {
                        "t_s": round(time.monotonic() - started, 1),
                        "broker_rss_mib": None if rss is None else round(rss / MIB, 1),  # None: not running
                        "broker_cpu_pct": round(100 * cpu.get("broker", 0.0) / elapsed, 1),
                        "orders": level.orders,
                        "errors": sum(level.errors.values()),
                        "checkout_p50_ms": round(level.percentile("checkout", 0.5), 1),
                        "cores_busy": round(sum(cpu.values()) / elapsed, 2),
                        "broker_restarts": total - restarts,
                        "error_kinds": dict(level.errors),
                    }
                    restarts = total
                    samples.append(sample)
                    print(row(sample), flush=True)
            finally:
                chaos.cancel()
                await asyncio.gather(*shoppers, chaos, return_exceptions=True)
        await set_tenant_rate_limits(stack.dsns["gateway"], creds["tenant_id"], *before_limits)
    finally:
        await stack.stop()
        if not args.data_dir and not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return {"minutes": args.minutes, "shoppers": args.shoppers, "interval_s": args.interval,
            "partitions": args.partitions, "bound_mib": args.bound_mib, "kill_broker_at": args.kill_broker_at,
            "columns": list(COLUMNS), "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to load (default 30)")
    parser.add_argument("--shoppers", type=int, default=8, help="concurrent bench shoppers (default 8)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds per sample (default 30)")
    parser.add_argument("--bound-mib", type=int, default=0,
                        help="harmon dev's broker bound: planned restart over this RSS when quiet (default 0: off)")
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS)
    parser.add_argument("--kill-broker-at", type=float, action="append", default=[], metavar="S",
                        help="kill -9 the broker S seconds into the load (repeatable): how the stack recovers")
    parser.add_argument("--data-dir", help="the stack's data dir (default: a new one under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the new data dir (logs) after the run")
    parser.add_argument("--json", help="write the samples here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    result = asyncio.run(soak(args))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"samples written to {args.json}")


if __name__ == "__main__":
    main()
