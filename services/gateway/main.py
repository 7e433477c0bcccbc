"""`python -m services.gateway`: serve the HTTP API on host:port; SIGTERM finishes requests in flight, then exits."""

import asyncio
import logging
import os
import signal

from aiohttp import web
from pydantic import ValidationError

from libs.runtime import tracing
from libs.runtime.logs import refuse_to_start, setup_logging

from .app import create_app
from .config import Settings
from .edge import GatewayRunner, quiet_aiohttp_server_log
from .hold import HOLD
from .state import SERVICE

log = logging.getLogger("harmon.gateway")


def load_settings() -> Settings:
    """Settings from the environment, or exit naming what is wrong (never echoing a value: it may be a secret)."""
    try:
        return Settings()
    except ValidationError as e:
        refuse_to_start("gateway", e, "HARMON_GATEWAY_")


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    app = create_app(settings)
    quiet_aiohttp_server_log()
    loop = asyncio.get_running_loop()  # harmon dev holds new requests while it restarts its broker (hold.py)
    loop.add_signal_handler(signal.SIGUSR2, app[HOLD].start)
    loop.add_signal_handler(signal.SIGHUP, app[HOLD].release)
    loop.add_signal_handler(signal.SIGUSR1, lambda: app[SERVICE].link.expect_planned_restart())
    runner = GatewayRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=settings.checkout_timeout_s + 5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("gateway listening on http://%s:%d (instance %s)", settings.host, port, settings.instance_id)
        if settings.port_file:
            tmp = settings.port_file.with_suffix(".tmp")
            tmp.write_text(f"{port}\n")
            os.replace(tmp, settings.port_file)
        await stop.wait()
        app[SERVICE].extras["draining"] = True  # /readyz fails first
        log.info("gateway draining")
    finally:
        await runner.cleanup()  # stops listening, waits for requests in flight, then closes broker and database
        log.info("gateway stopped")


def main() -> None:
    settings = load_settings()
    setup_logging("gateway", settings.log_level, settings.log_format, settings.instance_id)
    tracing.configure("gateway", settings.instance_id, http_server=True)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    try:
        asyncio.run(run())
    finally:
        tracing.shutdown()
