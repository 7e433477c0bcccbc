"""/healthz (alive), /readyz (database reachable, migrations current, reply subscriber assigned), /metrics. Public."""

import sqlalchemy as sa
from aiohttp import web

from libs.runtime.migrations import current_revision

from ..state import CORRELATOR, DRAINING, ENGINE, HOLD, METRICS, SERVICE

HEAD = web.AppKey("migrations_head", str)


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": "gateway"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    if app[DRAINING]["draining"]:
        # answered without touching the database: the pool may already be closing
        return web.json_response({"ready": False, "draining": True, "quiet": False}, status=503)
    result: dict = {}
    try:
        async with app[ENGINE].connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        result["database"] = "ok"
        current = await current_revision(app[ENGINE])
        result["migrations"] = "current" if current == app[HEAD] else f"at {current}, head is {app[HEAD]}"
    except Exception as e:  # readiness reports, it does not raise
        result["database"] = f"unreachable: {type(e).__name__}"
    correlator = app.get(CORRELATOR)
    result["reply_subscriber"] = "assigned" if correlator is not None and correlator.ready else "not assigned"
    service = app.get(SERVICE)
    result["broker"] = "ok" if service is not None and service.link.up else (
        f"{service.link.state}: {service.link.lost_reason}" if service is not None else "starting")
    result["customers_partitions_assigned"] = sum(len(c.assignment()) for c in (service.consumers if service else []))
    result["ready"] = (
        result.get("database") == "ok" and result.get("migrations") == "current" and result["broker"] == "ok"
        and result["reply_subscriber"] == "assigned" and not app[DRAINING]["draining"]
    )
    # quiet: nothing in flight (the embedded broker's supervised restart waits for it)
    result["quiet"] = (result["ready"] and app[HOLD].admitted == 0 and correlator.in_flight == 0
                       and all(c.quiet for c in service.consumers))
    result["expecting_broker_restart"] = service.link.expecting_restart
    result["let_go_of_broker"] = service.link.let_go
    return web.json_response(result, status=200 if result["ready"] else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), content_type="text/plain")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
