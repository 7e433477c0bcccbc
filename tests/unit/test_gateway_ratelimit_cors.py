"""Pure parts of rate limits and CORS: rate notation, client addresses, origins, Retry-After from the real
`limits` memory storage."""

import pytest
from aiohttp.test_utils import make_mocked_request

from libs.runtime.metrics import Metrics
from services.gateway.config import Settings
from services.gateway.cors import browser_origin, check_origin
from services.gateway.errors import RATE_LIMIT, ApiError
from services.gateway.ratelimit import Limits, RateLimiter, async_storage_uri, client_address, parse_rate

SECRET = "unit-test-signing-secret-0123456789abcdefghij"


@pytest.mark.parametrize("text,amount,window", [("100/second", 100, 1), ("20 per minute", 20, 60),
                                                ("5/10 seconds", 5, 10)])
def test_rates_use_the_libraries_notation(text, amount, window):
    item = parse_rate(text)
    assert (item.amount, item.get_expiry()) == (amount, window)


@pytest.mark.parametrize("text", ["", "fast", "100", "0/second", "-1/second", "10/fortnight"])
def test_a_bad_rate_is_refused_and_the_gateway_will_not_start_with_it(text):
    with pytest.raises(ValueError):
        parse_rate(text)
    with pytest.raises(ValueError):
        Settings(database_url="postgresql://u@h/d", signing_secret=SECRET, rate_limit=text)


@pytest.mark.parametrize("uri", ["nosuch://cache", "redis+nosuch://cache"])
def test_an_unknown_storage_stops_the_gateway_at_start(uri):
    with pytest.raises(ValueError, match="rate limit storage"):
        Settings(database_url="postgresql://u@h/d", signing_secret=SECRET, rate_limit_storage=uri)


def test_the_reference_documents_429_with_retry_after_and_the_browser_refusal_on_every_operation():
    from services.gateway.app import create_app
    from services.gateway.routes.docs import OPENAPI

    doc = create_app(Settings(database_url="postgresql://u@h/d", signing_secret=SECRET))[OPENAPI]
    operations = [op for item in doc["paths"].values() for op in item.values() if "responses" in op]
    assert len(operations) >= 11
    for op in operations:
        assert "Retry-After" in op["responses"]["429"]["headers"], op["operationId"]
        assert "secret_key_from_browser" in op["responses"]["403"]["description"], op["operationId"]


def test_storage_uris_map_to_the_async_storages():
    assert async_storage_uri("memory://") == "async+memory://"
    assert async_storage_uri("redis://cache:6379/0") == "async+redis://cache:6379/0"
    assert async_storage_uri("async+redis://cache") == "async+redis://cache"


def _request(headers: dict | None = None, method: str = "GET", path: str = "/v1/products", host="api.example:8080"):
    return make_mocked_request(method, path, headers={"Host": host, **(headers or {})})


def test_the_client_address_is_the_peer_unless_proxies_are_trusted():
    forged = {"X-Forwarded-For": "6.6.6.6, 203.0.113.9"}
    assert client_address(_request(forged), 0) == (_request().remote or "unknown") != "203.0.113.9"
    assert client_address(_request(forged), 1) == "203.0.113.9"  # written by our one proxy
    assert client_address(_request(forged), 2) == "6.6.6.6"
    assert client_address(_request({"X-Forwarded-For": "203.0.113.9"}), 3) == "203.0.113.9"


@pytest.mark.parametrize("origin,cross", [
    (None, False),
    ("http://api.example:8080", False),
    ("HTTP://API.EXAMPLE:8080", False),
    ("https://api.example:8080", True),  # another scheme is another origin
    ("http://api.example", True),        # another port
    ("https://shop.example", True),
    ("null", True),                      # sandboxed frames and files
])
def test_a_browser_origin_is_any_origin_but_the_apis_own(origin, cross):
    request = _request({"Origin": origin} if origin else {})
    assert (browser_origin(request, None) is not None) is cross


def test_behind_a_proxy_the_configured_public_origin_is_the_apis_own():
    request = _request({"Origin": "https://api.harmon.example"})
    assert browser_origin(request, None) == "https://api.harmon.example"
    assert browser_origin(request, check_origin("https://api.harmon.example/")) is None
    assert browser_origin(request, check_origin("https://api.harmon.example:443")) is None


@pytest.mark.parametrize("text", ["api.example", "ftp://api.example", "https://api.example/v1", "https://"])
def test_a_public_origin_is_scheme_host_port(text):
    with pytest.raises(ValueError):
        check_origin(text)


async def test_over_the_limit_is_429_rate_limited_with_an_honest_retry_after():
    limiter = RateLimiter("memory://", Limits("100/second", "2/30 seconds", "20/minute"), 0, Metrics.create())
    request = _request()
    for _ in range(2):
        await limiter.check_key(request, "key_1", False, True, None, None)
    with pytest.raises(ApiError) as refused:
        await limiter.check_key(request, "key_1", False, True, None, None)
    e = refused.value
    assert (e.status, e.type, e.code) == (429, RATE_LIMIT, "rate_limited")
    assert 29 <= int(e.headers["Retry-After"]) <= 30
    # another key, and the same key on other routes, are not held back
    await limiter.check_key(request, "key_2", False, True, None, None)
    await limiter.check_key(request, "key_1", False, False, None, None)
    # a tenant's own limit replaces the default
    for _ in range(3):
        await limiter.check_key(request, "key_3", False, False, "3/minute", None)
    with pytest.raises(ApiError):
        await limiter.check_key(request, "key_3", False, False, "3/minute", None)
    # a stored limit that does not parse falls back to the default rather than failing every request
    for _ in range(2):  # the default mint limit, 2/30 seconds
        await limiter.check_key(request, "key_4", False, True, None, "lots")
    with pytest.raises(ApiError):
        await limiter.check_key(request, "key_4", False, True, None, "lots")


async def test_publishable_keys_are_counted_per_address():
    limiter = RateLimiter("memory://", Limits("1/minute", "1/minute", "20/minute"), 1, Metrics.create())
    await limiter.check_key(_request({"X-Forwarded-For": "198.51.100.1"}), "key_pub", True, False, None, None)
    await limiter.check_key(_request({"X-Forwarded-For": "198.51.100.2"}), "key_pub", True, False, None, None)
    with pytest.raises(ApiError):
        await limiter.check_key(_request({"X-Forwarded-For": "198.51.100.2"}), "key_pub", True, False, None, None)


async def test_failed_authentication_closes_the_address_until_the_window_passes():
    limiter = RateLimiter("memory://", Limits("100/second", "20/second", "2/minute"), 0, Metrics.create())
    request = _request()
    for _ in range(2):
        await limiter.guard_address(request)
        await limiter.count_failed_auth(request)
    with pytest.raises(ApiError) as refused:
        await limiter.guard_address(request)
    assert refused.value.code == "rate_limited" and 59 <= int(refused.value.headers["Retry-After"]) <= 60
