"""/healthz (alive), /readyz, /metrics on the API's own port. Public.

/readyz is the shared readiness of every service (libs/runtime/health.py: database, migrations, broker,
consumption not paused, `quiet`, the broker-restart flags) with the gateway's own part: its reply reader
assigned, no request waiting for a reply or past the hold. Its customer copy's consumer may hold no partitions
(one of several instances), so it does not have to.
"""

from aiohttp import web

from libs.runtime.health import Extra, readiness_checks, scrape

from ..correlator import CORRELATOR
from ..hold import HOLD
from ..cache import CACHE
from ..state import METRICS, SERVICE

HEAD = web.AppKey("migrations_head", str)
KNOWN = web.AppKey("migrations_known", frozenset)  # this version's revisions: a newer schema is usable too


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": "gateway"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    ctx = app.get(SERVICE)
    if ctx is None or ctx.extras.get("draining", False):
        # answered without touching the database: the pool may already be closing
        return web.json_response({"ready": False, "draining": ctx is not None, "quiet": False}, status=503)

    async def gateway_part() -> Extra:
        correlator = app[CORRELATOR]
        return Extra(
            fields={"reply_subscriber": "assigned" if correlator.ready else "not assigned",
                    "customers_partitions_assigned": sum(len(c.assignment()) for c in ctx.consumers),
                    "cache": app[CACHE].status},
            ready=correlator.ready,
            quiet=app[HOLD].admitted == 0 and correlator.in_flight == 0)

    result = await readiness_checks(ctx, app[HEAD], gateway_part, partitions_required=False, known=app[KNOWN])()
    return web.json_response(result, status=200 if result["ready"] else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=scrape(request.app.get(SERVICE), request.app[METRICS]), content_type="text/plain")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
