"""Webhook rules (services/notifier/domain.py) and handlers over in-memory units of work."""

import random
from datetime import UTC, datetime, timedelta

import pytest

from libs.contracts import webhooks as w
from libs.contracts.base import Rejection
from libs.contracts.errors import ErrorCode
from libs.runtime.database import Scope
from services.notifier import domain, handlers
from services.notifier.config import Settings
from services.notifier.domain import Endpoint, PublicEvent
from services.notifier.unit_of_work import NotifierUnitOfWork
from tests.unit.test_notifier_handlers import InMemoryEvents

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def resolver(table):
    async def resolve(host):
        if host not in table:
            raise OSError("no such host")
        return table[host]
    return resolve


@pytest.mark.parametrize("url,addresses", [
    ("http://hooks.example.com/x", ["93.184.216.34"]),  # not https
    ("https://127.0.0.1/x", None), ("https://10.0.0.5/x", None), ("https://169.254.169.254/x", None),
    ("https://100.64.1.1/x", None), ("https://224.0.0.1/x", None), ("https://0.0.0.0/x", None),
    ("https://[::1]/x", None), ("https://[::ffff:192.168.1.1]/x", None), ("https://[fe80::1]/x", None),
    ("https://internal.example.com/x", ["93.184.216.34", "192.168.0.7"]),  # one private address is enough
    ("https://localhost/x", ["127.0.0.1"]), ("https://nowhere.example.com/x", "missing"),
])
async def test_live_mode_refuses_non_https_and_non_public_addresses(url, addresses):
    table = {} if addresses in (None, "missing") else {url.split("/")[2]: addresses}
    with pytest.raises(Rejection) as refused:
        await domain.checked_addresses(url, True, resolver(table))
    assert (refused.value.code, refused.value.param) == (ErrorCode.URL_INVALID, "url")


async def test_live_mode_takes_a_public_https_host_and_test_mode_takes_loopback():
    assert await domain.checked_addresses("https://hooks.example.com/x", True,
                                          resolver({"hooks.example.com": ["93.184.216.34"]})) == ["93.184.216.34"]
    assert await domain.checked_addresses("http://127.0.0.1:8000/x", False, resolver({})) == ["127.0.0.1"]
    await domain.check_url("http://not-resolving.invalid/x", False, resolver({}))  # test mode: no lookup


@pytest.mark.parametrize("url", ["https://[6", "http://[::1/x", "https://host:99999/x", "https://host:port/x"])
@pytest.mark.parametrize("livemode", [True, False])
async def test_a_url_that_does_not_parse_is_url_invalid_in_either_mode(url, livemode):
    with pytest.raises(Rejection) as refused:
        await domain.check_url(url, livemode, resolver({}))
    assert (refused.value.code, refused.value.param) == (ErrorCode.URL_INVALID, "url")


def test_the_retry_schedule_repeats_its_last_delay_with_jitter_and_stops_at_the_age_cap():
    rng = random.Random(1)
    for attempt, base in ((1, 60), (2, 300), (8, 86_400), (12, 86_400)):
        assert 0.8 * base <= domain.retry_delay(attempt, (60, 300, 1800, 3600, 10800, 21600, 43200, 86400), rng) \
            <= 1.2 * base
    o = domain.outcome_of(503, 1, NOW, NOW, (60,), 3600, rng)
    assert o.outcome == "retrying" and NOW + timedelta(seconds=48) <= o.next_attempt_at <= NOW + timedelta(seconds=72)
    assert domain.outcome_of(None, 5, NOW - timedelta(seconds=3590), NOW, (60,), 3600, rng).outcome == "failed"
    assert [domain.classify(c) for c in (200, 204, 301, 302, 400, 404, 410, 429, 500, 503, None)] == [
        "delivered", "delivered", "failed", "failed", "failed", "failed", "failed", "retrying", "retrying",
        "retrying", "retrying"]


def test_an_endpoint_failing_for_the_whole_window_is_disabled_and_a_delivery_resets_the_window():
    e = Endpoint.create("we_1", "https://x.example/h", ["*"], None, NOW)
    e1 = e.after_attempt(False, NOW, 100)
    assert (e1.status, e1.failing_since) == ("enabled", NOW)
    assert e1.after_attempt(True, NOW, 100).failing_since is None
    e2 = e1.after_attempt(False, NOW + timedelta(seconds=100), 100)
    assert (e2.status, e2.version) == ("disabled", e.version + 1)
    evt = domain.disabled_event(e2, True, NOW)
    assert evt.type == "webhook_endpoint.disabled" and evt.aggregate_version == e2.version
    assert evt.data["object"]["status"] == "disabled" and "secret" not in str(evt.data)


def test_rotation_keeps_the_old_secret_until_it_expires():
    e = Endpoint.create("we_1", "https://x.example/h", ["*"], None, NOW)
    r = e.rotated(NOW, 60)
    assert r.signing_secrets(NOW) == [r.secrets[0].value, e.secrets[0].value]
    assert r.signing_secrets(NOW + timedelta(seconds=61)) == [r.secrets[0].value]
    assert len(r.rotated(NOW + timedelta(seconds=61), 0).secrets) == 1  # expired ones dropped, the last stops now


@pytest.mark.parametrize("key", [None, "", "c2hvcnQ", "A" * 43])
def test_a_missing_or_weak_key_stops_start_up_except_in_dev(monkeypatch, key):
    env = {} if key is None else {"secrets_key": key}
    with pytest.raises(ValueError, match="HARMON_NOTIFIER_SECRETS_KEY"):
        Settings(database_url="postgresql://x", **env)
    assert len(Settings(database_url="postgresql://x", dev_secrets=True, **env).key_bytes) == 32


def uow(store: InMemoryEvents, livemode=False, table=None) -> NotifierUnitOfWork:
    u = NotifierUnitOfWork(None, Scope("ten_A", livemode), None, now=NOW)
    store.bind(u)
    u.resolve = resolver(table or {})
    return u


async def test_endpoint_commands_and_fan_out_over_memory():
    store = InMemoryEvents()
    made = await handlers.create_webhook_endpoint(w.CreateWebhookEndpoint(
        endpoint_id="we_1", url="http://127.0.0.1:9/h", enabled_events=["order.confirmed"]), uow(store))
    assert made.secret.startswith("whsec_") and made.status == "enabled"
    other = await handlers.create_webhook_endpoint(w.CreateWebhookEndpoint(
        endpoint_id="we_2", url="http://127.0.0.1:9/h", enabled_events=["invoice.paid"]), uow(store))
    assert (await handlers.get_webhook_endpoint(w.GetWebhookEndpoint(endpoint_id="we_1"), uow(store))).secret is None
    listed = await handlers.list_webhook_endpoints(w.ListWebhookEndpoints(), uow(store))
    assert [e.endpoint_id for e in listed.endpoints] == ["we_2", "we_1"] and all(e.secret is None
                                                                                for e in listed.endpoints)
    e = PublicEvent.of("OrderConfirmed", "ord_1", 1, {"object": {"id": "ord_1"}}, NOW, NOW)
    assert await handlers.record_event(e, uow(store)) is True
    assert list(store.deliveries.rows) == [("we_1", e.id)]  # only the endpoint that takes order.confirmed
    assert await handlers.record_event(e, uow(store)) is False  # once
    assert (await handlers.get_event(w.GetEvent(event_id=e.id), uow(store))).data == {"object": {"id": "ord_1"}}
    off = await handlers.update_webhook_endpoint(w.UpdateWebhookEndpoint(endpoint_id="we_2", disabled=True),
                                                 uow(store))
    assert off.status == "disabled"
    await handlers.delete_webhook_endpoint(w.DeleteWebhookEndpoint(endpoint_id="we_1"), uow(store))
    assert store.deliveries.rows[("we_1", e.id)]["status"] == "cancelled"
    with pytest.raises(Rejection) as gone:
        await handlers.get_webhook_endpoint(w.GetWebhookEndpoint(endpoint_id="we_1"), uow(store))
    assert gone.value.code == ErrorCode.RESOURCE_MISSING
    assert other.endpoint_id == "we_2"


async def test_live_mode_create_and_update_check_the_url():
    store = InMemoryEvents()
    with pytest.raises(Rejection) as refused:
        await handlers.create_webhook_endpoint(w.CreateWebhookEndpoint(
            endpoint_id="we_1", url="https://internal.example/h", enabled_events=["*"]),
            uow(store, True, {"internal.example": ["10.1.2.3"]}))
    assert (refused.value.code, refused.value.param) == (ErrorCode.URL_INVALID, "url")
    assert store.endpoints.rows == {}
    await handlers.create_webhook_endpoint(w.CreateWebhookEndpoint(
        endpoint_id="we_1", url="https://hooks.example/h", enabled_events=["*"]),
        uow(store, True, {"hooks.example": ["93.184.216.34"]}))
    with pytest.raises(Rejection):
        await handlers.update_webhook_endpoint(w.UpdateWebhookEndpoint(endpoint_id="we_1", url="http://hooks.example/h"),
                                               uow(store, True, {"hooks.example": ["93.184.216.34"]}))
