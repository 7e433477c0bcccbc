"""/healthz (alive), /readyz (database reachable, migrations current, partitions assigned), /metrics."""

import logging
from collections.abc import Awaitable, Callable

import sqlalchemy as sa
from aiohttp import web

from .messaging import ServiceContext
from .migrations import current_revision

log = logging.getLogger("harmon.health")


def readiness_checks(ctx: ServiceContext, head: str | None) -> Callable[[], Awaitable[dict]]:
    async def check() -> dict:
        result: dict = {}
        try:
            async with ctx.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
            result["database"] = "ok"
            current = await current_revision(ctx.engine)
            result["migrations"] = "current" if current == head else f"at {current}, head is {head}"
        except Exception as e:  # readiness reports, it does not raise
            result["database"] = f"unreachable: {type(e).__name__}"
        # every subscription must hold partitions: they join one after another
        per_subscriber = [
            len(consumer.assignment()) if (consumer := getattr(sub, "consumer", None)) is not None else 0
            for sub in ctx.subscribers
        ]
        result["partitions_assigned"] = sum(per_subscriber)
        result["ready"] = (
            result.get("database") == "ok"
            and result.get("migrations") == "current"
            and bool(per_subscriber) and all(per_subscriber)
            and not ctx.extras.get("draining", False)
        )
        return result

    return check


class HealthServer:
    def __init__(self, ctx: ServiceContext, head: str | None):
        self._ctx = ctx
        self._check = readiness_checks(ctx, head)
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
        return web.Response(body=self._ctx.metrics.render(), content_type="text/plain")
