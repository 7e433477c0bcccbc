"""GET /v1/invoices[/{invoice_id}]: the invoices of the token's customer's own orders (any other is not found)."""

from typing import Literal

from aiohttp import web
from pydantic import Field

from libs.contracts import topics
from libs.contracts.fields import InvoiceId, OrderId
from libs.contracts.invoices import GetInvoice, InvoiceList, InvoiceView, ListInvoices

from libs.contracts import public as objects
from ..state import CALLER, SHOPPER, endpoint
from . import Body, ask, parse_query, path_id


class InvoicesQuery(Body):
    limit: int = Field(10, ge=1, le=100)
    starting_after: InvoiceId | None = Field(None, description="the last invoice id of the page before")
    status: Literal["open", "paid", "void"] | None = Field(None, description="only invoices in this status")
    order_id: OrderId | None = Field(None, description="only the invoices of this order")


@endpoint(scope="invoices:read", query=InvoicesQuery)
async def list_invoices(request: web.Request) -> web.Response:
    query = parse_query(InvoicesQuery, request)
    customer_id = request[SHOPPER].customer_id
    reply = await ask(request, topics.ORDERS_COMMANDS, customer_id,
                      ListInvoices(customer_id=customer_id, limit=query.limit, starting_after=query.starting_after,
                                   status=query.status, order_id=query.order_id),
                      InvoiceList)
    livemode = request[CALLER].livemode
    return web.json_response(objects.listing("/v1/invoices", [objects.invoice(i, livemode) for i in reply.invoices],
                                             reply.has_more))


@endpoint(scope="invoices:read")
async def get_invoice(request: web.Request) -> web.Response:
    invoice_id = path_id(request, "invoice_id", InvoiceId)
    reply = await ask(request, topics.ORDERS_COMMANDS, invoice_id,
                      GetInvoice(invoice_id=invoice_id, customer_id=request[SHOPPER].customer_id), InvoiceView)
    return web.json_response(objects.invoice(reply, request[CALLER].livemode))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/invoices", list_invoices)
    app.router.add_get("/v1/invoices/{invoice_id}", get_invoice)
