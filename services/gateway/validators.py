"""Checks of setting values that both the settings (config.py) and the code using them apply: a leaf that
imports no other gateway module, so config never imports a middleware to validate a value."""

from functools import lru_cache

from limits import RateLimitItem, parse
from limits.errors import ConfigurationError
from limits.storage import storage_from_string
from yarl import URL


def check_origin(text: str) -> str:
    """`scheme://host[:port]`, as browsers send `Origin`; ValueError otherwise."""
    url = URL(text.strip())
    if url.scheme not in ("http", "https") or not url.host or url.path not in ("", "/") or url.query_string \
            or url.fragment or url.user:
        raise ValueError(f"an origin is scheme://host[:port], not {text!r}")
    return str(url.origin())


@lru_cache(maxsize=1024)
def parse_rate(text: str) -> RateLimitItem:
    """`100/second`, `20 per minute`, `5/10 seconds` (limits' notation); ValueError for anything else."""
    try:
        item = parse(text)
    except ValueError:
        raise ValueError(f"not a rate limit: {text!r} (e.g. 100/second, 20/minute, 5/10 seconds)") from None
    if item.amount < 1:
        raise ValueError(f"a rate limit allows at least one request: {text!r}")
    return item


def check_rate(text: str) -> str:
    """The text, if it parses; for settings and the admin commands."""
    parse_rate(text)
    return text.strip()


def async_storage_uri(uri: str) -> str:
    """limits names its asyncio storages `async+<scheme>://`; operators write the plain `memory://`, `redis://…`."""
    return uri if uri.startswith("async+") else f"async+{uri}"


def check_storage(uri: str) -> str:
    """The URI, if limits has a storage for it and its client library is installed; ValueError otherwise."""
    try:
        storage_from_string(async_storage_uri(uri))
    except ConfigurationError as e:  # an unknown scheme, or e.g. redis without `limits[async-redis]`
        raise ValueError(f"rate limit storage {uri.split('://')[0]!r}: {e}") from None
    return uri
