"""The gateway's memory (services/gateway/cache.py) without a database: when it may be used, what a change
drops, and that a read racing a change never puts the old row back. The real thing, on two gateways with
PostgreSQL's NOTIFY: tests/e2e/test_gateway_cache.py."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from libs.runtime.metrics import Metrics
from services.gateway.auth import KeyRecord, authenticate_key, hash_api_key
from services.gateway.cache import API_KEYS, CUSTOMERS, SIGNING_KEYS, Cache, Listener, listener_name
from services.gateway.errors import ApiError

KEY = "hk_test_sec_" + "A" * 43


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def listening_cache(**kw) -> tuple[Cache, Clock]:
    clock = Clock()
    cache = Cache(clock=clock, **kw)
    cache.started_listening(clock.now)
    return cache, clock


class Loads:
    """A load function that counts its calls and returns the next value."""

    def __init__(self, *values):
        self.values, self.calls = list(values), 0

    async def __call__(self):
        self.calls += 1
        return self.values[min(self.calls, len(self.values)) - 1]


async def test_bypassed_until_listening_then_remembered():
    clock = Clock()
    cache = Cache(clock=clock)
    load = Loads("a")
    assert cache.status == "bypassed: not listening"
    assert [await cache.remember(API_KEYS, "h", load) for _ in range(2)] == ["a", "a"] and load.calls == 2
    assert cache.size(API_KEYS) == 0  # nothing kept while not listening
    cache.started_listening(clock.now)
    assert cache.status == "on"
    assert [await cache.remember(API_KEYS, "h", load) for _ in range(3)] == ["a", "a", "a"] and load.calls == 3


async def test_losing_the_listener_drops_everything_and_bypasses():
    cache, clock = listening_cache()
    await cache.remember(API_KEYS, "h", Loads("old"))
    cache.stopped_listening()
    assert cache.size(API_KEYS) == 0 and not cache.usable
    load = Loads("new")
    assert await cache.remember(API_KEYS, "h", load) == "new" and load.calls == 1
    cache.started_listening(clock.now)  # back: starts empty (what changed meanwhile was not heard)
    assert await cache.remember(API_KEYS, "h", load) == "new" and load.calls == 2


async def test_a_listener_not_confirmed_within_fresh_s_is_not_trusted():
    cache, clock = listening_cache(fresh_s=1.0)
    await cache.remember(API_KEYS, "h", Loads("a"))
    clock.now += 0.9
    assert cache.usable
    clock.now += 0.2  # 1.1 s since the last confirmed heartbeat was sent
    assert not cache.usable and cache.status.startswith("bypassed: listener unconfirmed")
    load = Loads("b")
    assert await cache.remember(API_KEYS, "h", load) == "b" and load.calls == 1
    cache.confirmed(clock.now - 0.05)  # a heartbeat sent 50 ms ago was answered
    assert cache.usable and await cache.remember(API_KEYS, "h", load) == "a"  # the entry itself was still good
    cache.confirmed(clock.now - 5)  # an older heartbeat answering late never moves the confirmation back
    assert cache.usable


async def test_a_change_drops_only_what_was_read_from_that_table():
    cache, _ = listening_cache()
    for kind in (API_KEYS, CUSTOMERS, SIGNING_KEYS):
        await cache.remember(kind, "k", Loads(kind))
    cache.changed("customers")
    assert (cache.size(API_KEYS), cache.size(CUSTOMERS), cache.size(SIGNING_KEYS)) == (1, 0, 1)
    cache.changed("tenants")  # a tenant's rate limits come with its keys
    assert (cache.size(API_KEYS), cache.size(SIGNING_KEYS)) == (0, 1)
    cache.changed("tenant_signing_keys")
    assert cache.size(SIGNING_KEYS) == 0
    await cache.remember(API_KEYS, "k", Loads(1))
    cache.changed("a_table_of_a_later_version")  # unknown: everything goes
    assert cache.size(API_KEYS) == 0


async def test_a_read_that_raced_a_change_is_not_kept():
    cache, _ = listening_cache()
    reading = asyncio.Event()
    release = asyncio.Event()

    async def slow_old_row():
        reading.set()
        await release.wait()
        return "old row"

    task = asyncio.create_task(cache.remember(API_KEYS, "h", slow_old_row))
    await reading.wait()
    cache.changed("api_keys")  # the NOTIFY arrives while the old row is on its way
    release.set()
    assert await task == "old row"  # this request uses what it read…
    assert cache.size(API_KEYS) == 0  # …but it is not remembered
    load = Loads("new row")
    assert await cache.remember(API_KEYS, "h", load) == "new row" and load.calls == 1


async def test_a_read_that_outlived_the_listener_is_not_kept():
    cache, clock = listening_cache()
    release = asyncio.Event()

    async def slow():
        await release.wait()
        return "row"

    task = asyncio.create_task(cache.remember(API_KEYS, "h", slow))
    await asyncio.sleep(0)
    cache.stopped_listening()
    cache.started_listening(clock.now)
    release.set()
    await task
    assert cache.size(API_KEYS) == 0


async def test_missing_rows_kept_only_when_asked_and_the_oldest_entry_goes_first():
    cache, _ = listening_cache(max_entries=2)
    load = Loads(None)
    for _ in range(2):
        assert await cache.remember(API_KEYS, "unknown", load, keep_missing=False) is None
    assert load.calls == 2
    for key in ("a", "b", "c"):
        await cache.remember(CUSTOMERS, key, Loads(False))
    assert cache.size(CUSTOMERS) == 2
    first = Loads(True)
    await cache.remember(CUSTOMERS, "a", first)
    assert first.calls == 1  # "a" was the oldest: it went


async def test_turned_off_it_always_reads():
    cache = Cache(enabled=False)
    cache.started_listening(0)
    load = Loads("a")
    for _ in range(2):
        await cache.remember(API_KEYS, "h", load)
    assert load.calls == 2 and cache.status == "off"


async def test_lookups_are_counted():
    metrics = Metrics.create()
    cache, _ = listening_cache(metrics=metrics)
    for _ in range(3):
        await cache.remember(API_KEYS, "h", Loads("a"))
    cache.stopped_listening()
    await cache.remember(API_KEYS, "h", Loads("a"))
    text = metrics.render().decode()
    for result, n in (("miss", 1), ("hit", 2), ("bypass", 1)):
        assert f'harmon_gateway_cache_lookups_total{{kind="api_keys",result="{result}"}} {n}.0' in text
    assert "harmon_gateway_cache_listening 0.0" in text


def record(**kw) -> KeyRecord:
    fields = dict(id="key_1", tenant_id="ten_1", livemode=False, kind="secret", prefix="hk_test_sec", last4="AAAA",
                  scopes=None, revoked_at=None, expires_at=None, rate_limit=None, mint_rate_limit=None)
    return KeyRecord(**{**fields, **kw})


async def test_expiry_is_checked_on_every_request_even_when_remembered():
    cache, _ = listening_cache()
    ends = datetime.now(UTC) + timedelta(milliseconds=300)
    load = Loads(record(expires_at=ends))
    await cache.remember(API_KEYS, hash_api_key(KEY), load, keep_missing=False)
    caller = await authenticate_key(None, f"Bearer {KEY}", cache)  # remembered: no session needed
    assert caller.key_id == "key_1"
    await asyncio.sleep((ends - datetime.now(UTC)).total_seconds() + 0.05)
    with pytest.raises(ApiError) as refused:
        await authenticate_key(None, f"Bearer {KEY}", cache)
    assert refused.value.code == "api_key_revoked" and load.calls == 1  # refused from memory, by the clock


async def test_a_remembered_revoked_key_stays_refused():
    cache, _ = listening_cache()
    await cache.remember(API_KEYS, hash_api_key(KEY), Loads(record(revoked_at=datetime.now(UTC))))
    with pytest.raises(ApiError) as refused:
        await authenticate_key(None, f"Bearer {KEY}", cache)
    assert refused.value.code == "api_key_revoked"


def test_the_listener_tells_the_cache_and_names_itself():
    cache, _ = listening_cache()
    listener = Listener(cache, "postgresql://u:p@127.0.0.1:5/db", listener_name("gw-1"))
    assert listener.application_name == "harmon-gateway-listen:gw-1"
    assert len(listener_name("x" * 100)) == 63
    cache._maps[CUSTOMERS]["k"] = True
    listener._notified(None, 1, "harmon_gateway_changes", "customers")
    assert cache.size(CUSTOMERS) == 0
    listener._terminated(object())  # not its connection: nothing happens
    assert cache.listening
    listener._conn = conn = object()
    listener._terminated(conn)
    assert not cache.listening
