"""The gateway's edge over a raw socket, in-process: aiohttp's parser refusals come back in the one error shape.

This pins the override of aiohttp's internals (services/gateway/edge.py): after an aiohttp upgrade that
stops calling it, these fail. The whole gateway is tested the same way in tests/e2e/test_hostile_input.py.
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from services.gateway.edge import EdgeRequestHandler, GatewayRunner, quiet_aiohttp_server_log

KEY = "hk_test_sec_" + "Kq3" * 14 + "Z"
MALFORMED = f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\x01\r\n\r\n"


@pytest_asyncio.fixture
async def runner() -> AsyncIterator[GatewayRunner]:
    app = web.Application()

    async def hello(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def broken(_: web.Request) -> web.Response:
        raise RuntimeError(f"a bug quoting {KEY}")

    app.router.add_get("/", hello)
    app.router.add_get("/broken", broken)
    runner = GatewayRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner
    finally:
        await runner.cleanup()


@pytest.fixture
def port(runner: GatewayRunner) -> int:
    return runner.addresses[0][1]


async def exchange(port: int, raw: str) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw.encode("latin-1"))
        await writer.drain()
        head, _, body = (await asyncio.wait_for(reader.read(), 10)).partition(b"\r\n\r\n")
    finally:
        writer.close()
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


async def test_the_runner_serves_with_the_edge_protocol(runner, port):
    status, _, body = await exchange(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (status, json.loads(body)) == (200, {"ok": True})
    assert [type(c) for c in runner.server.connections] in ([], [EdgeRequestHandler])
    assert type(runner.server()) is EdgeRequestHandler


async def test_a_refused_header_is_the_one_error_shape_without_its_bytes(port, caplog):
    quiet_aiohttp_server_log()
    with caplog.at_level(logging.DEBUG):
        status, headers, body = await exchange(port, MALFORMED)
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "header_invalid", None)
    assert error["request_id"] == headers["request-id"] and headers["request-id"].startswith("req_")
    assert KEY[12:] not in body.decode("latin-1") and KEY[12:] not in caplog.text
    assert "refused a malformed request from 127.0.0.1 (BadHttpMessage)" in caplog.text


async def test_an_error_escaping_the_app_is_a_500_in_the_shape(port, caplog):
    with caplog.at_level(logging.DEBUG):
        status, headers, body = await exchange(port, "GET /broken HTTP/1.1\r\nHost: x\r\n\r\n")
    error = json.loads(body)["error"]
    assert (status, error["code"], error["request_id"]) == (500, "internal_error", headers["request-id"])
    assert KEY not in body.decode()


def test_aiohttp_server_records_keep_only_the_error_class():
    quiet_aiohttp_server_log()
    quiet_aiohttp_server_log()  # once is enough
    server_log = logging.getLogger("aiohttp.server")
    assert len(server_log.filters) == 1
    record = server_log.makeRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s",
                                   ("127.0.0.1",), (ValueError, ValueError(f"b'Bearer {KEY}'"), None))
    assert server_log.filters[0].filter(record)
    assert (record.getMessage(), record.exc_info) == ("Error handling request from 127.0.0.1 (ValueError)", None)
