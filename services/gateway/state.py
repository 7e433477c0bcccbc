"""Typed keys of what the app holds (web.AppKey) and what one request carries (web.RequestKey); route requirements."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from aiohttp import web
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

if TYPE_CHECKING:
    from libs.runtime.context import ServiceContext
    from libs.runtime.metrics import Metrics

    from .auth import Caller, Shopper, ShopperTokens
    from .config import Settings
    from .correlator import Correlator
    from .hold import Hold
    from .idempotency import IdempotencyStore
    from .ratelimit import RateLimiter

SETTINGS: web.AppKey["Settings"] = web.AppKey("settings")
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONMAKER = web.AppKey("sessionmaker", async_sessionmaker[AsyncSession])
LOOKUPS = web.AppKey("lookups", async_sessionmaker[AsyncSession])  # autocommit: keys, signing keys, customers
TOKENS: web.AppKey["ShopperTokens"] = web.AppKey("tokens")
METRICS: web.AppKey["Metrics"] = web.AppKey("metrics")
SERVICE: web.AppKey["ServiceContext"] = web.AppKey("service")
CORRELATOR: web.AppKey["Correlator"] = web.AppKey("correlator")
IDEMPOTENCY: web.AppKey["IdempotencyStore"] = web.AppKey("idempotency")
RATE_LIMITER: web.AppKey["RateLimiter"] = web.AppKey("rate_limiter")
HOLD: web.AppKey["Hold"] = web.AppKey("hold")  # new requests wait while the embedded broker restarts
DRAINING = web.AppKey("draining", dict)  # {"draining": True} once shutdown starts, so /readyz fails first

CALLER: web.RequestKey["Caller"] = web.RequestKey("caller")
SHOPPER: web.RequestKey["Shopper"] = web.RequestKey("shopper")
BODY = web.RequestKey("body", BaseModel)  # the route's validated body
JSON_BODY = web.RequestKey("json_body", dict)  # the parsed JSON, hashed by idempotency
EXPECTED_VERSION = web.RequestKey("expected_version", int)  # from `If-Match` or the body's `version`
MINTED_ID = web.RequestKey("minted_id", str)  # the id this request creates, one per Idempotency-Key

KIND_SECRET = "secret"
KIND_PUBLISHABLE = "publishable"
SECRET_ONLY = frozenset({KIND_SECRET})
ANY_KEY = frozenset({KIND_SECRET, KIND_PUBLISHABLE})

# What a restricted key may be granted; every /v1 route names the one it needs.
SCOPES = ("catalog:read", "shopper_tokens:write", "carts:write", "orders:read", "orders:write", "webhooks:write")


@dataclass(frozen=True)
class Endpoint:
    """What a route requires; the middlewares read it in the order of checks (key, kind, token, body, idempotency)."""

    keys: frozenset[str]
    shopper: Literal["required", "optional", "none"]
    scope: str  # a restricted key must hold it
    body: type[BaseModel] | None = None
    versioned: bool = False  # takes `If-Match` / `version` as the cart version it expects
    mints: str | None = None  # id prefix of what the route creates; one id per Idempotency-Key
    replay: bool = True  # False: re-running is harmless and the answer holds a secret, so it is never stored
    query: type[BaseModel] | None = None  # the query string's model (the route validates it; the reference shows it)


def endpoint(*, scope: str, keys: frozenset[str] = SECRET_ONLY, shopper: Literal["required", "optional", "none"] = "required",
             body: type[BaseModel] | None = None, versioned: bool = False, mints: str | None = None,
             replay: bool = True, query: type[BaseModel] | None = None) -> Callable:
    """Declare a route's requirements on its handler."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def mark(handler: Callable) -> Callable:
        handler.endpoint = Endpoint(keys, shopper, scope, body, versioned, mints, replay, query)  # type: ignore[attr-defined]
        return handler
    return mark


def endpoint_of(request: web.Request) -> Endpoint | None:
    return getattr(request.match_info.handler, "endpoint", None)
