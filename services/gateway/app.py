"""`create_app(settings)`: the gateway's aiohttp application — middlewares in the order of checks, routes, resources.

Middlewares, outermost first: request context (Request-Id, one log line) → CORS (preflights; headers on
publishable routes) → errors (one error shape) → auth (failed-auth guard 429 → API key 401 → per-key rate
limit 429 → key kind 403 → scope 403 → shopper token 401) → body (413 / 415 / 400) → idempotency (409)
→ the route. Resources open and close with the app through cleanup contexts.
"""

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import sqlalchemy as sa
from aiohttp import web
from prometheus_client import Counter, Histogram

from libs.contracts import topics
from libs.contracts.ids import REQUEST, new_id
from libs.runtime.broker import BrokerLink
from libs.runtime.db import make_engine, make_lookup_sessionmaker, make_sessionmaker
from libs.runtime.logs import request_id_var
from libs.runtime.context import ServiceContext
from libs.runtime.database import Database
from libs.runtime.subscriptions import open_subscriptions, start_subscriptions, stop_consuming
from libs.runtime.metrics import Metrics
from libs.runtime.migrations import head_revision, known_revisions
from libs.runtime.outbox import Outbox

from . import customers
from .auth import TOKENS, ShopperTokens, auth_middleware
from .cache import CACHE, LISTENER, Cache, Listener, listener_name
from .config import SETTINGS, Settings
from .correlator import CORRELATOR, Correlator
from .cors import cors_middleware
from .errors import INVALID_REQUEST, ApiError, body_invalid, error_middleware
from .hold import HOLD, Hold
from .idempotency import IDEMPOTENCY_STORE, IdempotencyStore, idempotency_middleware
from .ratelimit import RATE_LIMITER, Limits, RateLimiter
from .routes import (carts, checkout, credit, docs, events, expected_version, health, invoices, orders, parse_body,
                     products, shopper_tokens, webhooks)
from .state import (BODY, CALLER, ENGINE, EXPECTED_VERSION, JSON_BODY, LOOKUPS, METRICS, REQUEST_ID_HEADER,
                    SERVICE, SESSIONMAKER, endpoint_of)

log = logging.getLogger("harmon.gateway")
access_log = logging.getLogger("harmon.gateway.access")

MIGRATIONS = Path(__file__).parent / "migrations"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class HttpMetrics:
    def __init__(self, metrics: Metrics):
        self.requests = Counter("harmon_http_requests", "HTTP requests answered", ["method", "route", "status"],
                                registry=metrics.registry)
        self.seconds = Histogram("harmon_http_request_seconds", "HTTP request latency", ["route"],
                                 registry=metrics.registry)
        self.statements = Counter("harmon_gateway_db_statements", "SQL statements sent through the gateway's pool",
                                  registry=metrics.registry)


HTTP_METRICS = web.AppKey("http_metrics", HttpMetrics)


def request_context_middleware() -> web.middleware:
    """Request id (a client's sane `X-Request-Id`, else `req_…`) on the response and every log line; one INFO line."""

    @web.middleware
    async def request_context(request: web.Request, handler) -> web.StreamResponse:
        started = time.perf_counter()
        client_id = request.headers.get("X-Request-Id", "")
        request_id = client_id if _CLIENT_REQUEST_ID.match(client_id) else new_id(REQUEST)
        token = request_id_var.set(request_id)
        status = 500
        try:
            response = await handler(request)
            status = response.status
            response.headers[REQUEST_ID_HEADER] = request_id
            return response
        finally:
            elapsed = time.perf_counter() - started
            caller = request.get(CALLER)
            access_log.info("%s %s %d %.1fms%s", request.method, request.path, status, elapsed * 1000,
                            f" key={caller.hint}" if caller else "",
                            extra={"tenant_id": caller.tenant_id, "livemode": caller.livemode} if caller else None)
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            m = request.app[HTTP_METRICS]
            m.requests.labels(method=request.method, route=route, status=str(status)).inc()
            m.seconds.labels(route=route).observe(elapsed)
            request_id_var.reset(token)

    return request_context


def body_middleware(max_bytes: int) -> web.middleware:
    """Size (413), media type (415), JSON and parameters (400), cart version: nothing is stored before these pass."""

    too_large = ApiError(413, INVALID_REQUEST, "body_too_large", f"the request body is over {max_bytes} bytes")

    @web.middleware
    async def body(request: web.Request, handler) -> web.StreamResponse:
        endpoint = endpoint_of(request)
        if endpoint is None:
            return await handler(request)
        if endpoint.body is not None:
            if request.content_length is not None and request.content_length > max_bytes:
                raise too_large
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise too_large from None
            except (web.RequestPayloadError, ConnectionError):
                # the client's bytes (bad gzip, a body cut short by a disconnect), not a dependency of ours
                raise body_invalid() from None
            content_type = request.content_type if "Content-Type" in request.headers else None
            request[BODY], request[JSON_BODY] = parse_body(endpoint.body, raw, content_type)
        if endpoint.versioned:
            version = expected_version(request.headers.get("If-Match"), getattr(request.get(BODY), "version", None))
            if version is not None:
                request[EXPECTED_VERSION] = version
        return await handler(request)

    return body


async def database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    engine = make_engine(settings.database_url, settings.db_pool_size)
    app[ENGINE] = engine
    app[SESSIONMAKER] = make_sessionmaker(engine)
    app[LOOKUPS] = make_lookup_sessionmaker(engine)
    statements = app[HTTP_METRICS].statements
    sa.event.listen(engine.sync_engine, "before_cursor_execute", lambda *_: statements.inc())
    app[LISTENER] = Listener(app[CACHE], settings.database_url, listener_name(settings.instance_id))
    await app[LISTENER].start()  # until it listens, every lookup reads PostgreSQL
    app[GATEWAY_DB] = Database(settings.database_url, max_size=settings.db_pool_size)
    app[IDEMPOTENCY_STORE] = IdempotencyStore(app[GATEWAY_DB], settings.idempotency_lease_s, settings.instance_id,
                                              app[METRICS].registry)
    try:
        released = await app[IDEMPOTENCY_STORE].release_leases_of_previous_run()
        if released:
            log.info("released %d idempotency lease(s) this instance (%s) held before it restarted", released,
                     settings.instance_id)
    except Exception as e:  # they lapse on their own; readiness reports the database
        log.warning("could not release this instance's earlier idempotency leases (%s)", type(e).__name__)
    yield
    await app[LISTENER].stop()
    await app[GATEWAY_DB].close()
    await engine.dispose()


GATEWAY_DB = web.AppKey("gateway_db", Database)  # asyncpg, scoped by row-level security: idempotency records


class _ReleaseHoldWhenBack:
    """After a planned broker restart, held requests go on once replies can be read again."""

    def __init__(self, hold: Hold, correlator: Correlator):
        self._hold, self._correlator = hold, correlator
        self._task: asyncio.Task | None = None

    async def on_broker_lost(self, *, commit: bool) -> None:
        pass

    async def on_broker_back(self) -> None:
        async def release() -> None:
            for _ in range(500):  # 10 s at most; the hold ends by itself anyway
                if self._correlator.ready:
                    break
                await asyncio.sleep(0.02)
            self._hold.release("the broker is back")
        if self._hold.holding:
            self._task = asyncio.create_task(release())


async def messaging(app: web.Application) -> AsyncIterator[None]:
    """Broker link, the customers consumer and the correlator's reply consumer, positioned before any request."""
    settings = app[SETTINGS]
    link = BrokerLink(settings, client_id=f"gateway-{settings.instance_id}", topics=topics.all_topic_names(),
                      extra_topics={topics.gateway_replies(settings.instance_id): 1})
    db = Database(settings.database_url, max_size=4)
    ctx = ServiceContext(name="gateway", settings=settings, link=link, db=db, outbox=Outbox(link, db),
                         metrics=app[METRICS], unit_of_work=customers.GatewayUnitOfWork)
    customers.register(ctx)
    open_subscriptions(ctx)
    correlator = Correlator(ctx, settings.request_timeout_s)
    link.listen(_ReleaseHoldWhenBack(app[HOLD], correlator))
    await link.start()
    try:
        await start_subscriptions(ctx)
        await correlator.start()
    except BaseException:
        await stop_consuming(ctx)
        await link.stop()
        raise
    app[SERVICE] = ctx
    app[CORRELATOR] = correlator
    log.info("replies on %s", correlator.reply_topic)
    yield
    await stop_consuming(ctx)  # waits for customer upserts in flight
    await correlator.stop()
    await link.stop()
    await db.close()


async def housekeeping(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]

    async def prune_forever() -> None:
        while True:
            try:
                pruned = await app[IDEMPOTENCY_STORE].prune(settings.idempotency_retention_h)
                if pruned:
                    log.info("pruned %d idempotency record(s)", pruned)
            except Exception:
                log.warning("could not prune idempotency records", exc_info=True)
            await asyncio.sleep(3600)

    task = asyncio.create_task(prune_forever())
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def create_app(settings: Settings) -> web.Application:
    hold = Hold(settings.hold_max_s)
    app = web.Application(
        middlewares=[
            request_context_middleware(), hold.middleware(), cors_middleware(settings.public_origin), error_middleware(),
            auth_middleware(),
            body_middleware(settings.max_body_bytes), idempotency_middleware(),
        ],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[TOKENS] = ShopperTokens(
        settings.signing_secret.get_secret_value(), settings.issuer, settings.token_ttl_s,
        previous_secrets=[s.get_secret_value() for s in settings.previous_signing_secrets],
        tenant_max_lifetime_s=settings.tenant_token_max_lifetime_s)
    app[METRICS] = Metrics.create()
    app[METRICS].identify("gateway", settings.instance_id)
    app[HTTP_METRICS] = HttpMetrics(app[METRICS])
    app[RATE_LIMITER] = RateLimiter(
        settings.rate_limit_storage,
        Limits(settings.rate_limit, settings.mint_rate_limit, settings.failed_auth_rate_limit),
        settings.forwarded_hops, app[METRICS])
    app[CACHE] = Cache(enabled=settings.cache, metrics=app[METRICS])
    app[HOLD] = hold
    app[health.HEAD] = head_revision(MIGRATIONS)
    app[health.KNOWN] = known_revisions(MIGRATIONS)
    app.cleanup_ctx.extend([database, messaging, housekeeping])
    for module in (health, shopper_tokens, products, carts, checkout, orders, invoices, credit, webhooks, events):
        module.add_routes(app)
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith("/v1/") and not hasattr(route.handler, "endpoint"):
            raise RuntimeError(f"{route.method} {path} declares no @endpoint: it would be public")
    docs.add_routes(app)  # last: /openapi.json describes the routes above
    return app
