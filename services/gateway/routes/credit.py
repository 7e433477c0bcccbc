"""GET /v1/credit: the token's customer's credit, as its bill-to account has it (docs/credit.md)."""

from aiohttp import web

from libs.contracts import topics
from libs.contracts.credit import CreditAccountView, GetCreditAccount

from libs.contracts import public as objects
from ..state import CALLER, SHOPPER, endpoint
from . import ask


@endpoint(scope="credit:read")
async def get_credit(request: web.Request) -> web.Response:
    customer_id = request[SHOPPER].customer_id
    # keyed by the customer: the gateway does not know its bill-to account, and a query needs no order
    reply = await ask(request, topics.CREDIT_COMMANDS, customer_id, GetCreditAccount(customer_id=customer_id),
                      CreditAccountView)
    return web.json_response(objects.credit_account(reply, request[CALLER].livemode))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/credit", get_credit)
