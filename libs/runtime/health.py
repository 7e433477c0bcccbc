"""/healthz (alive), /readyz (database reachable, migrations current, broker usable, partitions assigned and
consumption not paused; with `quiet` for the embedded broker's supervised restart), /metrics."""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from .context import ServiceContext
from .migrations import schema_state
from .metrics import Metrics

log = logging.getLogger("harmon.health")


@dataclass(frozen=True)
class Extra:
    """What a caller's own check adds to readiness (the gateway's reply reader, its requests in flight)."""

    fields: dict = field(default_factory=dict)  # shown in the answer
    ready: bool = True  # False: not ready
    quiet: bool = True  # False: something of the caller's is in flight


def readiness_checks(ctx: ServiceContext, head: str | None, extra: Callable[[], Awaitable[Extra]] | None = None, *,
                     partitions_required: bool = True,
                     known: frozenset[str] | None = None) -> Callable[[], Awaitable[dict]]:
    """`extra`: the caller's own check, run after the shared ones; `partitions_required=False`: a consumer with no
    partitions does not make the service unready (the gateway's customer copy: any instance may hold none);
    `known`: this version's revisions, so a schema a newer version migrated counts as usable (rolling deploys)."""

    async def check() -> dict:
        result: dict = {}
        schema_ok = False
        try:
            current = await ctx.db.revision()
            result["database"] = "ok"
            result["migrations"], schema_ok = schema_state(current, head, known)
        except Exception as e:  # readiness reports, it does not raise
            result["database"] = f"unreachable: {type(e).__name__}"
        result["broker"] = "ok" if ctx.link.up else f"{ctx.link.state}: {ctx.link.lost_reason or 'starting'}"
        # every consumer must hold partitions and be consuming
        per_consumer = [len(c.assignment()) for c in ctx.consumers]
        result["partitions_assigned"] = sum(per_consumer)
        paused = [c.paused_reason for c in ctx.consumers if c.paused_reason is not None]
        if paused:
            result["consumption"] = f"paused: {paused[0]}"
        more = await extra() if extra is not None else Extra()
        result.update(more.fields)
        result["ready"] = (
            result.get("database") == "ok"
            and schema_ok
            and ctx.link.up
            and (not partitions_required or (bool(per_consumer) and all(per_consumer))) and not paused
            and not ctx.extras.get("draining", False)
            and more.ready
        )
        result["quiet"] = result["ready"] and more.quiet and await is_quiet(ctx)
        result["expecting_broker_restart"] = ctx.link.expecting_restart
        result["let_go_of_broker"] = ctx.link.let_go
        return result

    return check


async def is_quiet(ctx: ServiceContext) -> bool:
    """Nothing in flight: outbox drained, nothing parked, every consumer idle at its high-watermark."""
    if any(not c.quiet for c in ctx.consumers):
        return False
    if ctx.parking is not None and ctx.parking.count_blocked:
        return False
    return await ctx.outbox.unsent() == 0


class HealthServer:
    def __init__(self, ctx: ServiceContext, head: str | None, known: frozenset[str] | None = None):
        self._ctx = ctx
        self._check = readiness_checks(ctx, head, known=known)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, port: int) -> int:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._ctx.settings.health_host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": self._ctx.name})

    async def _readyz(self, _: web.Request) -> web.Response:
        result = await self._check()
        return web.json_response(result, status=200 if result["ready"] else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=scrape(self._ctx), content_type="text/plain")


def scrape(ctx: ServiceContext | None, metrics: Metrics | None = None) -> bytes:
    """/metrics: the registry, with what is cheap to read now read now (in memory, no query)."""
    m = metrics or ctx.metrics  # type: ignore[union-attr]
    m.broker_up.set(1 if ctx is not None and ctx.link.up else 0)
    # every assigned partition's lag from its last fetch's high-watermark: a partition the consumer does not
    # fetch (paused while a dependency is down) or has not handled a record of shows too, not only the last batch's
    consumers = ctx.consumers if ctx is not None else []
    for consumer in consumers:
        for tp, lag in consumer.lag().items():
            m.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
    # a partition handed to another instance in a rebalance is that instance's to report: a stale value left here
    # would keep a lag alert firing for a partition nobody lags on
    assigned = {(tp.topic, str(tp.partition)) for consumer in consumers for tp in consumer.assignment()}
    for family in m.consumer_lag.collect():
        for s in family.samples:
            if (s.labels["topic"], s.labels["partition"]) not in assigned:
                m.consumer_lag.remove(s.labels["topic"], s.labels["partition"])
    return m.render()
