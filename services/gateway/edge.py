"""Below the middlewares: what aiohttp answers itself — a request its parser refuses (control characters, a
header over 8 KB, bare CR/LF, folded or conflicting headers, too many) — in the one error shape.

aiohttp has no public hook for these: its protocol (RequestHandler.handle_error) answers plain text that
echoes the offending bytes (a key, a token) and logs them with the traceback. `GatewayRunner` builds its
server with `EdgeRequestHandler`, which answers 400 header_invalid with a fresh Request-Id and logs only
the error's class. This reaches into aiohttp's internals (AppRunner._make_server, Server._kwargs), read
in 3.11 to 3.14: pyproject.toml bounds the version and tests/integration/test_gateway_edge.py fails if
the override stops being called.
"""

import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_request import BaseRequest

from libs.contracts.ids import REQUEST, new_id
from libs.runtime.logs import request_id_var

from .errors import header_invalid, internal_error, upstream_timeout
from .state import REQUEST_ID_HEADER

log = logging.getLogger("harmon.gateway.edge")


class EdgeRequestHandler(web.RequestHandler):
    """aiohttp's protocol, with its own error answers replaced by ours."""

    __slots__ = ()

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # `message` is aiohttp's text for the client: it quotes the bytes it refused, so it is never used
        if request.writer.output_size > 0:  # as aiohttp: a response already started cannot be replaced
            raise ConnectionError("the response was sent already; cannot send an error answer")
        request_id = new_id(REQUEST)
        token = request_id_var.set(request_id)
        try:
            if isinstance(exc, HttpProcessingError):
                log.info("refused a malformed request from %s (%s)", request.remote, type(exc).__name__)
                error = header_invalid()
            elif status == 504:
                log.warning("a request handler timed out below the error middleware")
                error = upstream_timeout()
            else:
                log.error("unhandled error below the error middleware (%s)", type(exc).__name__, exc_info=exc)
                error = internal_error()
        finally:
            request_id_var.reset(token)
        response = error.response(request_id)
        response.headers[REQUEST_ID_HEADER] = request_id
        response.force_close()
        return response


class EdgeServer(web.Server):
    def __call__(self) -> EdgeRequestHandler:
        return EdgeRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """web.AppRunner whose connections are served by EdgeRequestHandler."""

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's startup, as AppRunner does
        return EdgeServer(plain.request_handler, request_factory=plain.request_factory,
                          handler_cancellation=plain.handler_cancellation, loop=plain._loop, **plain._kwargs)


class ErrorClassOnly(logging.Filter):
    """For aiohttp.server: an exception's text may quote a request's bytes; keep the message and the class."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()} ({type(record.exc_info[1]).__name__})"
            record.args, record.exc_info, record.exc_text = None, None, None
        return True


def quiet_aiohttp_server_log() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ErrorClassOnly) for f in server_log.filters):
        server_log.addFilter(ErrorClassOnly())
