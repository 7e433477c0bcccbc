"""The gateway's hold for a planned broker restart (services/gateway/hold.py): new /v1 requests wait while it
holds, those already admitted are counted until they finish, health routes never wait, and a hold ends by
itself after its maximum."""

import asyncio
import time

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.gateway.hold import Hold


async def served(hold: Hold, gate: asyncio.Event) -> TestServer:
    async def slow(_: web.Request) -> web.Response:
        await gate.wait()
        return web.json_response({"ok": True})

    async def fast(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[hold.middleware()])
    app.router.add_get("/v1/slow", slow)
    app.router.add_get("/v1/fast", fast)
    app.router.add_get("/readyz", fast)
    server = TestServer(app)
    await server.start_server()
    return server


async def test_held_requests_wait_for_the_release_and_admitted_ones_are_counted():
    hold, gate = Hold(max_s=10), asyncio.Event()
    server = await served(hold, gate)
    try:
        async with aiohttp.ClientSession(str(server.make_url(""))) as http:
            admitted = asyncio.create_task(http.get("/v1/slow"))
            while hold.admitted == 0:
                await asyncio.sleep(0.01)
            hold.start()
            held = asyncio.create_task(http.get("/v1/fast"))
            async with http.get("/readyz") as r:  # health is never held
                assert r.status == 200
            await asyncio.sleep(0.2)
            assert not held.done() and hold.admitted == 1  # waiting, and not counted as in flight
            gate.set()
            assert (await admitted).status == 200
            while hold.admitted:
                await asyncio.sleep(0.01)
            assert not held.done()
            hold.release()
            assert (await held).status == 200 and not hold.holding
    finally:
        await server.close()


async def test_a_hold_ends_by_itself_after_its_maximum():
    hold, gate = Hold(max_s=0.3), asyncio.Event()
    gate.set()
    server = await served(hold, gate)
    try:
        async with aiohttp.ClientSession(str(server.make_url(""))) as http:
            hold.start()
            started = time.monotonic()
            async with http.get("/v1/fast") as r:
                assert r.status == 200
            assert 0.25 <= time.monotonic() - started < 2.0
            assert not hold.holding
    finally:
        await server.close()
