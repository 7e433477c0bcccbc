"""POST /v1/shopper_tokens: a storefront backend signs a customer in."""

from aiohttp import web

from libs.contracts.fields import CustomerId

from ..auth import TOKENS, active_customer
from ..cache import CACHE
from ..errors import INVALID_REQUEST, ApiError
from libs.contracts.public import timestamp
from ..state import BODY, CALLER, LOOKUPS, endpoint
from . import Body


class ShopperTokenBody(Body):
    customer_id: CustomerId


# Minting changes nothing, so a retry may mint again; storing the answer would keep a live token at rest.
@endpoint(scope="shopper_tokens:write", shopper="none", body=ShopperTokenBody, replay=False)
async def create_shopper_token(request: web.Request) -> web.Response:
    body: ShopperTokenBody = request[BODY]
    caller = request[CALLER]
    async with request.app[LOOKUPS]() as session:
        active = await active_customer(session, caller, body.customer_id, request.app[CACHE])
    if not active:
        raise ApiError(404, INVALID_REQUEST, "resource_missing", f"no active customer {body.customer_id}",
                       "customer_id")
    minted = request.app[TOKENS].mint(caller.tenant_id, caller.livemode, body.customer_id)
    return web.json_response(
        {"object": "shopper_token", "livemode": caller.livemode, "token": minted.token,
         "customer_id": minted.customer_id, "expires_at": timestamp(minted.expires_at)},
        status=201, headers={"Cache-Control": "no-store"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/shopper_tokens", create_shopper_token)
