"""Rate limits with the `limits` library: per API key (stricter on token minting), and per client address on
failed authentication. Over a limit: 429 `rate_limited` with `Retry-After`, before anything is written.

Strategy: limits' *moving window* — at most N requests in any window of T seconds. It is the one of its
strategies closest to a token bucket of N tokens refilled at N/T: a burst of N passes, then each request
frees its slot exactly T after it was made, so the steady rate is N/T; the fixed window lets 2N through
around a window edge, and the sliding window counter is an estimate whose reset time is only a guess.
The moving window's reset (oldest request in the window + T) is exact, so `Retry-After` is the wait
until the next request can pass.
"""

import logging
import math
import time
from dataclasses import dataclass

from aiohttp import web
from limits import RateLimitItem
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from prometheus_client import Counter

from libs.runtime.metrics import Metrics

from .errors import RATE_LIMIT, ApiError
from .validators import async_storage_uri, check_rate, check_storage, parse_rate

__all__ = ["RATE_LIMITER", "Limits", "RateLimiter", "async_storage_uri", "check_rate", "check_storage",
           "client_address", "parse_rate"]
# why a request was refused; the label of harmon_rate_limited_total
REASON_KEY, REASON_MINT, REASON_FAILED_AUTH = "key", "token_mint", "failed_auth"

log = logging.getLogger("harmon.gateway.ratelimit")


def client_address(request: web.Request, forwarded_hops: int) -> str:
    """The caller's address: the peer's, or behind `forwarded_hops` trusted proxies the one they recorded.

    Each proxy appends the address it saw to X-Forwarded-For, so the entry `forwarded_hops` from the right
    is the last one a trusted proxy wrote; entries left of it are the client's to forge."""
    if forwarded_hops > 0:
        seen = [a.strip() for a in ",".join(request.headers.getall("X-Forwarded-For", ())).split(",") if a.strip()]
        if seen:
            return seen[-forwarded_hops] if len(seen) >= forwarded_hops else seen[0]
    return request.remote or "unknown"


def rate_limited(retry_after: int, what: str) -> ApiError:
    return ApiError(429, RATE_LIMIT, "rate_limited",
                    f"too many requests {what}; retry after {retry_after} s",
                    headers={"Retry-After": str(retry_after)})


@dataclass(frozen=True)
class Limits:
    """Deployment defaults; a tenant's own (from its row) replace the per-key ones."""

    per_key: str
    token_mints: str
    failed_auth: str


class RateLimiter:
    """One per gateway process. With `memory://` the counts are this instance's own; a shared storage
    (e.g. `redis://…`) makes every limit hold across all instances."""

    def __init__(self, storage_uri: str, defaults: Limits, forwarded_hops: int, metrics: Metrics):
        self._limiter = MovingWindowRateLimiter(storage_from_string(async_storage_uri(storage_uri)))
        self.defaults = defaults
        self.forwarded_hops = forwarded_hops
        self._refused = Counter("harmon_rate_limited", "requests refused with 429 rate_limited", ["reason"],
                                registry=metrics.registry)
        for reason in (REASON_KEY, REASON_MINT, REASON_FAILED_AUTH):
            self._refused.labels(reason=reason)

    @staticmethod
    def _tenants(own: str | None, default: str) -> RateLimitItem:
        if own:
            try:
                return parse_rate(own)
            except ValueError:  # written around `harmon tenants`, which checks; the default beats a 500 per request
                log.warning("a tenant's rate limit %r does not parse; using the default %s", own, default)
        return parse_rate(default)

    async def _retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        reset, _ = await self._limiter.get_window_stats(item, *identifiers)
        return max(1, math.ceil(reset - time.time()))

    async def _refuse(self, reason: str, item: RateLimitItem, what: str, *identifiers: str) -> ApiError:
        self._refused.labels(reason=reason).inc()
        return rate_limited(await self._retry_after(item, *identifiers), what)

    async def guard_address(self, request: web.Request) -> None:
        """429 for an address over its failed-authentication limit, before its key is even looked at."""
        item = parse_rate(self.defaults.failed_auth)
        address = client_address(request, self.forwarded_hops)
        if not await self._limiter.test(item, "failed_auth", address):
            raise await self._refuse(REASON_FAILED_AUTH, item, "with a missing or invalid API key from this address",
                                     "failed_auth", address)

    async def count_failed_auth(self, request: web.Request) -> None:
        await self._limiter.hit(parse_rate(self.defaults.failed_auth), "failed_auth",
                                client_address(request, self.forwarded_hops))

    async def check_key(self, request: web.Request, key_id: str, publishable: bool, minting: bool,
                        per_key: str | None, token_mints: str | None) -> None:
        """Count this request against its key (and, minting a shopper token, the stricter minting limit)."""
        # A publishable key is shared by every shopper's browser: each address gets its own allowance.
        who = (key_id, client_address(request, self.forwarded_hops)) if publishable else (key_id,)
        item = self._tenants(per_key, self.defaults.per_key)
        if not await self._limiter.hit(item, "key", *who):
            raise await self._refuse(REASON_KEY, item, "with this API key", "key", *who)
        if minting:
            item = self._tenants(token_mints, self.defaults.token_mints)
            if not await self._limiter.hit(item, "mint", *who):
                raise await self._refuse(REASON_MINT, item, "minting shopper tokens with this API key", "mint", *who)


RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
