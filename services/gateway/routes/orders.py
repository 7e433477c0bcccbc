"""GET /v1/orders[/{order_id}], POST /v1/orders/{order_id}/cancel: the token's customer's orders (any other order
is not found)."""

from aiohttp import web
from pydantic import Field

from libs.contracts import topics
from libs.contracts.fields import Notes, OrderId, OrderNumber
from libs.contracts.orders import CancelOrder, GetOrder, ListOrders, OrderList, OrderView

from libs.contracts import public as objects
from ..state import BODY, CALLER, SHOPPER, endpoint
from . import Body, ask, parse_query, path_id


class OrdersQuery(Body):
    limit: int = Field(10, ge=1, le=100)
    starting_after: OrderId | None = Field(None, description="the last order id of the page before")
    order_number: OrderNumber | None = Field(None, description="only the order with this number, e.g. ACME-000042")


class CancelBody(Body):
    reason: Notes | None = Field(None, description="why the shopper cancels, kept on the order")


@endpoint(scope="orders:read", query=OrdersQuery)
async def list_orders(request: web.Request) -> web.Response:
    query = parse_query(OrdersQuery, request)
    customer_id = request[SHOPPER].customer_id
    reply = await ask(request, topics.ORDERS_COMMANDS, customer_id,
                      ListOrders(customer_id=customer_id, limit=query.limit, starting_after=query.starting_after,
                                 order_number=query.order_number),
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


# Cancelling an order that is already cancelled answers it again, so a retry without a key is harmless too;
# with an Idempotency-Key the first answer is stored and replayed like every POST's.
@endpoint(scope="orders:write", body=CancelBody)
async def cancel_order(request: web.Request) -> web.Response:
    order_id = path_id(request, "order_id", OrderId)
    body: CancelBody = request[BODY]
    reply = await ask(request, topics.ORDERS_COMMANDS, order_id,
                      CancelOrder(order_id=order_id, customer_id=request[SHOPPER].customer_id, reason=body.reason),
                      OrderView)
    return web.json_response(objects.order(reply, request[CALLER].livemode))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/orders", list_orders)
    app.router.add_get("/v1/orders/{order_id}", get_order)
    app.router.add_post("/v1/orders/{order_id}/cancel", cancel_order)
