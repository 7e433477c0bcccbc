"""Carts: create, read, add / change / remove lines, and price (contract prices + GCT), for the token's customer."""

from aiohttp import web
from pydantic import model_validator

from libs.contracts import topics
from libs.contracts.cart import AddLine, CartView, ChangeLine, CreateCart, GetCart, RemoveLine
from libs.contracts.fields import CartId, CartLineId, Sku, Uom
from libs.contracts.ids import CART, CART_LINE
from libs.contracts.pricing import CartPriced

from libs.contracts import public as objects
from ..state import BODY, CALLER, EXPECTED_VERSION, MINTED_ID, SHOPPER, endpoint
from . import Body, NoBody, Quantity, Version, ask, path_id, refuse


class AddLineBody(Body):
    """`{sku, quantity}` in base units, or `{sku, order_uom, order_quantity}`; never both."""

    sku: Sku
    quantity: Quantity | None = None
    order_uom: Uom | None = None
    order_quantity: Quantity | None = None
    version: Version | None = None

    @model_validator(mode="after")
    def _one_form(self) -> "AddLineBody":
        entered = self.order_uom is not None or self.order_quantity is not None
        if self.quantity is not None and entered:
            raise refuse("parameter_invalid", "give quantity, or order_uom and order_quantity, not both", "quantity")
        if self.quantity is None and not entered:
            raise refuse("parameter_missing", "give quantity, or order_uom and order_quantity", "quantity")
        if self.quantity is None and self.order_quantity is None:
            raise refuse("parameter_missing", "order_uom needs order_quantity", "order_quantity")
        if self.quantity is None and self.order_uom is None:
            raise refuse("parameter_missing", "order_quantity needs order_uom", "order_uom")
        return self


class ChangeLineBody(Body):
    """`{quantity}` in base units, or `{order_quantity}` in the line's own unit."""

    quantity: Quantity | None = None
    order_quantity: Quantity | None = None
    version: Version | None = None

    @model_validator(mode="after")
    def _one_form(self) -> "ChangeLineBody":
        if self.quantity is not None and self.order_quantity is not None:
            raise refuse("parameter_invalid", "give quantity or order_quantity, not both", "quantity")
        if self.quantity is None and self.order_quantity is None:
            raise refuse("parameter_missing", "give quantity or order_quantity", "quantity")
        return self


def cart_response(view: CartView, request: web.Request, status: int = 200) -> web.Response:
    return web.json_response(objects.cart(view, request[CALLER].livemode), status=status,
                             headers={"ETag": f'"{view.version}"'})


def _customer(request: web.Request) -> str:
    return request[SHOPPER].customer_id


@endpoint(scope="carts:write", body=NoBody, mints=CART)
async def create_cart(request: web.Request) -> web.Response:
    cart_id = request[MINTED_ID]
    view = await ask(request, topics.CART_COMMANDS, cart_id,
                     CreateCart(cart_id=cart_id, customer_id=_customer(request)), CartView)
    return cart_response(view, request, 201)


@endpoint(scope="carts:write")
async def get_cart(request: web.Request) -> web.Response:
    cart_id = path_id(request, "cart_id", CartId)
    view = await ask(request, topics.CART_COMMANDS, cart_id, GetCart(cart_id=cart_id, customer_id=_customer(request)),
                     CartView)
    return cart_response(view, request)


@endpoint(scope="carts:write", body=AddLineBody, versioned=True, mints=CART_LINE)
async def add_line(request: web.Request) -> web.Response:
    cart_id = path_id(request, "cart_id", CartId)
    body: AddLineBody = request[BODY]
    cmd = AddLine(cart_id=cart_id, customer_id=_customer(request), line_id=request[MINTED_ID], sku=body.sku,
                  quantity=body.quantity, order_uom=body.order_uom, order_quantity=body.order_quantity,
                  expected_version=request.get(EXPECTED_VERSION))
    return cart_response(await ask(request, topics.CART_COMMANDS, cart_id, cmd, CartView), request)


@endpoint(scope="carts:write", body=ChangeLineBody, versioned=True)
async def change_line(request: web.Request) -> web.Response:
    cart_id = path_id(request, "cart_id", CartId)
    line_id = path_id(request, "line_id", CartLineId)
    body: ChangeLineBody = request[BODY]
    cmd = ChangeLine(cart_id=cart_id, customer_id=_customer(request), line_id=line_id, quantity=body.quantity,
                     order_quantity=body.order_quantity, expected_version=request.get(EXPECTED_VERSION))
    return cart_response(await ask(request, topics.CART_COMMANDS, cart_id, cmd, CartView), request)


@endpoint(scope="carts:write", versioned=True)
async def remove_line(request: web.Request) -> web.Response:
    cart_id = path_id(request, "cart_id", CartId)
    line_id = path_id(request, "line_id", CartLineId)
    cmd = RemoveLine(cart_id=cart_id, customer_id=_customer(request), line_id=line_id,
                     expected_version=request.get(EXPECTED_VERSION))
    return cart_response(await ask(request, topics.CART_COMMANDS, cart_id, cmd, CartView), request)


@endpoint(scope="carts:write", body=NoBody)
async def price_cart(request: web.Request) -> web.Response:
    cart_id = path_id(request, "cart_id", CartId)
    customer_id = _customer(request)
    # the cart hands its view to pricing, which answers here: three hops rather than four
    answer = await ask(request, topics.CART_COMMANDS, cart_id,
                       GetCart(cart_id=cart_id, customer_id=customer_id, then_price=True), CartPriced)
    return web.json_response(objects.priced_cart(answer.cart, answer.priced, request[CALLER].livemode))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/carts", create_cart)
    app.router.add_get("/v1/carts/{cart_id}", get_cart)
    app.router.add_post("/v1/carts/{cart_id}/lines", add_line)
    app.router.add_patch("/v1/carts/{cart_id}/lines/{line_id}", change_line)
    app.router.add_delete("/v1/carts/{cart_id}/lines/{line_id}", remove_line)
    app.router.add_post("/v1/carts/{cart_id}/price", price_cart)
