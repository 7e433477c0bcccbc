"""Signed webhooks on the real stack (issue 15): a real HTTP receiver started here (aiohttp on 127.0.0.1, test mode
may use it) answers notifier's POSTs per a script, and every claim is read back over the API.

The stack's notifier retries on a sub-second schedule and polls every 0.1 s (tests/conftest.py TEST_ENV), so
retries, restarts and rotations are seen in seconds. Each test has its own tenant (the `shop` fixture), so its
endpoint receives only that test's events. The auth matrix and isolation of the new routes are in
tests/e2e/test_auth_matrix.py and tests/e2e/test_isolation.py.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from harmon_webhooks import SignatureError, verify
from libs.contracts import topics
from libs.contracts.erp import FulfilmentLine, FulfilmentRecorded
from libs.contracts.ids import new_id
from libs.stack.processes import free_port

from .conftest import issue_key, publish_shop, shop_of
from .storefront import Storefront

pytestmark = pytest.mark.e2e

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 30.0  # for what notifier does asynchronously: record the event, claim it, POST it
OIL = {"sku": "OIL-1L", "quantity": 1}


# ---- the receiver -------------------------------------------------------------------------------------------

@dataclass
class Got:
    """One POST the receiver got, and what it answered."""

    body: bytes
    headers: dict[str, str]
    status: int

    @property
    def event(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP receiver on 127.0.0.1 answering its POSTs per `script` (status codes, in order; 200 after it).

    A 302 points at /elsewhere, which only counts its hits (`redirected`): a followed redirect would show there.
    `port` is fixed at construction, so a receiver that is down (`stop()`) comes back where notifier looks."""

    script: list[int] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    got: list[Got] = field(default_factory=list)
    redirected: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.script.pop(0) if self.script else 200
        self.got.append(Got(body, dict(request.headers), status))
        if status == 302:
            return web.Response(status=302, headers={"Location": f"http://127.0.0.1:{self.port}/elsewhere"})
        return web.json_response({"status": status}, status=status)

    async def _elsewhere(self, request: web.Request) -> web.Response:
        self.redirected += 1
        return web.json_response({})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self._hook)
        app.router.add_route("*", "/elsewhere", self._elsewhere)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def of(self, event_type: str) -> list[Got]:
        return [g for g in self.got if g.event.get("type") == event_type]

    def delivered(self, event_type: str) -> list[Got]:
        return [g for g in self.of(event_type) if 200 <= g.status < 300]


@pytest_asyncio.fixture(loop_scope="session")
async def receivers() -> AsyncIterator[Callable[..., Receiver]]:
    """`receivers(script=[500, 500])` → a started Receiver (`started=False`: not listening yet); all stopped after."""
    made: list[Receiver] = []

    async def make(script: Sequence[int] = (), started: bool = True) -> Receiver:
        receiver = Receiver(list(script))
        made.append(receiver)
        if started:
            await receiver.start()
        return receiver

    yield make
    for r in made:
        await r.stop()


# ---- the API --------------------------------------------------------------------------------------------------

async def register(store: Storefront, url: str, events: list[str], key: str | None = None) -> dict:
    r = await store.call("POST", "/v1/webhook_endpoints", json={"url": url, "enabled_events": events}, key=key,
                         headers={"Idempotency-Key": new_id("k")})
    assert r.status == 201, r.body
    assert r.body["secret"].startswith("whsec_") and r.body["url"] == url and r.body["status"] == "enabled"
    return r.body


async def deliveries(store: Storefront, endpoint_id: str) -> list[dict]:
    """Every attempt listed for the endpoint, newest first, every page."""
    found: list[dict] = []
    after = ""
    while True:
        r = await store.call("GET", f"/v1/webhook_endpoints/{endpoint_id}/deliveries?limit=100{after}")
        assert r.status == 200, r.body
        found += r.body["data"]
        if not r.body["has_more"]:
            return found
        after = f"&starting_after={found[-1]['id']}"


async def checkout(store: Storefront, customer: str) -> dict:
    token = await store.token(customer)
    cart = await store.cart_with(token, OIL)
    r = await store.checkout(token, cart["id"], key=new_id("k"))
    assert r.status == 201, r.body
    return r.body


async def fulfil_all(erp, tenant_id: str, order: dict) -> None:
    record = FulfilmentRecorded(fulfilment_id=new_id("ful"), order_id=order["id"], shipped_at=datetime.now(UTC),
                                lines=[FulfilmentLine(line_id=ln["id"], quantity=ln["quantity"]) for ln in order["lines"]])
    await erp.publish(topics.ERP_FULFILMENTS, record, tenant_id, key=order["id"])


def v1s(header: str) -> list[str]:
    return [p.split("=", 1)[1] for p in header.split(",") if p.startswith("v1=")]


def by_hand(body: bytes, header: str, secret: str) -> bool:
    """The issue's wire format, checked without harmon_webhooks: HMAC-SHA256 of "<t>.<raw body>"."""
    t = dict(p.split("=", 1) for p in header.split(",") if p.startswith("t="))["t"]
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return mac in v1s(header)


# ---- delivery ---------------------------------------------------------------------------------------------------

async def test_checkout_delivers_a_signed_order_confirmed_that_is_the_api_event_and_fulfilment_an_invoice_issued(
        store, shop, erp, receivers, until):
    receiver = await receivers()
    endpoint = await register(store, receiver.url, ["order.confirmed", "invoice.issued"])
    order = await checkout(store, shop.big)

    got = (await until(lambda: receiver.delivered("order.confirmed"), timeout=WAIT_S, message="order.confirmed"))[0]
    event = verify(got.body, got.headers["Harmon-Signature"], [endpoint["secret"]])
    assert by_hand(got.body, got.headers["Harmon-Signature"], endpoint["secret"])
    with pytest.raises(SignatureError):
        verify(got.body, got.headers["Harmon-Signature"], ["whsec_" + "x" * 43])
    assert event["type"] == "order.confirmed" and event["object"] == "event" and event["livemode"] is False
    assert event["id"].startswith("evt_") and got.headers["Harmon-Event-Id"] == event["id"]
    assert got.headers["Content-Type"].startswith("application/json")
    assert got.headers["User-Agent"] == "Harmon-Webhooks/1"
    # data.object is the order exactly as the API shows it (confirmed at checkout, before any fulfilment)
    assert event["data"]["object"] == order and order["status"] == "confirmed"

    r = await store.call("GET", f"/v1/events/{event['id']}")
    assert r.status == 200 and r.body == event
    listed = await store.call("GET", "/v1/events?type=order.confirmed")
    assert listed.status == 200 and [e["id"] for e in listed.body["data"]] == [event["id"]]

    await fulfil_all(erp, shop.tenant_id, order)
    issued = (await until(lambda: receiver.delivered("invoice.issued"), timeout=WAIT_S, message="invoice.issued"))[0]
    invoice = verify(issued.body, issued.headers["Harmon-Signature"], [endpoint["secret"]])["data"]["object"]
    assert invoice["object"] == "invoice" and invoice["order"] == order["id"] and invoice["total"] == order["total"]
    # one delivery each: a 2xx is final, and the endpoint is subscribed to nothing else (order.fulfilled)
    attempts = await deliveries(store, endpoint["id"])
    assert sorted((d["event_type"], d["outcome"], d["attempt"]) for d in attempts) == [
        ("invoice.issued", "delivered", 1), ("order.confirmed", "delivered", 1)]
    assert [g.event["type"] for g in receiver.got] == ["order.confirmed", "invoice.issued"]
    assert endpoint["secret"] not in json.dumps(attempts)


async def test_500_twice_then_200_is_delivered_on_the_third_attempt_and_every_attempt_is_listed(
        store, shop, receivers, until):
    receiver = await receivers([500, 500])
    endpoint = await register(store, receiver.url, ["order.confirmed"])
    order = await checkout(store, shop.big)
    await until(lambda: receiver.delivered("order.confirmed"), timeout=WAIT_S, message="the third attempt")
    assert [g.status for g in receiver.got] == [500, 500, 200]
    assert len({g.event["id"] for g in receiver.got}) == 1 and receiver.got[0].event["data"]["object"]["id"] == order["id"]
    for g in receiver.got:
        verify(g.body, g.headers["Harmon-Signature"], [endpoint["secret"]])

    async def three_listed():
        listed = await deliveries(store, endpoint["id"])
        return listed if listed and listed[0]["outcome"] == "delivered" else None
    listed = await until(three_listed, timeout=WAIT_S, message="the delivered attempt listed")
    assert [(d["attempt"], d["outcome"], d["status_code"]) for d in listed] == [
        (3, "delivered", 200), (2, "retrying", 500), (1, "retrying", 500)]  # newest first
    assert all(d["object"] == "webhook_delivery" and d["endpoint"] == endpoint["id"] and d["event"] ==
               receiver.got[0].event["id"] and d["event_type"] == "order.confirmed" for d in listed)
    assert all(d["response_body"] == '{"status": 500}' and d["next_attempt"] for d in listed[1:])
    assert listed[0]["next_attempt"] is None and listed[0]["latency_ms"] >= 0
    assert listed[2]["created"] <= listed[1]["created"] <= listed[0]["created"]


async def test_a_400_is_not_retried_and_a_302_is_not_followed(store, shop, receivers, until):
    refusing, redirecting = await receivers([400]), await receivers([302])
    first = await register(store, refusing.url, ["order.confirmed"])
    second = await register(store, redirecting.url, ["order.confirmed"])
    await checkout(store, shop.big)

    async def failed(endpoint_id: str):
        listed = await deliveries(store, endpoint_id)
        return listed if listed and listed[0]["outcome"] == "failed" else None
    refused = await until(lambda: failed(first["id"]), timeout=WAIT_S, message="the 400 failed")
    redirected = await until(lambda: failed(second["id"]), timeout=WAIT_S, message="the 302 failed")
    assert [(d["attempt"], d["status_code"], d["next_attempt"]) for d in refused] == [(1, 400, None)]
    assert [(d["attempt"], d["status_code"], d["next_attempt"]) for d in redirected] == [(1, 302, None)]

    # not retried: a later event to both endpoints arrives (each answers 200 now), and the first one was never
    # sent again, though the schedule's first retry delay (sub-second here) has long passed by then
    await checkout(store, shop.small)
    for receiver in (refusing, redirecting):
        await until(lambda: receiver.delivered("order.confirmed"), timeout=WAIT_S, message="the next event")
        assert [g.status for g in receiver.got] == [receiver.got[0].status, 200]
        assert receiver.got[0].event["id"] != receiver.got[1].event["id"]
    assert redirecting.redirected == 0  # the Location was never visited
    assert len(await deliveries(store, first["id"])) == 2 and len(await deliveries(store, second["id"])) == 2


async def test_a_receiver_down_while_notifier_is_killed_and_restarted_gets_the_event_after_both_are_back(
        stack, store, shop, receivers, until):
    receiver = await receivers(started=False)  # nothing listens on its port yet
    endpoint = await register(store, receiver.url, ["order.confirmed"])
    order = await checkout(store, shop.big)

    async def refused_attempts():
        listed = await deliveries(store, endpoint["id"])
        return listed if listed and all(d["outcome"] == "retrying" and d["status_code"] is None for d in listed) else None
    failing = await until(refused_attempts, timeout=WAIT_S, message="attempts failing on the closed port")
    assert failing[0]["error"] and failing[0]["next_attempt"]  # the error's class, e.g. connection_refused

    stack.kill_service("notifier")  # a crash: no drain; the pending attempt lives in notifier's database
    try:
        await receiver.start()
    finally:
        await stack.start_service("notifier")
    got = await until(lambda: receiver.delivered("order.confirmed"), timeout=WAIT_S, message="delivered after restart")
    assert len(got) == 1 and got[0].event["data"]["object"]["id"] == order["id"]
    verify(got[0].body, got[0].headers["Harmon-Signature"], [endpoint["secret"]])

    async def delivered_listed():
        listed = await deliveries(store, endpoint["id"])
        return listed if listed[0]["outcome"] == "delivered" else None
    listed = await until(delivered_listed, timeout=WAIT_S)
    assert [d["attempt"] for d in listed] == list(range(len(listed), 0, -1))  # one numbered row per attempt
    assert all(d["outcome"] == "retrying" for d in listed[1:])


async def test_two_notifier_instances_make_each_attempt_once(stack, store, shop, receivers, until, tmp_path):
    # every other POST fails, so there are retries for both instances to race on too
    receiver = await receivers([500, 200, 500, 200, 500, 200, 500, 200])
    endpoint = await register(store, receiver.url, ["order.confirmed"])
    port = free_port()
    env = {**stack.service_env("notifier"), "HARMON_INSTANCE_ID": "2", "HARMON_NOTIFIER_HEALTH_PORT": str(port)}
    log = open(tmp_path / "notifier-2.log", "wb")
    second = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.notifier", env=env,
                                                  cwd=stack.data_dir, stdout=log, stderr=log)
    try:
        async with aiohttp.ClientSession() as http:
            async def ready() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False
            await until(ready, timeout=30, message="second notifier instance ready")
        customers = [shop.big, shop.small, shop.buyer_a, shop.buyer_b, shop.parent, shop.tight]
        orders = await asyncio.gather(*(checkout(store, c) for c in customers))

        def all_delivered():
            return {g.event["data"]["object"]["id"] for g in receiver.got if g.status == 200} >= {o["id"] for o in orders}
        await until(all_delivered, timeout=WAIT_S, message="every order.confirmed delivered")

        async def settled():
            listed = await deliveries(store, endpoint["id"])
            return listed if sum(d["outcome"] == "delivered" for d in listed) == len(orders) else None
        listed = await until(settled, timeout=WAIT_S)
    finally:
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 20) == 0
        log.close()
    # each event delivered exactly once; each attempt listed once and sent once (no POST without its row)
    delivered = [g.event["id"] for g in receiver.got if g.status == 200]
    assert sorted(delivered) == sorted(set(delivered)) and len(delivered) == len(orders)
    assert len(receiver.got) == len(listed)
    per_event: dict[str, list[int]] = {}
    for d in listed:
        per_event.setdefault(d["event"], []).append(d["attempt"])
    assert all(sorted(a) == list(range(1, len(a) + 1)) for a in per_event.values()), per_event


async def test_rotation_signs_with_both_secrets_during_the_overlap_and_only_the_new_one_after(
        store, shop, receivers, until):
    receiver = await receivers()
    endpoint = await register(store, receiver.url, ["order.confirmed"])
    old = endpoint["secret"]
    overlap_s = 4
    r = await store.call("POST", f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret",
                         json={"expires_in_s": overlap_s}, headers={"Idempotency-Key": new_id("k")})
    assert r.status == 200, r.body
    rotated_at = time.time()
    new = r.body["secret"]
    assert new.startswith("whsec_") and new != old and r.body["id"] == endpoint["id"]
    listed = await store.call("GET", f"/v1/webhook_endpoints/{endpoint['id']}")
    assert listed.status == 200 and "secret" not in listed.body  # shown only in the create and rotate answers

    await checkout(store, shop.big)
    during = (await until(lambda: receiver.delivered("order.confirmed"), timeout=WAIT_S))[0]
    header = during.headers["Harmon-Signature"]
    # signed inside the overlap, or this step would prove nothing
    assert time.time() < rotated_at + overlap_s, f"the event took over {overlap_s} s: the overlap was not seen"
    assert len(v1s(header)) == 2
    assert verify(during.body, header, [old]) == verify(during.body, header, [new]) == during.event
    assert by_hand(during.body, header, old) and by_hand(during.body, header, new)

    await until(lambda: time.time() > rotated_at + overlap_s + 1, timeout=overlap_s + 5, message="overlap over")
    await checkout(store, shop.small)
    after = (await until(lambda: receiver.delivered("order.confirmed")[1:], timeout=WAIT_S))[0]
    header = after.headers["Harmon-Signature"]
    assert len(v1s(header)) == 1 and verify(after.body, header, [new]) == after.event
    with pytest.raises(SignatureError):
        verify(after.body, header, [old])


# ---- safety -------------------------------------------------------------------------------------------------------

LIVE_REFUSED = [
    "http://example.com/hooks",           # live mode: https only
    "https://127.0.0.1/hooks",            # loopback
    "https://10.0.0.1/hooks",             # private
    "https://169.254.169.254/latest/meta-data",  # link-local (the cloud metadata address)
    "https://localhost/hooks",            # a hostname that resolves to loopback
]


async def test_live_mode_refuses_http_and_non_public_addresses_and_test_mode_takes_loopback(stack, store, shop):
    live_key = await issue_key(stack, shop.tenant_id, True, "secret")
    for url in LIVE_REFUSED:
        r = await store.call("POST", "/v1/webhook_endpoints", key=live_key,
                             json={"url": url, "enabled_events": ["order.confirmed"]})
        assert (r.status, r.error.get("code"), r.error.get("param")) == (400, "url_invalid", "url"), (url, r.body)
    listed = await store.call("GET", "/v1/webhook_endpoints", key=live_key)
    assert listed.status == 200 and listed.body["data"] == []  # nothing was made

    # a public literal address is taken in live mode (no DNS needed), and an update is checked again
    public = await register(store, "https://1.1.1.1/hooks", ["order.confirmed"], key=live_key)
    try:
        for url in LIVE_REFUSED:
            r = await store.call("POST", f"/v1/webhook_endpoints/{public['id']}", key=live_key, json={"url": url})
            assert (r.status, r.error.get("code"), r.error.get("param")) == (400, "url_invalid", "url"), (url, r.body)
        unchanged = await store.call("GET", f"/v1/webhook_endpoints/{public['id']}", key=live_key)
        assert unchanged.body["url"] == "https://1.1.1.1/hooks"
    finally:
        assert (await store.call("DELETE", f"/v1/webhook_endpoints/{public['id']}", key=live_key)).status == 200

    # test mode may receive on loopback; the live key never sees that endpoint
    made = await register(store, "http://127.0.0.1:9/hooks", ["*"])
    assert (await store.call("GET", f"/v1/webhook_endpoints/{made['id']}", key=live_key)).status == 404
    assert (await store.call("GET", f"/v1/webhook_endpoints/{made['id']}")).body["livemode"] is False


async def test_an_endpoint_gets_only_its_own_tenant_and_mode_s_events(stack, store, shop, erp, new_tenant, receivers,
                                                                     until):
    from .conftest import erp_settled  # noqa: PLC0415

    receiver = await receivers()
    endpoint = await register(store, receiver.url, ["*"])
    live = shop_of(shop)
    live.secret_key = await issue_key(stack, shop.tenant_id, True, "secret")
    await publish_shop(erp, live, livemode=True)
    other_keys = await new_tenant()
    other = shop_of(other_keys)
    await publish_shop(erp, other)
    await erp_settled(stack.bootstrap)
    live_store, other_store = Storefront(store.http, "", live.secret_key), Storefront(store.http, "", other.secret_key)
    other_receiver = await receivers()
    await register(other_store, other_receiver.url, ["*"])

    live_order = await checkout(live_store, live.big)  # same tenant, live mode
    other_order = await checkout(other_store, other.big)  # another tenant, test mode
    mine = await checkout(store, shop.big)
    await until(lambda: receiver.delivered("order.confirmed"), timeout=WAIT_S, message="the test-mode order")
    await until(lambda: other_receiver.delivered("order.confirmed"), timeout=WAIT_S, message="the other tenant's")
    # the other tenant's event reached its own endpoint, and by then ours had only our own
    seen = {g.event["data"]["object"]["id"] for g in receiver.got}
    assert seen == {mine["id"]} and live_order["id"] not in seen and other_order["id"] not in seen
    assert {g.event["data"]["object"]["id"] for g in other_receiver.got} == {other_order["id"]}
    assert all(g.event["livemode"] is False for g in receiver.got)
    # and the API agrees: another tenant's event is not ours to read
    r = await store.call("GET", f"/v1/events/{other_receiver.got[0].event['id']}")
    assert r.status == 404, r.body
    assert all(d["endpoint"] == endpoint["id"] for d in await deliveries(store, endpoint["id"]))


# ---- harmon webhooks listen, on the real stack -----------------------------------------------------------------

async def test_harmon_webhooks_listen_prints_the_verified_order_confirmed_and_deletes_its_endpoint(
        stack, store, shop, until, tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "credentials.json").write_text(json.dumps({"base_url": stack.base_url, "secret_key": shop.secret_key}))
    (dev / "stack.lock").write_text(str(os.getpid()))  # this process stands in for harmon dev's supervisor
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH"))
                                                       if p)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "libs.stack.cli", "webhooks", "listen", "--data-dir", str(dev), "--json",
        "--events", "order.confirmed", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        cwd=PROJECT_ROOT)
    try:
        ready = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert ready.startswith("Ready: http://127.0.0.1:"), ready
        endpoint_id = re.search(r"endpoint (we_\w+)", ready).group(1)
        listed = await store.call("GET", "/v1/webhook_endpoints")
        assert [e["id"] for e in listed.body["data"]] == [endpoint_id]
        order = await checkout(store, shop.big)
        event = json.loads(await asyncio.wait_for(proc.stdout.readline(), WAIT_S))
        assert event["type"] == "order.confirmed" and event["data"]["object"]["id"] == order["id"]
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    r = await store.call("GET", f"/v1/webhook_endpoints/{endpoint_id}")
    assert r.status == 404, r.body


def readme_receiver(port: int) -> str:
    """The README's `webhook-receiver` block, on `port` instead of 4242 (the only change)."""
    text = (PROJECT_ROOT / "README.md").read_text()
    block = re.search(r"```python\n(# webhook-receiver.*?)```", text, re.S)
    assert block, "README.md has no `# webhook-receiver` python block"
    code = block.group(1)
    assert "port=4242" in code
    return code.replace("port=4242", f"port={port}")


async def test_the_readme_receiver_verifies_a_real_delivery(stack, store, shop, until, tmp_path):
    port = free_port()
    script = tmp_path / "receiver.py"
    script.write_text(readme_receiver(port))
    endpoint = await register(store, f"http://127.0.0.1:{port}/webhooks", ["order.confirmed"])
    env = {**os.environ, "WEBHOOK_SECRET": endpoint["secret"], "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), env=env, cwd=tmp_path,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        order = await checkout(store, shop.big)  # attempts before the receiver listens are retried
        printed = b""
        while order["id"].encode() not in printed:
            printed += await asyncio.wait_for(proc.stdout.readline(), WAIT_S)
        assert printed.decode().splitlines()[-1] == f"order.confirmed {order['id']}"

        async def delivered():
            listed = await deliveries(store, endpoint["id"])
            return listed if listed and listed[0]["outcome"] == "delivered" else None
        assert (await until(delivered, timeout=WAIT_S))[0]["status_code"] == 204
    finally:
        proc.terminate()
        await proc.wait()
