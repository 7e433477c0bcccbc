"""The order-lifecycle routes (issue 14) as the gateway runs them, over a fake correlator: which command goes to
which topic with which key, what the answer looks like, and how a refusal is rendered. No broker, no database.

The middlewares (key, scope, token, body, idempotency) are the same as every route's; their cells are the
e2e auth matrix (tests/e2e/test_auth_matrix.py)."""

import json
from datetime import UTC, datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from libs.contracts import topics
from libs.contracts.base import Failure, Message
from libs.contracts.credit import GetCreditAccount
from libs.contracts.fields import OrderNumber, accepts
from libs.contracts.invoices import GetInvoice, InvoiceList, ListInvoices
from libs.contracts.orders import CancelOrder, ListOrders, OrderList, PlaceOrder
from services.gateway import schemas
from services.gateway.admin import check_order_prefix, default_order_prefix
from services.gateway.app import create_app
from services.gateway.config import SETTINGS, Settings
from services.gateway.correlator import CORRELATOR
from services.gateway.errors import ApiError, from_failure
from services.gateway.routes import parse_body, parse_query
from services.gateway.routes.checkout import CheckoutBody, checkout
from services.gateway.routes.credit import get_credit
from services.gateway.routes.invoices import InvoicesQuery, get_invoice, list_invoices
from services.gateway.routes.orders import CancelBody, OrdersQuery, cancel_order, list_orders
from services.gateway.state import BODY, CALLER, SCOPES, SHOPPER, Caller, Shopper
from tests.unit.gateway_fakes import FakeCorrelator

SECRET = "unit-test-signing-secret-0123456789abcdefghij"
CUSTOMER = schemas.EXAMPLE_CUSTOMER
ORDER = schemas.EXAMPLE_ORDER.order_id
INVOICE = schemas.EXAMPLE_INVOICE.invoice_id


def request(method: str, path: str, reply: Message, *, match_info: dict | None = None, body=None,
            livemode: bool = False, order_prefix: str | None = "ACME") -> tuple[web.Request, FakeCorrelator]:
    app = web.Application()
    fake = FakeCorrelator(reply)
    app[CORRELATOR] = fake  # type: ignore[assignment]
    req = make_mocked_request(method, path, app=app, match_info=match_info or {})
    req[CALLER] = Caller(tenant_id="ten_A", livemode=livemode, kind="secret", key_id="key_1", hint="hk_…x",
                         order_prefix=order_prefix)
    req[SHOPPER] = Shopper(customer_id=CUSTOMER, token_id="jti_1", expires_at=datetime(2030, 1, 1, tzinfo=UTC))
    if body is not None:
        req[BODY] = body
    return req, fake


def answer(response: web.Response) -> dict:
    return json.loads(response.body)


def test_the_new_scopes_exist_and_each_route_names_its_own():
    assert {"invoices:read", "credit:read", "orders:write"} <= set(SCOPES)
    assert cancel_order.endpoint.scope == "orders:write"  # type: ignore[attr-defined]
    assert list_invoices.endpoint.scope == get_invoice.endpoint.scope == "invoices:read"  # type: ignore[attr-defined]
    assert get_credit.endpoint.scope == "credit:read"  # type: ignore[attr-defined]
    for handler in (cancel_order, list_invoices, get_invoice, get_credit):
        ep = handler.endpoint  # type: ignore[attr-defined]
        assert (ep.shopper, ep.keys) == ("required", frozenset({"secret"})), handler.__name__


def test_the_routes_are_served():
    app = create_app(Settings(database_url="postgresql://u@h/d", signing_secret=SECRET))
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    assert {("POST", "/v1/orders/{order_id}/cancel"), ("GET", "/v1/invoices"), ("GET", "/v1/invoices/{invoice_id}"),
            ("GET", "/v1/credit")} <= served


async def test_cancel_sends_the_shoppers_cancel_keyed_by_the_order_and_answers_the_order():
    cancelled = schemas.EXAMPLE_CANCELLED_ORDER
    body, _ = parse_body(CancelBody, b'{"reason": "ordered twice"}', "application/json")
    req, fake = request("POST", f"/v1/orders/{ORDER}/cancel", cancelled, match_info={"order_id": ORDER}, body=body)
    got = answer(await cancel_order(req))
    [(topic, key, cmd, tenant, livemode)] = fake.asked
    assert (topic, key, tenant, livemode) == (topics.ORDERS_COMMANDS.name, ORDER, "ten_A", False)
    assert cmd == CancelOrder(order_id=ORDER, customer_id=CUSTOMER, reason="ordered twice")
    assert (got["object"], got["status"], got["cancelled_by"], got["cancellation_reason"]) == (
        "order", "cancelled", "customer", "ordered twice")
    assert [t["status"] for t in got["status_transitions"]] == ["confirmed", "cancelled"]
    assert "reservation_id" not in got


async def test_cancel_takes_no_reason_too_and_refuses_unknown_parameters():
    body, _ = parse_body(CancelBody, b"", None)
    assert body.reason is None
    with pytest.raises(ApiError) as info:
        parse_body(CancelBody, b'{"status": "cancelled"}', "application/json")
    assert (info.value.status, info.value.code, info.value.param) == (400, "parameter_unknown", "status")


async def test_cancel_of_an_id_that_cannot_be_an_order_asks_nobody():
    req, fake = request("POST", "/v1/orders/inv_1/cancel", schemas.EXAMPLE_CANCELLED_ORDER,
                        match_info={"order_id": "inv_1"}, body=CancelBody())
    with pytest.raises(ApiError) as info:
        await cancel_order(req)
    assert (info.value.status, info.value.code) == (404, "resource_missing") and fake.asked == []


async def test_an_order_past_cancelling_is_409_with_its_status():
    failure = Failure(code="order_not_cancellable", message="the order is fulfilled", status="fulfilled")
    req, _ = request("POST", f"/v1/orders/{ORDER}/cancel", failure, match_info={"order_id": ORDER}, body=CancelBody())
    with pytest.raises(ApiError) as info:
        await cancel_order(req)
    e = info.value
    assert (e.status, e.type, e.code) == (409, "invalid_request_error", "order_not_cancellable")
    assert e.body("req_1")["error"]["status"] == "fulfilled"
    assert "status" not in from_failure(Failure(code="resource_missing", message="no order")).body("r")["error"]


async def test_orders_are_listed_by_order_number():
    query = parse_query(OrdersQuery, make_mocked_request("GET", "/v1/orders?order_number=ACME-000042"))
    assert query.order_number == "ACME-000042"
    req, fake = request("GET", "/v1/orders", OrderList(orders=[schemas.EXAMPLE_ORDER], has_more=False))
    req = req.clone(rel_url="/v1/orders?order_number=ACME-000042")
    got = answer(await list_orders(req))
    [(_, key, cmd, _, _)] = fake.asked
    assert (key, cmd) == (CUSTOMER, ListOrders(customer_id=CUSTOMER, order_number="ACME-000042"))
    assert [o["order_number"] for o in got["data"]] == ["ACME-000042"]


@pytest.mark.parametrize("query", ["order_number=ACME-42", "order_number=acme-000042", "order_number=A-B-000001"])
def test_an_order_number_that_cannot_be_one_is_parameter_invalid(query):
    with pytest.raises(ApiError) as info:
        parse_query(OrdersQuery, make_mocked_request("GET", f"/v1/orders?{query}"))
    assert (info.value.status, info.value.code, info.value.param) == (400, "parameter_invalid", "order_number")


async def test_invoices_are_listed_for_the_tokens_customer_with_the_filters():
    reply = InvoiceList(invoices=[schemas.EXAMPLE_INVOICE], has_more=True)
    req, fake = request("GET", "/v1/invoices", reply, livemode=True)
    req = req.clone(rel_url=f"/v1/invoices?status=open&order_id={ORDER}&limit=5&starting_after={INVOICE}")
    got = answer(await list_invoices(req))
    [(topic, key, cmd, _, livemode)] = fake.asked
    assert (topic, key, livemode) == (topics.ORDERS_COMMANDS.name, CUSTOMER, True)
    assert cmd == ListInvoices(customer_id=CUSTOMER, limit=5, starting_after=INVOICE, status="open", order_id=ORDER)
    assert (got["object"], got["url"], got["has_more"]) == ("list", "/v1/invoices", True)
    [inv] = got["data"]
    assert (inv["id"], inv["object"], inv["livemode"], inv["order"], inv["customer"]) == (
        INVOICE, "invoice", True, ORDER, CUSTOMER)
    assert (inv["total"], inv["amount_due"], inv["due_at"]) == (15_180, 15_180, "2025-04-14T15:09:26Z")


@pytest.mark.parametrize("query, param", [("status=draft", "status"), ("order_id=inv_1", "order_id"),
                                          ("starting_after=ord_1", "starting_after"), ("limit=101", "limit"),
                                          ("customer_id=cus_B", "customer_id")])
def test_invoice_filters_are_checked(query, param):
    with pytest.raises(ApiError) as info:
        parse_query(InvoicesQuery, make_mocked_request("GET", f"/v1/invoices?{query}"))
    assert (info.value.status, info.value.param) == (400, param)


async def test_an_invoice_is_read_for_the_tokens_customer_only():
    req, fake = request("GET", f"/v1/invoices/{INVOICE}", schemas.EXAMPLE_PAID_INVOICE,
                        match_info={"invoice_id": INVOICE})
    got = answer(await get_invoice(req))
    [(_, key, cmd, _, _)] = fake.asked
    assert (key, cmd) == (INVOICE, GetInvoice(invoice_id=INVOICE, customer_id=CUSTOMER))
    assert (got["status"], got["amount_paid"], got["amount_due"], got["paid_at"]) == (
        "paid", 15_180, 0, "2025-03-27T15:09:26Z")
    req, _ = request("GET", f"/v1/invoices/{INVOICE}", Failure(code="resource_missing", message="no such invoice"),
                     match_info={"invoice_id": INVOICE})
    with pytest.raises(ApiError) as info:
        await get_invoice(req)
    assert (info.value.status, info.value.code) == (404, "resource_missing")


async def test_credit_is_asked_of_credit_for_the_tokens_customer():
    req, fake = request("GET", "/v1/credit", schemas.EXAMPLE_CREDIT_ACCOUNT)
    got = answer(await get_credit(req))
    [(topic, key, cmd, _, _)] = fake.asked
    assert (topic, key, cmd) == (topics.CREDIT_COMMANDS.name, CUSTOMER, GetCreditAccount(customer_id=CUSTOMER))
    assert got == {
        "object": "credit_account", "livemode": False, "customer_id": CUSTOMER, "bill_to_id": CUSTOMER,
        "terms": "net_30", "currency": "JMD", "limit": 50_000, "exposure": 15_180, "available": 34_820,
        "unapplied": 0,
        "open_invoices": [{"id": INVOICE, "invoice_number": "ACME-INV-000017", "amount_due": 15_180,
                           "due_at": "2025-04-14T15:09:26Z", "overdue": False}]}


@pytest.mark.parametrize("prefix", ["ACME", None])
async def test_checkout_sends_the_tenants_order_prefix(prefix):
    body = CheckoutBody(cart_id=schemas.EXAMPLE_CART.cart_id)
    req, fake = request("POST", "/v1/checkout", schemas.EXAMPLE_ORDER, body=body, order_prefix=prefix)
    req.app[SETTINGS] = Settings(database_url="postgresql://u@h/d", signing_secret=SECRET)
    got = answer(await checkout(req))
    [(_, _, cmd, _, _)] = fake.asked
    assert isinstance(cmd, PlaceOrder) and cmd.order_prefix == prefix
    assert got["order_number"] == "ACME-000042"


async def test_over_credit_limit_names_the_invoice_to_pay():
    body = CheckoutBody(cart_id=schemas.EXAMPLE_CART.cart_id)
    req, _ = request("POST", "/v1/checkout", schemas.EXAMPLE_OVER_CREDIT_LIMIT, body=body)
    req.app[SETTINGS] = Settings(database_url="postgresql://u@h/d", signing_secret=SECRET)
    with pytest.raises(ApiError) as info:
        await checkout(req)
    e = info.value.body("req_1")
    assert info.value.status == 402
    assert e["remedies"] == {"largest_order_total_that_fits": 4_820, "open_invoices_to_pay": [
        {"id": INVOICE, "invoice_number": "ACME-INV-000017", "amount_due": 15_180, "due_at": "2025-04-14T15:09:26Z",
         "overdue": False}]}
    assert e["credit"]["shortfall"] == 12_220


# --- the tenant's order prefix (harmon tenants create --order-prefix; migration 0009 backfills the same) ---------

@pytest.mark.parametrize("name, prefix", [("Island Grocers Ltd", "ISLAND"), ("J&B 4 U", "JB4U"), ("acme", "ACME"),
                                          ("Épicerie", "PICERI"), ("—", "ORD"), ("  ", "ORD"), ("123456789", "123456")])
def test_the_default_prefix_is_the_names_first_six_letters_and_digits(name, prefix):
    assert default_order_prefix(name) == prefix
    assert accepts(OrderNumber, f"{prefix}-000001")  # every default makes valid order numbers


def test_a_given_prefix_is_upper_cased_and_checked():
    assert check_order_prefix(" acme9 ") == "ACME9"
    for bad in ("ACME-1", "X" * 13, "", "ÀB"):
        with pytest.raises(ValueError, match="an order prefix is 1 to 12 letters or digits"):
            check_order_prefix(bad)
