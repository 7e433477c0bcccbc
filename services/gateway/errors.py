"""The one error shape, the catalogue of status/type per code, and the middleware that renders every failure."""

import logging
from typing import Any

from aiohttp import web

from libs.contracts.base import Failure
from libs.runtime.logs import request_id_var
from libs.runtime.failures import FailureClass, classify

log = logging.getLogger("harmon.gateway.errors")

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
PERMISSION = "permission_error"
IDEMPOTENCY = "idempotency_error"
RATE_LIMIT = "rate_limit_error"
API_ERROR = "api_error"


class ApiError(Exception):
    """An answer in the catalogue's words: `extra` goes inside the error object, `siblings` beside it."""

    def __init__(self, status: int, type: str, code: str, message: str, param: str | None = None,
                 extra: dict[str, Any] | None = None, siblings: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.type, self.code, self.message, self.param = status, type, code, message, param
        self.extra, self.siblings, self.headers = extra or {}, siblings or {}, headers or {}

    def body(self, request_id: str | None) -> dict[str, Any]:
        error = {"type": self.type, "code": self.code, "message": self.message, "param": self.param,
                 **self.extra, "request_id": request_id}
        return {"error": error, **self.siblings}

    def response(self, request_id: str | None) -> web.Response:
        return web.json_response(self.body(request_id), status=self.status, headers=self.headers)


def invalid(code: str, message: str, param: str | None = None) -> ApiError:
    return ApiError(400, INVALID_REQUEST, code, message, param)


def header_invalid() -> ApiError:
    """What the HTTP parser refused (services/gateway/edge.py); never quoting the bytes, which may hold a key."""
    return ApiError(400, INVALID_REQUEST, "header_invalid",
                    "the request line or a header is malformed (control characters, over 8 KB, bare CR or LF, "
                    "folded, repeated Content-Length, Content-Length with Transfer-Encoding, or too many headers); "
                    "nothing was read")


def body_invalid() -> ApiError:
    return invalid("body_invalid", "the body could not be read: its chunked framing or Content-Encoding is broken, "
                                   "or it was cut short")


def internal_error() -> ApiError:
    return ApiError(500, API_ERROR, "internal_error", "something went wrong on our side; it has been logged")


RETRY_AFTER_S = 2


def service_unavailable() -> ApiError:
    return ApiError(503, API_ERROR, "service_unavailable",
                    f"a service this request needs is unavailable; retry in {RETRY_AFTER_S} s "
                    "(with the same Idempotency-Key, if it had one)",
                    headers={"Retry-After": str(RETRY_AFTER_S)})


def _causes(e: BaseException):
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = getattr(e, "orig", None) or e.__cause__ or e.__context__  # SQLAlchemy wraps the driver's error in .orig


def unavailable_dependency(e: BaseException) -> str | None:
    """If `e` means a dependency (PostgreSQL, the broker) is down or unreachable: the error's class names
    (outermost ← innermost), for the log; else None."""
    chain = list(_causes(e))
    # the runtime's own test of "a dependency is down" (libs/runtime/failures.py), on each link of the chain
    if not any(classify(c) is FailureClass.DOWN for c in chain):
        return None
    outer, inner = type(chain[0]).__name__, type(chain[-1]).__name__
    return outer if outer == inner else f"{outer} ← {inner}"


def upstream_timeout() -> ApiError:
    return ApiError(504, API_ERROR, "upstream_timeout",
                    "a service did not answer in time; retrying with the same Idempotency-Key is safe")


# A service's Failure.code → (HTTP status, error type). Codes outside it are a bug: 500, message withheld.
CATALOGUE: dict[str, tuple[int, str]] = {
    "resource_missing": (404, INVALID_REQUEST),
    "cart_frozen": (409, INVALID_REQUEST),
    "cart_checked_out": (409, INVALID_REQUEST),
    "cart_version_conflict": (409, INVALID_REQUEST),
    "order_not_cancellable": (409, INVALID_REQUEST),  # with the order's `status`
    "sku_unknown": (400, INVALID_REQUEST),
    "uom_unknown": (400, INVALID_REQUEST),
    "quantity_invalid": (400, INVALID_REQUEST),
    "amount_too_large": (400, INVALID_REQUEST),
    "parameter_invalid": (400, INVALID_REQUEST),
    "parameter_missing": (400, INVALID_REQUEST),
    "parameter_unknown": (400, INVALID_REQUEST),
    "url_invalid": (400, INVALID_REQUEST),  # a webhook endpoint's URL notifier may not use (param `url`)
    "upstream_timeout": (504, API_ERROR),
    "internal_error": (500, API_ERROR),  # a service refused a message that fails every time (dead-lettered)
}


def from_failure(failure: Failure) -> ApiError:
    entry = CATALOGUE.get(failure.code)
    if entry is None:
        log.error("service answered with a code outside the catalogue: %s (%s)", failure.code, failure.message)
        return internal_error()
    status, type_ = entry
    return ApiError(status, type_, failure.code, failure.message, failure.param, extra=failure_extra(failure))


def failure_extra(failure: Failure) -> dict[str, Any] | None:
    """What a code carries beside its message, inside the error object (docs/api.md, "Errors")."""
    if failure.code == "cart_checked_out":
        return {"order_id": failure.order_id}
    if failure.code == "order_not_cancellable":
        return {"status": failure.status}
    return None


# aiohttp's own refusals (no route, wrong method, body over client_max_size) in the catalogue's words
def from_http_exception(exc: web.HTTPException, request: web.Request) -> ApiError:
    if exc.status == 404:
        return ApiError(404, INVALID_REQUEST, "resource_missing", f"no such route: {request.method} {request.path}")
    if exc.status == 405:
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
        return ApiError(405, INVALID_REQUEST, "method_not_allowed", f"{request.method} is not allowed here",
                        headers={"Allow": allowed} if allowed else None)
    if exc.status == 413:
        return ApiError(413, INVALID_REQUEST, "body_too_large", "the request body is too large")
    if exc.status < 500:
        return ApiError(exc.status, INVALID_REQUEST, "parameter_invalid", exc.reason or "invalid request")
    return internal_error()


def error_middleware() -> web.middleware:
    """Every exception leaves as the one error shape; stack traces go to the log, never to the client."""

    @web.middleware
    async def errors(request: web.Request, handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as e:
            return e.response(request_id_var.get())
        except web.HTTPException as e:
            if e.status < 400:
                raise  # redirects and the like pass through
            return from_http_exception(e, request).response(request_id_var.get())
        except Exception as e:
            dependency = unavailable_dependency(e)
            if dependency is not None:  # not a bug of ours: no traceback, and the client may retry
                log.warning("%s %s: a dependency is unavailable (%s); answered 503", request.method, request.path,
                            dependency)
                return service_unavailable().response(request_id_var.get())
            log.exception("unhandled error in %s %s", request.method, request.path)
            return internal_error().response(request_id_var.get())

    return errors
