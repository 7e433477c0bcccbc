"""GET /v1/orders/{order_id}: an order of the token's customer (any other order is not found)."""

from aiohttp import web

from libs.contracts import topics
from libs.contracts.ids import ORDER
from libs.contracts.orders import GetOrder, OrderView

from .. import objects
from ..state import CALLER, SHOPPER, endpoint
from . import ask, path_id


@endpoint(scope="orders:read")
async def get_order(request: web.Request) -> web.Response:
    order_id = path_id(request, "order_id", ORDER)
    reply = await ask(request, topics.ORDERS_COMMANDS, order_id,
                      GetOrder(order_id=order_id, customer_id=request[SHOPPER].customer_id), OrderView)
    return web.json_response(objects.order(reply, request[CALLER].livemode))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/orders/{order_id}", get_order)
