"""POST /v1/checkout: place the order for a cart, or answer the over_credit_limit state (402)."""

from typing import Any

from aiohttp import web
from pydantic import Field

from libs.contracts import topics
from libs.contracts.fields import CartId, Notes, PoNumber
from libs.contracts.orders import OrderView, OverCreditLimit, PlaceOrder

from libs.contracts import public as objects
from ..errors import ApiError
from ..config import SETTINGS
from ..state import BODY, CALLER, IDEMPOTENCY_KEY_HEADER, SHOPPER, endpoint
from . import Body, ask


class CheckoutBody(Body):
    cart_id: CartId
    notes: Notes | None = None
    po_number: PoNumber | None = None
    # orders made here are always ECOMMERCE; a client's channel is accepted and ignored, never used
    channel: Any = Field(None, exclude=True)


def over_credit_limit(reply: OverCreditLimit) -> ApiError:
    fits = reply.largest_order_total_that_fits
    return ApiError(
        402, "over_credit_limit", "over_credit_limit",
        f"this order ({reply.order_total} {reply.currency} minor units) exceeds the available credit "
        f"({reply.available}) by {reply.shortfall}; make the order smaller, or pay the open invoices in "
        "`remedies`, and check out again with a new Idempotency-Key",
        siblings={
            "credit": {"limit": reply.limit, "exposure": reply.exposure, "available": reply.available,
                       "order_total": reply.order_total, "shortfall": reply.shortfall, "currency": reply.currency},
            "remedies": {
                # orders fills it (docs/credit.md); from what is available when an older orders did not
                "largest_order_total_that_fits": fits if fits is not None else max(0, reply.available),
                "open_invoices_to_pay": [objects.open_invoice(x) for x in reply.open_invoices_to_pay],
            },
            "cart_id": reply.cart_id,
        },
    )


@endpoint(scope="orders:write", body=CheckoutBody)
async def checkout(request: web.Request) -> web.Response:
    body: CheckoutBody = request[BODY]
    key = request.headers.get(IDEMPOTENCY_KEY_HEADER)
    cmd = PlaceOrder(cart_id=body.cart_id, customer_id=request[SHOPPER].customer_id,
                     idempotency_key=key.strip() if key else None, notes=body.notes, po_number=body.po_number,
                     order_prefix=request[CALLER].order_prefix)
    reply = await ask(request, topics.ORDERS_COMMANDS, body.cart_id, cmd, (OrderView, OverCreditLimit),
                      timeout_s=request.app[SETTINGS].checkout_timeout_s)
    if isinstance(reply, OverCreditLimit):
        raise over_credit_limit(reply)
    return web.json_response(objects.order(reply, request[CALLER].livemode), status=201)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/checkout", checkout)
