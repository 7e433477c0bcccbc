"""CORS: a browser origin (an `Origin` other than the API's own) may use only publishable keys.

A small middleware rather than aiohttp-cors: that library decides per route and origin, but here the
answer depends on the key the request carries (publishable: allowed; secret: 403 at the key-kind step,
in auth.py), and preflights must be answered before authentication, from the routes' @endpoint.

Routes that accept publishable keys (the catalog) answer browser origins with
`Access-Control-Allow-Origin: <origin>` — errors too, so a page can read a 401 or a 429 and its
`Retry-After` — and `Vary: Origin` always. Other routes never carry CORS headers. A preflight is public:
204 with the allowed methods and headers for a publishable route and a method it serves; otherwise 204
without any CORS header, which the browser takes as a refusal (a preflight carries no key, so no
catalogue error fits it, and it tells nothing about the route).
"""

from aiohttp import hdrs, web
from yarl import URL

from .state import (IDEMPOTENCY_KEY_HEADER, KIND_PUBLISHABLE, REPLAYED_HEADER, REQUEST_ID_HEADER, SHOPPER_HEADER,
                    endpoint_of)
from .validators import check_origin

__all__ = ["browser_origin", "check_origin", "cors_middleware", "own_origin"]

ALLOW_HEADERS = ("Authorization", "Content-Type", SHOPPER_HEADER, IDEMPOTENCY_KEY_HEADER, "If-Match",
                 "X-Request-Id")
EXPOSE_HEADERS = (REQUEST_ID_HEADER, "Retry-After", REPLAYED_HEADER, "ETag")
MAX_AGE_S = 600


def _same(a: str, b: str) -> bool:
    try:
        x, y = URL(a), URL(b)
    except ValueError:
        return False
    return bool(x.scheme and x.host) and (x.scheme.lower(), (x.host or "").lower(), x.port) == \
        (y.scheme.lower(), (y.host or "").lower(), y.port)


def own_origin(request: web.Request, public_origin: str | None) -> str:
    return public_origin or f"{request.scheme}://{request.host}"


def browser_origin(request: web.Request, public_origin: str | None) -> str | None:
    """The request's `Origin` if it is a cross-origin (browser) request, else None."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None or _same(origin, own_origin(request, public_origin)):
        return None
    return origin


def _publishable(handler: object) -> bool:
    endpoint = getattr(handler, "endpoint", None)
    return endpoint is not None and KIND_PUBLISHABLE in endpoint.keys


async def _preflight(request: web.Request, origin: str) -> web.Response:
    wanted = request.headers[hdrs.ACCESS_CONTROL_REQUEST_METHOD].strip().upper()
    answer = web.Response(status=204, headers={hdrs.VARY: "Origin"})
    match = await request.app.router.resolve(request.clone(method=wanted))
    if match.http_exception is not None or not _publishable(match.handler) or match.route.resource is None:
        return answer  # no CORS headers: the browser will not send the request
    methods = sorted({r.method for r in match.route.resource if _publishable(r.handler)})
    answer.headers.update({
        hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
        hdrs.ACCESS_CONTROL_ALLOW_METHODS: ", ".join(methods),
        hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ", ".join(ALLOW_HEADERS),
        hdrs.ACCESS_CONTROL_MAX_AGE: str(MAX_AGE_S),
    })
    return answer


def cors_middleware(public_origin: str | None) -> web.middleware:
    """Preflights answered here (before auth); CORS headers on the answers of publishable routes."""

    @web.middleware
    async def cors(request: web.Request, handler) -> web.StreamResponse:
        origin = browser_origin(request, public_origin)
        if origin is not None and request.method == hdrs.METH_OPTIONS \
                and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers:
            return await _preflight(request, origin)
        response = await handler(request)
        endpoint = endpoint_of(request)
        if endpoint is not None and KIND_PUBLISHABLE in endpoint.keys:
            response.headers.add(hdrs.VARY, "Origin")
            if origin is not None:
                response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
                response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = ", ".join(EXPOSE_HEADERS)
        return response

    return cors
