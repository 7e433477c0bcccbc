"""GET /v1/orders[/{order_id}]: the token's customer's orders (any other order is not found)."""

from aiohttp import web
from pydantic import Field

from libs.contracts import topics
from libs.contracts.fields import OrderId
from libs.contracts.orders import GetOrder, ListOrders, OrderList, OrderView

from .. import objects
from ..state import CALLER, SHOPPER, endpoint
from . import Body, ask, parse_query, path_id


class OrdersQuery(Body):
    limit: int = Field(10, ge=1, le=100)
    starting_after: OrderId | None = Field(None, description="the last order id of the page before")


@endpoint(scope="orders:read", query=OrdersQuery)
async def list_orders(request: web.Request) -> web.Response:
    query = parse_query(OrdersQuery, request)
    customer_id = request[SHOPPER].customer_id
    reply = await ask(request, topics.ORDERS_COMMANDS, customer_id,
                      ListOrders(customer_id=customer_id, limit=query.limit, starting_after=query.starting_after),
                      OrderList)
    livemode = request[CALLER].livemode
    return web.json_response(objects.listing("/v1/orders", [objects.order(o, livemode) for o in reply.orders],
                                             reply.has_more))


@endpoint(scope="orders:read")
async def get_order(request: web.Request) -> web.Response:
    order_id = path_id(request, "order_id", OrderId)
    reply = await ask(request, topics.ORDERS_COMMANDS, order_id,
                      GetOrder(order_id=order_id, customer_id=request[SHOPPER].customer_id), OrderView)
    return web.json_response(objects.order(reply, request[CALLER].livemode))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/orders", list_orders)
    app.router.add_get("/v1/orders/{order_id}", get_order)
