"""`harmon webhooks listen` against a fake gateway this test starts (aiohttp on 127.0.0.1): it registers its
receiver, verifies signed POSTs with harmon_webhooks, prints them, forwards them, and deletes the endpoint on
Ctrl-C. The signatures here are made by hand from the wire format (docs/api.md, "Webhooks": HMAC-SHA256 of
"<t>.<raw body>"), not with harmon_webhooks.sign, so the receiver is checked against the format itself.
tests/e2e/test_webhooks.py runs it against the real stack, with notifier signing.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from libs.stack.cli import build_parser, dev_summary
from libs.stack.supervisor import Stack
from libs.stack.webhooks import DESCRIPTION, Api, Listener

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + "A" * 43
KEY = "hk_test_sec_" + "k" * 32
ENDPOINT = "we_01TESTLISTEN000000000000"


def signature(body: bytes, secret: str = SECRET, t: int | None = None) -> str:
    t = int(time.time()) if t is None else t
    return f"t={t},v1={hmac.new(secret.encode(), f'{t}.'.encode() + body, hashlib.sha256).hexdigest()}"


def event(event_type: str = "order.confirmed", event_id: str = "evt_01TESTEVENT0000000000000") -> bytes:
    body = {"id": event_id, "object": "event", "type": event_type, "created": "2026-01-05T10:00:00Z",
            "livemode": False, "data": {"object": {"id": "ord_01TESTORDER", "object": "order", "status": "confirmed"}}}
    return json.dumps(body).encode()


@dataclass
class FakeGateway:
    """POST /v1/webhook_endpoints and DELETE /v1/webhook_endpoints/{id}, as the gateway answers them."""

    base_url: str = ""
    created: list[dict] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    refuse: tuple[int, dict] | None = None


@pytest_asyncio.fixture
async def gateway() -> AsyncIterator[FakeGateway]:
    fake = FakeGateway()

    async def create(request: web.Request) -> web.Response:
        fake.auth.append(request.headers.get("Authorization", ""))
        if fake.refuse:
            return web.json_response(fake.refuse[1], status=fake.refuse[0])
        body = await request.json()
        fake.created.append(body)
        return web.json_response({"id": ENDPOINT, "object": "webhook_endpoint", "livemode": False, "url": body["url"],
                                  "enabled_events": body["enabled_events"], "description": body.get("description"),
                                  "status": "enabled", "created": "2026-01-05T10:00:00Z", "secret": SECRET},
                                 status=201)

    async def delete(request: web.Request) -> web.Response:
        fake.auth.append(request.headers.get("Authorization", ""))
        fake.deleted.append(request.match_info["id"])
        return web.json_response({"id": request.match_info["id"], "object": "webhook_endpoint", "deleted": True})

    app = web.Application()
    app.router.add_post("/v1/webhook_endpoints", create)
    app.router.add_delete("/v1/webhook_endpoints/{id}", delete)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield fake
    finally:
        await runner.cleanup()


@pytest.fixture
def dev_dir(tmp_path: Path, gateway: FakeGateway) -> Path:
    """A running `harmon dev`'s data dir as the command finds it: this process holds its stack.lock."""
    path = tmp_path / "dev"
    path.mkdir()
    (path / "credentials.json").write_text(json.dumps({"base_url": gateway.base_url, "secret_key": KEY}))
    (path / "stack.lock").write_text(str(os.getpid()))
    return path


async def post(url: str, body: bytes, header: str | None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", "Harmon-Event-Id": "evt_x"}
    if header is not None:
        headers["Harmon-Signature"] = header
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def test_listener_registers_verifies_prints_and_deletes(gateway: FakeGateway) -> None:
    out = io.StringIO()
    listener = Listener(Api(gateway.base_url, KEY), ["order.confirmed", "invoice.issued"], out=out)
    await listener.start()
    try:
        assert gateway.created == [{"url": listener.url, "enabled_events": ["order.confirmed", "invoice.issued"],
                                    "description": DESCRIPTION}]
        assert listener.url.startswith("http://127.0.0.1:") and gateway.auth == [f"Bearer {KEY}"]

        body = event()
        assert await post(listener.url, body, signature(body)) == (200, {"received": True})
        printed = out.getvalue().splitlines()
        assert len(printed) == 1 and "order.confirmed" in printed[0] and "evt_01TESTEVENT0000000000000" in printed[0]
        assert "order ord_01TESTORDER confirmed" in printed[0]

        # a redelivery is printed again, marked
        assert (await post(listener.url, body, signature(body)))[0] == 200
        assert out.getvalue().splitlines()[-1].endswith("(again)")

        # what does not verify is refused and never printed as an event
        before = len(out.getvalue().splitlines())
        forged = event(event_id="evt_01FORGED00000000000000000")
        for header in (signature(forged, secret="whsec_other"), signature(forged, t=int(time.time()) - 3600),
                       signature(body), None):  # wrong secret, too old, another body's signature, none
            status, answer = await post(listener.url, forged, header)
            assert status == 400 and "signature" in answer["error"]
        lines = out.getvalue().splitlines()[before:]
        assert len(lines) == 4 and all("refused a POST" in ln and "evt_01FORGED" not in ln for ln in lines)
    finally:
        await listener.stop()
    assert gateway.deleted == [ENDPOINT]
    with pytest.raises(aiohttp.ClientConnectionError):  # the receiver is gone too
        await post(listener.url, body, signature(body))


async def test_listener_forwards_the_same_bytes_and_signature(gateway: FakeGateway) -> None:
    got: list[tuple[bytes, dict]] = []

    async def app_receiver(request: web.Request) -> web.Response:
        got.append((await request.read(), dict(request.headers)))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks", app_receiver)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    target = f"http://127.0.0.1:{runner.addresses[0][1]}/hooks"
    out = io.StringIO()
    try:
        async with Listener(Api(gateway.base_url, KEY), ["*"], forward_to=target, out=out) as listener:
            body = event("invoice.issued")
            header = signature(body)
            assert await post(listener.url, body, header) == (200, {"received": True, "forwarded": "204"})
    finally:
        await runner.cleanup()
    assert len(got) == 1 and got[0][0] == body and got[0][1]["Harmon-Signature"] == header
    assert out.getvalue().rstrip().endswith(f"-> {target} 204")
    assert gateway.created[0]["enabled_events"] == ["*"] and gateway.deleted == [ENDPOINT]


async def test_harmon_webhooks_listen_prints_json_and_deletes_on_ctrl_c(gateway: FakeGateway, dev_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH"))
                                                       if p)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "libs.stack.cli", "webhooks", "listen", "--data-dir", str(dev_dir), "--json",
        "--events", "order.confirmed,invoice.issued", "--events", "order.cancelled",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=PROJECT_ROOT)
    try:
        ready = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert ready.startswith("Ready: http://127.0.0.1:") and ENDPOINT in ready, ready
        url = ready.split()[1]
        assert gateway.created == [{"url": url, "enabled_events": ["order.confirmed", "invoice.issued",
                                                                   "order.cancelled"], "description": DESCRIPTION}]
        body = event()
        assert (await post(url, body, signature(body)))[0] == 200
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert json.loads(line) == json.loads(body)
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert gateway.deleted == [ENDPOINT]
    assert "endpoint deleted" in (await proc.stderr.read()).decode()
    assert KEY not in (await proc.stdout.read()).decode()


async def harmon(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    args = build_parser().parse_args(["webhooks", "listen", *argv])
    code = await args.run(args)
    out, err = capsys.readouterr()
    return code, out, err


async def test_listen_refusals(gateway: FakeGateway, dev_dir: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await harmon(capsys, "--data-dir", str(tmp_path / "nothing"))
    assert code == 2 and "no `harmon dev` is running" in err
    code, _, err = await harmon(capsys, "--data-dir", str(dev_dir), "--events", "order.shipped")
    assert code == 2 and "unknown event types order.shipped" in err
    code, _, err = await harmon(capsys, "--api", gateway.base_url)
    assert code == 2 and "HARMON_API_KEY" in err
    gateway.refuse = (403, {"error": {"type": "invalid_request_error", "code": "api_key_kind_forbidden",
                                      "message": "a publishable key cannot do this"}})
    code, _, err = await harmon(capsys, "--data-dir", str(dev_dir))
    assert code == 1 and "403 api_key_kind_forbidden: a publishable key cannot do this" in err
    assert gateway.created == [] and gateway.deleted == []


def test_harmon_dev_says_how_to_receive_webhooks(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "dev", gateway_port=8080)
    credentials = {"tenant_id": "ten_x", "currency": "JMD", "secret_key": KEY, "publishable_key": "hk_test_pub_" + "p" * 32,
                   "customers": [{"id": "cus_x", "name": "Shop", "terms": "cod", "available_credit": 100}]}
    text = dev_summary(stack, credentials)
    assert f"harmon webhooks listen --data-dir {stack.data_dir}" in text
    assert "curl -sS -X POST http://127.0.0.1:8080/v1/webhook_endpoints" in text
    assert KEY not in text  # the key is read from credentials.json by the command, never printed
