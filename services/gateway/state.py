"""What every gateway module shares, in one leaf that imports no other gateway module: header names, key
kinds and scopes, who is calling (Caller, Shopper), the typed keys of what the app and one request hold, and
route requirements.

A key of an object whose class is the gateway's own (Settings, ShopperTokens, RateLimiter, …) is declared
beside that class (config.SETTINGS, auth.TOKENS, ratelimit.RATE_LIMITER, idempotency.IDEMPOTENCY_STORE,
correlator.CORRELATOR, hold.HOLD, cache.CACHE), so no module needs another's types to name it: the import
graph of services/gateway stays acyclic (tests/unit/test_gateway_imports.py).
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from libs.runtime.context import ServiceContext
from libs.runtime.metrics import Metrics

# --- header names ---------------------------------------------------------------------------------

REQUEST_ID_HEADER = "Request-Id"
SHOPPER_HEADER = "X-Storefront-Shopper-Token"
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"

# --- key kinds and scopes -------------------------------------------------------------------------

KIND_SECRET = "secret"
KIND_PUBLISHABLE = "publishable"
KIND_RESTRICTED = "restricted"  # a secret key (hk_<mode>_sec_…) whose row lists its scopes
SECRET_ONLY = frozenset({KIND_SECRET})
ANY_KEY = frozenset({KIND_SECRET, KIND_PUBLISHABLE})

# What a restricted key may be granted; every /v1 route names the one it needs.
SCOPES = ("catalog:read", "shopper_tokens:write", "carts:write", "orders:read", "orders:write", "invoices:read",
          "credit:read", "webhooks:read", "webhooks:write")
MINT_SCOPE = "shopper_tokens:write"  # the route that mints shopper tokens has the stricter rate limit too


# --- who is calling -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Caller:
    """The API key's tenant, mode and kind."""

    tenant_id: str
    livemode: bool
    kind: str
    key_id: str
    hint: str
    scopes: tuple[str, ...] | None = None  # None: unrestricted
    rate_limit: str | None = None  # the tenant's own limits; None: the deployment's
    mint_rate_limit: str | None = None
    order_prefix: str | None = None  # the tenant's order-number prefix, sent with PlaceOrder; None: orders' "ORD"


@dataclass(frozen=True)
class Shopper:
    customer_id: str
    token_id: str
    expires_at: datetime


# --- what the app and a request hold --------------------------------------------------------------

ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONMAKER = web.AppKey("sessionmaker", async_sessionmaker[AsyncSession])
LOOKUPS = web.AppKey("lookups", async_sessionmaker[AsyncSession])  # autocommit: keys, signing keys, customers
METRICS = web.AppKey("metrics", Metrics)
SERVICE = web.AppKey("service", ServiceContext)  # its extras["draining"] is set once shutdown starts

CALLER = web.RequestKey("caller", Caller)
SHOPPER = web.RequestKey("shopper", Shopper)
BODY = web.RequestKey("body", BaseModel)  # the route's validated body
JSON_BODY = web.RequestKey("json_body", dict)  # the parsed JSON, hashed by idempotency
EXPECTED_VERSION = web.RequestKey("expected_version", int)  # from `If-Match` or the body's `version`
MINTED_ID = web.RequestKey("minted_id", str)  # the id this request creates, one per Idempotency-Key


# --- route requirements ---------------------------------------------------------------------------

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
    withheld: tuple[str, ...] = ()  # fields of the answer never stored for replay (a secret): a replay lacks them


def endpoint(*, scope: str, keys: frozenset[str] = SECRET_ONLY, shopper: Literal["required", "optional", "none"] = "required",
             body: type[BaseModel] | None = None, versioned: bool = False, mints: str | None = None,
             replay: bool = True, query: type[BaseModel] | None = None, withheld: tuple[str, ...] = ()) -> Callable:
    """Declare a route's requirements on its handler."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def mark(handler: Callable) -> Callable:
        handler.endpoint = Endpoint(keys, shopper, scope, body, versioned, mints, replay, query, withheld)  # type: ignore[attr-defined]
        return handler
    return mark


def endpoint_of(request: web.Request) -> Endpoint | None:
    return getattr(request.match_info.handler, "endpoint", None)
