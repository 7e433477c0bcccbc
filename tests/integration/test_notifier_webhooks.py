"""Webhook delivery through real PostgreSQL and a real HTTP receiver (aiohttp on 127.0.0.1), by the notifier's
delivery worker (services/notifier/worker.py) run in this process on a database of its own (migrated like
notifier's), so the stack's notifier worker never takes these deliveries.

    HARMON_TEST_SERVICES=notifier python -m pytest tests/integration/test_notifier_webhooks.py
"""
from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest_asyncio
from aiohttp import web

from harmon_webhooks import SignatureError, verify
from libs.contracts import webhooks as w
from libs.contracts.ids import new_id
from libs.runtime.database import Database, Scope
from libs.stack.databases import _upgrade, migrations_dir
from services.notifier import handlers
from services.notifier.config import Settings
from services.notifier.domain import PublicEvent
from services.notifier.unit_of_work import NotifierUnitOfWork
from services.notifier.worker import DeliveryWorker
from tests.conftest import until
from libs.stack.processes import free_port

TENANT_KEY = secrets.token_urlsafe(32)


class Receiver:
    """An HTTP receiver: each path answers with the statuses queued for it (then 200), records every request."""

    def __init__(self, port: int = 0):
        self.port = port
        self.plans: dict[str, list] = {}
        self.got: list[dict] = []
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.got.append({"path": request.path, "headers": dict(request.headers), "body": body,
                         "at": time.monotonic()})
        plan = self.plans.get(request.path) or [200]
        step = plan.pop(0) if len(plan) > 1 else plan[0]
        if step == "slow":
            await asyncio.sleep(5)
            step = 200
        if step == 302:
            raise web.HTTPFound(f"http://127.0.0.1:{self.port}/target")
        return web.Response(status=step, text=f"answer {step}")

    async def start(self) -> "Receiver":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def to(self, path: str) -> list[dict]:
        return [r for r in self.got if r["path"] == path]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dsn(stack) -> str:
    name = f"notifier_wh_{secrets.token_hex(3)}"
    url = await stack._pg.ensure_database(name, name, secrets.token_urlsafe(16))
    await asyncio.to_thread(_upgrade, migrations_dir("notifier"), url)
    return url


def settings(dsn: str, **kw) -> Settings:
    return Settings(database_url=dsn, secrets_key=TENANT_KEY, webhook_retry_s="0.2,0.4",
                    webhook_poll_interval_s=0.1, webhook_lease_s=20, **kw)


@pytest_asyncio.fixture(loop_scope="session")
async def db(dsn) -> AsyncIterator[Database]:
    database = Database(dsn, max_size=6)
    await database.start()
    try:
        yield database
    finally:
        await database.close()


@pytest_asyncio.fixture(loop_scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    try:
        yield r
    finally:
        await r.stop()


class Workers:
    def __init__(self, db: Database, dsn: str):
        self.db, self.dsn, self.tasks = db, dsn, []

    def start(self) -> asyncio.Task:
        task = asyncio.create_task(DeliveryWorker(self.db, settings(self.dsn)).run())
        self.tasks.append(task)
        return task

    async def stop(self, task: asyncio.Task) -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest_asyncio.fixture(loop_scope="session")
async def workers(db, dsn) -> AsyncIterator[Workers]:
    ws = Workers(db, dsn)
    try:
        yield ws
    finally:
        for t in ws.tasks:
            await ws.stop(t)


async def within(db: Database, dsn: str, scope: Scope, work):
    async with db.transaction(scope) as tx:
        return await work(NotifierUnitOfWork(tx.conn, tx.scope, settings=settings(dsn)))


async def endpoint(db, dsn, scope, url: str, events=("*",)) -> w.WebhookEndpointView:
    cmd = w.CreateWebhookEndpoint(endpoint_id=new_id("we"), url=url, enabled_events=list(events))
    return await within(db, dsn, scope, lambda uow: handlers.create_webhook_endpoint(cmd, uow))


async def event(db, dsn, scope, order_id: str | None = None) -> PublicEvent:
    now = datetime.now(UTC)
    order_id = order_id or new_id("ord")
    e = PublicEvent.of("OrderConfirmed", order_id, 1, {"object": {"id": order_id, "object": "order"}}, now, now)
    assert await within(db, dsn, scope, lambda uow: handlers.record_event(e, uow)) is True
    return e


async def deliveries(db, dsn, scope, endpoint_id: str) -> list[w.WebhookDeliveryView]:
    q = w.ListWebhookDeliveries(endpoint_id=endpoint_id, limit=100)
    return (await within(db, dsn, scope, lambda uow: handlers.list_webhook_deliveries(q, uow))).deliveries


def scope() -> Scope:
    return Scope(new_id("ten"), False)


async def test_an_event_is_delivered_signed_and_the_signature_verifies(db, dsn, receiver, workers):
    s = scope()
    ep = await endpoint(db, dsn, s, receiver.url("/ok"))
    e = await event(db, dsn, s)
    workers.start()
    [req] = await until(lambda: receiver.to("/ok"), message="delivered")
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["headers"]["Harmon-Event-Id"] == e.id
    assert req["headers"]["User-Agent"] == "Harmon-Webhooks/1"
    body = verify(req["body"], req["headers"]["Harmon-Signature"], [ep.secret])
    assert body["id"] == e.id and body["type"] == "order.confirmed" and body["livemode"] is False
    assert body["data"] == {"object": dict(e.data["object"])}
    try:
        verify(req["body"], req["headers"]["Harmon-Signature"], ["whsec_other"])
        raise AssertionError("another secret verified")
    except SignatureError:
        pass
    [d] = await until(lambda: deliveries(db, dsn, s, ep.endpoint_id))
    assert (d.outcome, d.status_code, d.attempt, d.response_body, d.event_id) == ("delivered", 200, 1, "answer 200",
                                                                                   e.id)


async def test_500_500_200_is_delivered_on_the_third_attempt_and_all_three_are_stored(db, dsn, receiver, workers):
    s = scope()
    receiver.plans["/flaky"] = [500, 500, 200]
    ep = await endpoint(db, dsn, s, receiver.url("/flaky"))
    await event(db, dsn, s)
    workers.start()

    async def three():
        got = await deliveries(db, dsn, s, ep.endpoint_id)
        return got if len(got) == 3 and got[0].outcome == "delivered" else None

    got = await until(three, timeout=20)
    assert [(d.attempt, d.outcome, d.status_code) for d in got] == [(3, "delivered", 200), (2, "retrying", 500),
                                                                    (1, "retrying", 500)]
    assert all(d.next_attempt_at is not None for d in got[1:]) and got[0].next_attempt_at is None
    assert len(receiver.to("/flaky")) == 3


async def test_a_400_is_not_retried_and_a_302_is_not_followed(db, dsn, receiver, workers):
    s = scope()
    receiver.plans["/bad"] = [400, 200]
    receiver.plans["/moved"] = [302, 200]
    bad = await endpoint(db, dsn, s, receiver.url("/bad"))
    moved = await endpoint(db, dsn, s, receiver.url("/moved"))
    await event(db, dsn, s)
    workers.start()
    for ep in (bad, moved):
        [d] = await until(lambda ep=ep: deliveries(db, dsn, s, ep.endpoint_id), timeout=10)
        assert d.outcome == "failed" and d.next_attempt_at is None
    # a later event to each is delivered (one attempt in flight per endpoint, oldest first): the failed one was
    # not tried again meanwhile
    await event(db, dsn, s)
    for ep in (bad, moved):
        await until(lambda ep=ep: _delivered(db, dsn, s, ep.endpoint_id, 1), timeout=10)
    assert [d.status_code for d in await deliveries(db, dsn, s, bad.endpoint_id)] == [200, 400]
    assert [d.status_code for d in await deliveries(db, dsn, s, moved.endpoint_id)] == [200, 302]
    assert receiver.to("/target") == []  # the redirect's target never hit


async def _delivered(db, dsn, s, endpoint_id, n) -> bool:
    return sum(d.outcome == "delivered" for d in await deliveries(db, dsn, s, endpoint_id)) >= n


async def test_a_slow_endpoint_does_not_delay_another(db, dsn, receiver, workers):
    s = scope()
    receiver.plans["/slow"] = ["slow"]
    slow = await endpoint(db, dsn, s, receiver.url("/slow"))
    fast = await endpoint(db, dsn, s, receiver.url("/fast"))
    await event(db, dsn, s)
    workers.start()
    [slow_req] = await until(lambda: receiver.to("/slow"))
    [fast_req] = await until(lambda: receiver.to("/fast"), timeout=4)
    assert fast_req["at"] - slow_req["at"] < 4  # while the slow one was still being answered
    assert await _delivered(db, dsn, s, fast.endpoint_id, 1)
    assert not await _delivered(db, dsn, s, slow.endpoint_id, 1)
    await until(lambda: _delivered(db, dsn, s, slow.endpoint_id, 1), timeout=15)


async def test_two_workers_on_one_database_make_each_attempt_once(db, dsn, receiver, workers):
    s = scope()
    eps = [await endpoint(db, dsn, s, receiver.url(f"/two/{i}")) for i in range(4)]
    events = [await event(db, dsn, s) for _ in range(5)]
    workers.start()
    workers.start()

    async def all_delivered():
        return all([await _delivered(db, dsn, s, ep.endpoint_id, len(events)) for ep in eps])

    await until(all_delivered, timeout=30)
    for i, ep in enumerate(eps):
        ids = sorted(r["headers"]["Harmon-Event-Id"] for r in receiver.to(f"/two/{i}"))
        assert ids == sorted(e.id for e in events)  # each once
        assert len(await deliveries(db, dsn, s, ep.endpoint_id)) == len(events)


async def test_during_a_rotation_both_secrets_sign_and_after_it_only_the_new_one(db, dsn, receiver, workers):
    s = scope()
    ep = await endpoint(db, dsn, s, receiver.url("/rot"))
    rotate = w.RotateWebhookSecret(endpoint_id=ep.endpoint_id, expires_in_s=3600)
    rotated = await within(db, dsn, s, lambda uow: handlers.rotate_webhook_secret(rotate, uow))
    assert rotated.secret != ep.secret
    await event(db, dsn, s)
    workers.start()
    [req] = await until(lambda: receiver.to("/rot"))
    header = req["headers"]["Harmon-Signature"]
    assert header.count("v1=") == 2
    verify(req["body"], header, [ep.secret])
    verify(req["body"], header, [rotated.secret])
    stop = w.RotateWebhookSecret(endpoint_id=ep.endpoint_id, expires_in_s=0)
    newest = await within(db, dsn, s, lambda uow: handlers.rotate_webhook_secret(stop, uow))
    await event(db, dsn, s)
    [_, req2] = await until(lambda: receiver.to("/rot") if len(receiver.to("/rot")) == 2 else None)
    header2 = req2["headers"]["Harmon-Signature"]
    assert header2.count("v1=") == 1
    verify(req2["body"], header2, [newest.secret])
    for old in (ep.secret, rotated.secret):
        try:
            verify(req2["body"], header2, [old])
            raise AssertionError("an expired secret still signs")
        except SignatureError:
            pass


async def test_a_pending_attempt_survives_a_worker_restart(db, dsn, workers):
    s = scope()
    port = free_port()
    down = Receiver(port)
    ep = await endpoint(db, dsn, s, down.url("/back"))
    e = await event(db, dsn, s)
    first = workers.start()
    [d] = await until(lambda: deliveries(db, dsn, s, ep.endpoint_id))
    assert (d.outcome, d.error) == ("retrying", "connection_refused")
    await workers.stop(first)
    await down.start()
    try:
        workers.start()
        [req] = await until(lambda: down.to("/back"), timeout=15)
        assert req["headers"]["Harmon-Event-Id"] == e.id
        await until(lambda: _delivered(db, dsn, s, ep.endpoint_id, 1))
    finally:
        await down.stop()
