"""A short hold on new API requests, so the embedded broker can be restarted while nothing is in flight.

The embedded broker keeps every record in memory and can delete none, so `harmon dev` restarts it
when it has grown and the stack is quiet (docs/operations.md, "The embedded broker's bound"). Under
steady load the stack is never quiet by itself: the supervisor then sends the gateway SIGUSR2, new
`/v1` requests wait here while those already admitted finish, the broker restarts once every service
says `quiet`, and SIGHUP (or the gateway's own broker link coming back) lets the waiting requests go
on. A hold ends by itself after `max_s`, so a supervisor that dies mid-hold cannot stall the API.
Health routes are never held.
"""

import asyncio
import logging
import time

from aiohttp import web

log = logging.getLogger("harmon.gateway.hold")


class Hold:
    def __init__(self, max_s: float):
        self.max_s = max_s
        self.admitted = 0  # /v1 requests past the hold and not yet answered
        self._open = asyncio.Event()
        self._open.set()
        self._since = 0.0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def holding(self) -> bool:
        return not self._open.is_set()

    def start(self) -> None:
        if self.holding:
            return
        self._since = time.monotonic()
        self._open.clear()
        self._timer = asyncio.get_running_loop().call_later(self.max_s, self.release, "its time ran out")
        log.warning("holding new requests (up to %.0f s) for a broker restart; %d in flight", self.max_s, self.admitted)

    def release(self, why: str = "released") -> None:
        if not self.holding:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._open.set()
        log.warning("requests flow again after a %.2f s hold (%s)", time.monotonic() - self._since, why)

    def middleware(self) -> web.middleware:
        @web.middleware
        async def hold(request: web.Request, handler) -> web.StreamResponse:
            if not request.path.startswith("/v1/"):
                return await handler(request)
            if self.holding:
                await self._open.wait()
            self.admitted += 1
            try:
                return await handler(request)
            finally:
                self.admitted -= 1

        return hold


HOLD = web.AppKey("hold", Hold)  # new requests wait while the embedded broker restarts
