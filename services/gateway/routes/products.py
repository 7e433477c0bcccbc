"""GET /v1/products[/{sku}]: the catalog; with a shopper token, that customer's contract prices."""

from aiohttp import web
from pydantic import Field

from libs.contracts import topics
from libs.contracts.fields import Sku
from libs.contracts.pricing import GetProduct, ListProducts, ProductList, ProductView

from libs.contracts import public as objects
from ..state import ANY_KEY, CALLER, SHOPPER, endpoint
from . import Body, ask, parse_query, path_value


class ListQuery(Body):
    limit: int = Field(20, ge=1, le=100)
    starting_after: Sku | None = Field(None, description="the last SKU of the page before")


def _customer(request: web.Request) -> str | None:
    shopper = request.get(SHOPPER)
    return shopper.customer_id if shopper else None


@endpoint(scope="catalog:read", keys=ANY_KEY, shopper="optional", query=ListQuery)
async def list_products(request: web.Request) -> web.Response:
    query = parse_query(ListQuery, request)
    caller = request[CALLER]
    reply = await ask(request, topics.PRICING_COMMANDS, caller.tenant_id,
                      ListProducts(customer_id=_customer(request), limit=query.limit,
                                   starting_after=query.starting_after), ProductList)
    data = [objects.product(p, caller.livemode) for p in reply.products]
    return web.json_response(objects.listing("/v1/products", data, reply.has_more))


@endpoint(scope="catalog:read", keys=ANY_KEY, shopper="optional")
async def get_product(request: web.Request) -> web.Response:
    sku = path_value(request, "sku", Sku, "product")
    reply = await ask(request, topics.PRICING_COMMANDS, sku, GetProduct(sku=sku, customer_id=_customer(request)),
                      ProductView)
    return web.json_response(objects.product(reply, request[CALLER].livemode))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/products", list_products)
    app.router.add_get("/v1/products/{sku}", get_product)
