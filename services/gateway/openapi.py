"""`build_openapi(app)`: the OpenAPI 3.1 document, generated from the app's routes and their `@endpoint` declarations.

Paths, methods, parameters, request bodies, security and the auth/validation/idempotency errors come from the
routes themselves (what the middlewares will check); response objects from schemas.py (tested against
objects.py); the examples are rendered by the same builders the routes use. What the code cannot say — a
summary, the success status and object, and the errors a service may answer — is in OPERATIONS below, and
building fails for a /v1 route missing from it, so nothing is documented beside the routes by hand.
"""

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from libs.contracts.cart import MAX_BASE_QUANTITY
from libs.contracts.fields import (MAX_AMOUNT, CartId, CartLineId, EventId, InvoiceId, OrderId, Sku,
                                   WebhookEndpointId)

from libs.contracts import public as objects
from . import schemas
from .errors import (API_ERROR, AUTHENTICATION, IDEMPOTENCY, INVALID_REQUEST, PERMISSION, RATE_LIMIT, RETRY_AFTER_S,
                     ApiError, body_invalid, header_invalid, invalid, service_unavailable)
from .idempotency import KEY_HEADER, MAX_KEY_CHARS, validate_key
from .routes import expected_version, parse_body
from .routes.carts import AddLineBody, ChangeLineBody
from .routes.checkout import CheckoutBody, over_credit_limit
from .routes.events import EventsQuery
from .routes.invoices import InvoicesQuery
from .routes.orders import CancelBody, OrdersQuery
from .routes.products import ListQuery
from .routes.shopper_tokens import ShopperTokenBody
from .routes.webhooks import (CreateEndpointBody, DeliveriesQuery, EndpointsQuery, RotateSecretBody,
                              UpdateEndpointBody)
from .state import KIND_PUBLISHABLE, REPLAYED_HEADER, SHOPPER_HEADER, Endpoint

OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"
VERSION = "1"
JSON = "application/json"
RID = schemas.EXAMPLE_REQUEST_ID

# code → (status, type, param, example message): the catalogue, as clients see it
ERRORS: dict[str, tuple[int, str, str | None, str]] = {
    "header_invalid": (400, INVALID_REQUEST, None, header_invalid().message),
    "json_invalid": (400, INVALID_REQUEST, None, "the body is not valid JSON"),
    "body_invalid": (400, INVALID_REQUEST, None, body_invalid().message),
    "parameter_missing": (400, INVALID_REQUEST, "quantity", "missing required parameter: quantity"),
    "parameter_invalid": (400, INVALID_REQUEST, KEY_HEADER,
                          f"{KEY_HEADER} must be 1 to {MAX_KEY_CHARS} printable ASCII characters"),
    "parameter_unknown": (400, INVALID_REQUEST, "customer_id", "unknown parameter: customer_id"),
    "url_invalid": (400, INVALID_REQUEST, "url", "in live mode an endpoint's URL must be https and resolve only to "
                                                 "public addresses: shop.internal resolves to 10.0.4.7"),
    "sku_unknown": (400, INVALID_REQUEST, "sku", "no product with sku 'RICE-20KG'"),
    "uom_unknown": (400, INVALID_REQUEST, "order_uom", "unit 'PALLET' is not sold for this product (units: CASE)"),
    "quantity_invalid": (400, INVALID_REQUEST, "quantity",
                         f"quantity must be a whole number from 1 to {MAX_BASE_QUANTITY:,}"),
    "amount_too_large": (400, INVALID_REQUEST, "cart_id",
                         f"the cart's total would be over {MAX_AMOUNT:,} minor units; split it into smaller orders"),
    "api_key_missing": (401, AUTHENTICATION, None, "no API key given: send 'Authorization: Bearer hk_…'"),
    "api_key_invalid": (401, AUTHENTICATION, None, "the API key is not valid"),
    "api_key_revoked": (401, AUTHENTICATION, None, "the API key hk_test_sec_…x9Qz was revoked"),
    "shopper_token_missing": (401, AUTHENTICATION, None,
                              f"this route acts for a signed-in customer: send {SHOPPER_HEADER}"),
    "shopper_token_invalid": (401, AUTHENTICATION, None, "the shopper token is not valid: issued for another "
                                                         "tenant or mode"),
    "shopper_token_expired": (401, AUTHENTICATION, None, "the shopper token has expired; mint a new one"),
    "over_credit_limit": (402, "over_credit_limit", None, "this order exceeds the available credit"),
    "publishable_key_not_allowed": (403, PERMISSION, None, "this route needs a secret key; publishable keys may "
                                                           "only read the catalog"),
    "secret_key_from_browser": (403, PERMISSION, None, "secret keys are for servers: a browser (cross-origin "
                                                       "request) may use only a publishable key; call this route "
                                                       "from your backend"),
    "scope_missing": (403, PERMISSION, None, "this restricted key may not use this route"),
    "resource_missing": (404, INVALID_REQUEST, "cart_id", "no cart cart_01JD2Z3W5X7Y9Z1A3B5C7D9E1F"),
    "method_not_allowed": (405, INVALID_REQUEST, None, "PUT is not allowed here"),
    "cart_version_conflict": (409, INVALID_REQUEST, "version", "the cart is at version 4, not 3"),
    "cart_checked_out": (409, INVALID_REQUEST, "cart_id", "this cart was checked out"),
    "cart_frozen": (409, INVALID_REQUEST, "cart_id", "this cart is being checked out; try again shortly"),
    "order_not_cancellable": (409, INVALID_REQUEST, "order_id", "the order is partially_fulfilled: only a confirmed "
                                                                "order with nothing shipped can be cancelled"),
    "idempotency_key_mismatch": (409, IDEMPOTENCY, KEY_HEADER, "this Idempotency-Key was used with a different "
                                                               "request; use a new key"),
    "idempotency_key_in_use": (409, IDEMPOTENCY, KEY_HEADER, "a request with this Idempotency-Key is in progress; "
                                                             "retry shortly"),
    "body_too_large": (413, INVALID_REQUEST, None, "the request body is over 65536 bytes"),
    "unsupported_media_type": (415, INVALID_REQUEST, None,
                               "send the body as JSON with 'Content-Type: application/json'"),
    "rate_limited": (429, RATE_LIMIT, None, "too many requests with this API key; retry after 1 s"),
    "internal_error": (500, API_ERROR, None, "something went wrong on our side; it has been logged"),
    "service_unavailable": (503, API_ERROR, None, service_unavailable().message),
    "upstream_timeout": (504, API_ERROR, None, "a service did not answer in time; retrying with the same "
                                               "Idempotency-Key is safe"),
}
# answered for any path, not by an operation: by the router, or by the HTTP parser before there is a route
ROUTE_LEVEL = {"method_not_allowed", "header_invalid"}


@dataclass(frozen=True)
class Operation:
    """What the code cannot say about a route: its summary, what it answers, and what its services may refuse."""

    summary: str
    status: int
    answers: type[BaseModel]
    example: Callable[[], dict[str, Any]]
    errors: tuple[str | ApiError, ...] = ()  # a service's refusals, beyond what the @endpoint declaration implies
    asks: bool = True  # waits on a service, so it may time out (504)
    description: str = ""


_CART_WRITE = ("resource_missing", "cart_frozen", "cart_checked_out")


def _cart(view=schemas.EXAMPLE_CART) -> Callable[[], dict[str, Any]]:
    return lambda: objects.cart(view, False)


OPERATIONS: dict[str, Operation] = {
    "create_shopper_token": Operation(
        "Sign a customer in", 201, schemas.ShopperToken, asks=False, errors=("resource_missing",),
        example=lambda: {"object": "shopper_token", "livemode": False, "token": schemas.EXAMPLE_TOKEN,
                         "customer_id": schemas.EXAMPLE_CUSTOMER, "expires_at": "2025-03-14T15:24:26Z"},
        description="Your storefront backend mints a short-lived shopper token for a customer it has signed in; "
                    f"send it as `{SHOPPER_HEADER}`. The customer must be active. Minting changes nothing, so "
                    "answers are never stored for replay (a retry mints a new token)."),
    "list_products": Operation(
        "List the catalog", 200, schemas.ProductList,
        lambda: objects.listing("/v1/products", [objects.product(p, False) for p in
                                                 schemas.EXAMPLE_PRODUCTS.products], True),
        description="Sorted by SKU. With a shopper token, `unit_price` is that customer's contract price. "
                    "A publishable key may call this."),
    "get_product": Operation(
        "Read a product", 200, schemas.Product, lambda: objects.product(schemas.EXAMPLE_PRODUCT, False),
        errors=("resource_missing",),
        description="With a shopper token, `unit_price` is that customer's contract price. "
                    "A publishable key may call this."),
    "create_cart": Operation(
        "Create a cart", 201, schemas.Cart, _cart(schemas.EXAMPLE_EMPTY_CART),
        description="For the token's customer: a `customer_id` in the body is refused (parameter_unknown)."),
    "get_cart": Operation("Read a cart", 200, schemas.Cart, _cart(), errors=("resource_missing",),
                          description="Only the token's customer's carts are found."),
    "add_line": Operation(
        "Add a line", 200, schemas.Cart, _cart(),
        errors=("sku_unknown", "uom_unknown", "quantity_invalid", *_CART_WRITE),
        description="`{sku, quantity}` in base units, or `{sku, order_uom, order_quantity}` in an alternate unit, "
                    "converted to base units with the product's factor (both are kept)."),
    "change_line": Operation("Change a line's quantity", 200, schemas.Cart, _cart(),
                             errors=("quantity_invalid", *_CART_WRITE),
                             description="`{quantity}` in base units, or `{order_quantity}` in the line's own unit."),
    "remove_line": Operation("Remove a line", 200, schemas.Cart, _cart(), errors=_CART_WRITE),
    "price_cart": Operation(
        "Price a cart", 200, schemas.PricedCart,
        lambda: objects.priced_cart(schemas.EXAMPLE_CART, schemas.EXAMPLE_PRICED, False),
        errors=("resource_missing", "sku_unknown", "amount_too_large"),
        description="Server-side: contract prices (customer price → price list → list price, with quantity "
                    "breaks) and GCT per line, rounded half-up; totals are sums of the rounded lines."),
    "checkout": Operation(
        "Check out", 201, schemas.Order, lambda: objects.order(schemas.EXAMPLE_ORDER, False),
        errors=(invalid("parameter_invalid", "the cart has no lines to check out", "cart_id"), "sku_unknown",
                "amount_too_large", "resource_missing", "cart_frozen", "cart_checked_out", "over_credit_limit"),
        description="Places the order for the cart (channel `ECOMMERCE`, set by the server) against the bill-to "
                    "account's credit, or answers the **over_credit_limit** state (402) with the shortfall: the "
                    "cart is left intact, to be changed and checked out again with a new `Idempotency-Key`. A "
                    "checkout that timed out (504) returns the real order when retried with the same key."),
    "list_orders": Operation(
        "List orders", 200, schemas.OrderList,
        lambda: objects.listing("/v1/orders", [objects.order(schemas.EXAMPLE_ORDER, False)], False),
        description="The token's customer's orders, newest first; page with `limit` and `starting_after`."),
    "get_order": Operation(
        "Read an order", 200, schemas.Order, lambda: objects.order(schemas.EXAMPLE_FULFILLED_ORDER, False),
        errors=("resource_missing",),
        description="Only the token's customer's orders are found. `status_transitions` tells when it took each "
                    "status; `fulfilments` are the ERP's shipments, each with the invoice it issued."),
    "cancel_order": Operation(
        "Cancel an order", 200, schemas.Order, lambda: objects.order(schemas.EXAMPLE_CANCELLED_ORDER, False),
        errors=("resource_missing", "order_not_cancellable"),
        description="The shopper cancels a confirmed order before anything shipped: it becomes `cancelled` "
                    "(`cancelled_by` customer) and its credit is released. Once anything was fulfilled it is 409 "
                    "**order_not_cancellable** with the order's `status`. Cancelling a cancelled order answers it "
                    "again."),
    "list_invoices": Operation(
        "List invoices", 200, schemas.InvoiceList,
        lambda: objects.listing("/v1/invoices", [objects.invoice(schemas.EXAMPLE_INVOICE, False)], False),
        description="The invoices of the token's customer's own orders (for a buyer under a bill-to parent: of "
                    "its own orders), newest first; page with `limit` and `starting_after`, filter by `status` "
                    "and `order_id`."),
    "get_invoice": Operation(
        "Read an invoice", 200, schemas.Invoice, lambda: objects.invoice(schemas.EXAMPLE_PAID_INVOICE, False),
        errors=("resource_missing",),
        description="Only the invoices of the token's customer's orders are found. A fulfilment issues one "
                    "invoice for what it shipped; `due_at` is `issued_at` + the net days, or (cod) the delivery's "
                    "time once it is recorded."),
    "create_webhook_endpoint": Operation(
        "Create a webhook endpoint", 201, schemas.WebhookEndpoint,
        lambda: objects.webhook_endpoint(schemas.EXAMPLE_NEW_ENDPOINT, False),
        errors=(invalid("parameter_invalid", "enabled_events[1] is 'order.shipped', not an event type",
                        "enabled_events[1]"), "url_invalid"),
        description="Events of the key's tenant and mode are POSTed to `url`, signed with the endpoint's "
                    "`secret` (`Harmon-Signature`), which only this answer shows: a replay of it with the same "
                    "`Idempotency-Key` answers the endpoint without it (rotate to get a new one). In live mode the "
                    "URL must be `https` and resolve only to public addresses (else 400 **url_invalid**); test "
                    "mode also takes `http` and loopback or private addresses, for local receivers."),
    "list_webhook_endpoints": Operation(
        "List webhook endpoints", 200, schemas.WebhookEndpointList,
        lambda: objects.listing("/v1/webhook_endpoints", [objects.webhook_endpoint(schemas.EXAMPLE_ENDPOINT, False)],
                                False),
        description="The key's tenant's endpoints in its mode, newest first; never with their secrets."),
    "get_webhook_endpoint": Operation(
        "Read a webhook endpoint", 200, schemas.WebhookEndpoint,
        lambda: objects.webhook_endpoint(schemas.EXAMPLE_ENDPOINT, False), errors=("resource_missing",),
        description="Another tenant's or mode's endpoint is not found. `status` is disabled once an update "
                    "disabled it or notifier did, after 3 days of failed deliveries."),
    "update_webhook_endpoint": Operation(
        "Change a webhook endpoint", 200, schemas.WebhookEndpoint,
        lambda: objects.webhook_endpoint(schemas.EXAMPLE_DISABLED_ENDPOINT, False),
        errors=("resource_missing", "url_invalid"),
        description="Only the fields given change: `url` (checked again), `enabled_events`, `description`; "
                    "`disabled` true stops deliveries, false resumes them."),
    "delete_webhook_endpoint": Operation(
        "Delete a webhook endpoint", 200, schemas.DeletedWebhookEndpoint,
        lambda: objects.deleted_webhook_endpoint(schemas.EXAMPLE_ENDPOINT.endpoint_id, False),
        errors=("resource_missing",),
        description="The endpoint is gone (404 after) and its pending deliveries are cancelled."),
    "rotate_webhook_secret": Operation(
        "Rotate a webhook endpoint's secret", 200, schemas.WebhookEndpoint,
        lambda: objects.webhook_endpoint(schemas.EXAMPLE_NEW_ENDPOINT, False), errors=("resource_missing",),
        description="A new `secret`, shown only in this answer; the old one keeps signing beside it (one "
                    "`v1=` each in `Harmon-Signature`) for `expires_in_s` (default 24 h, 0: it stops now)."),
    "list_webhook_deliveries": Operation(
        "List an endpoint's delivery attempts", 200, schemas.WebhookDeliveryList,
        lambda: objects.listing(f"/v1/webhook_endpoints/{schemas.EXAMPLE_ENDPOINT.endpoint_id}/deliveries",
                                [objects.webhook_delivery(d) for d in (schemas.EXAMPLE_DELIVERED,
                                                                       schemas.EXAMPLE_RETRYING)], False),
        errors=("resource_missing",),
        description="Every attempt, newest first: when, the endpoint's status or the error's class, the latency "
                    "and the first 1 KiB of its answer; `next_attempt` when another is scheduled."),
    "list_events": Operation(
        "List events", 200, schemas.EventList,
        lambda: objects.listing("/v1/events", [objects.event(schemas.EXAMPLE_EVENT, False)], False),
        description="The key's tenant's events in its mode, newest first; page with `limit` and "
                    "`starting_after`, filter by `type`."),
    "get_event": Operation(
        "Read an event", 200, schemas.Event, lambda: objects.event(schemas.EXAMPLE_EVENT, False),
        errors=("resource_missing",),
        description="`data.object` is the order or invoice as the API showed it when the event happened: the "
                    "same JSON a webhook delivered."),
    "get_credit": Operation(
        "Read the customer's credit", 200, schemas.CreditAccount,
        lambda: objects.credit_account(schemas.EXAMPLE_CREDIT_ACCOUNT, False), errors=("resource_missing",),
        description="The limit, exposure and available credit of the token's customer's bill-to account, its "
                    "unapplied credit (overpayments, used by the next invoices) and its open invoices, oldest due "
                    "first: paying them frees credit."),
}

PATH_PARAMS: dict[str, tuple[dict[str, Any], str]] = {  # name → (schema of its libs.contracts.fields kind, example)
    "cart_id": (TypeAdapter(CartId).json_schema(), schemas.EXAMPLE_CART.cart_id),
    "line_id": (TypeAdapter(CartLineId).json_schema(), schemas.EXAMPLE_CART.lines[0].line_id),
    "order_id": (TypeAdapter(OrderId).json_schema(), schemas.EXAMPLE_ORDER.order_id),
    "invoice_id": (TypeAdapter(InvoiceId).json_schema(), schemas.EXAMPLE_INVOICE.invoice_id),
    "sku": (TypeAdapter(Sku).json_schema(), schemas.EXAMPLE_PRODUCT.sku),
    "endpoint_id": (TypeAdapter(WebhookEndpointId).json_schema(), schemas.EXAMPLE_ENDPOINT.endpoint_id),
    "event_id": (TypeAdapter(EventId).json_schema(), schemas.EXAMPLE_EVENT.event_id),
}

REQUEST_EXAMPLES: dict[type[BaseModel], dict[str, dict[str, Any]]] = {
    ShopperTokenBody: {"customer": {"customer_id": schemas.EXAMPLE_CUSTOMER}},
    AddLineBody: {
        "in an alternate unit": {"sku": "RICE-2KG", "order_uom": "CASE", "order_quantity": 1},
        "in base units": {"sku": "MILK-UHT-1L", "quantity": 6},
        "at a known cart version": {"sku": "MILK-UHT-1L", "quantity": 6, "version": 3},
    },
    ChangeLineBody: {"in base units": {"quantity": 24}, "in the line's unit": {"order_quantity": 2}},
    ListQuery: {"the next page": {"limit": 20, "starting_after": "MILK-UHT-1L"}},
    OrdersQuery: {"the next page": {"limit": 10, "starting_after": schemas.EXAMPLE_ORDER.order_id},
                  "by order number": {"order_number": "ACME-000042"}},
    InvoicesQuery: {"open invoices": {"status": "open", "limit": 10},
                    "of one order": {"order_id": schemas.EXAMPLE_ORDER.order_id},
                    "the next page": {"limit": 10, "starting_after": schemas.EXAMPLE_INVOICE.invoice_id}},
    CancelBody: {"with a reason": {"reason": "ordered twice"}, "without": {}},
    CheckoutBody: {"with a PO number": {"cart_id": schemas.EXAMPLE_CART.cart_id, "po_number": "PO-1001",
                                        "notes": "Deliver to the back door"}},
    CreateEndpointBody: {
        "some events": {"url": "https://shop.example.com/harmon/webhooks",
                        "enabled_events": ["order.confirmed", "invoice.issued"], "description": "order sync"},
        "every event, a local receiver (test mode)": {"url": "http://127.0.0.1:8765/webhooks",
                                                      "enabled_events": ["*"]},
    },
    UpdateEndpointBody: {"disable it": {"disabled": True},
                         "change its events": {"enabled_events": ["order.confirmed", "order.cancelled"]}},
    RotateSecretBody: {"an hour's overlap": {"expires_in_s": 3600}, "the default 24 h": {}},
    EndpointsQuery: {"the next page": {"limit": 10, "starting_after": schemas.EXAMPLE_ENDPOINT.endpoint_id}},
    DeliveriesQuery: {"the next page": {"limit": 10, "starting_after": schemas.EXAMPLE_RETRYING.delivery_id}},
    EventsQuery: {"confirmed orders": {"type": "order.confirmed", "limit": 10},
                  "the next page": {"limit": 10, "starting_after": schemas.EXAMPLE_EVENT.event_id}},
}
EMPTY_BODY_EXAMPLE = {"no parameters": {}}

RESPONSE_MODELS = (schemas.ShopperToken, schemas.ProductList, schemas.OrderList, schemas.Product, schemas.Cart,
                   schemas.PricedCart, schemas.Order, schemas.InvoiceList, schemas.Invoice, schemas.CreditAccount,
                   schemas.WebhookEndpoint, schemas.WebhookEndpointList, schemas.DeletedWebhookEndpoint,
                   schemas.WebhookDeliveryList, schemas.Event, schemas.EventList,
                   schemas.ErrorResponse, schemas.OverCreditLimit)

HEADERS = {
    "RequestId": {"description": "this answer's id, also in the error object and the logs (a client's sane "
                                 "`X-Request-Id` is echoed)", "schema": {"type": "string"}},
    "ETag": {"description": "the cart's version, for `If-Match`", "schema": {"type": "string", "example": '"3"'}},
    "RetryAfter": {"description": "whole seconds to wait: until the next request can pass the rate limit (429), "
                                  "or before retrying a service that is unavailable (503)",
                   "schema": {"type": "integer", "minimum": 1}},
    "IdempotentReplayed": {"description": f"`true` when this is the stored answer of an earlier request with the "
                                          f"same `{KEY_HEADER}`", "schema": {"type": "string", "enum": ["true"]}},
}
PARAMETERS = {
    "IdempotencyKey": {
        "name": KEY_HEADER, "in": "header", "required": False,
        "description": f"Up to {MAX_KEY_CHARS} printable ASCII characters, scoped to the key's tenant and mode. "
                       "The first final answer (2xx or 4xx) is stored for at least 24 h and replayed; the same key "
                       "with another request is 409 idempotency_key_mismatch; 5xx answers are never stored.",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS, "pattern": "^[\\x20-\\x7e]+$"},
        "example": "checkout-cart_01JD2Z3W5X7Y9Z1A3B5C7D9E1F",
    },
    "IfMatch": {
        "name": "If-Match", "in": "header", "required": False,
        "description": "The cart version this write expects (the `ETag` of a cart answer, or send `version` in the "
                       "body; both must agree). A stale one is 409 cart_version_conflict.",
        "schema": {"type": "string"}, "example": '"3"',
    },
}
SECURITY_SCHEMES = {
    "apiKey": {
        "type": "http", "scheme": "bearer", "bearerFormat": "hk_<test|live>_<sec|pub>_…",
        "description": "`Authorization: Bearer hk_test_sec_…`. Secret keys (server-side only) may call every "
                       "route; publishable keys only read the catalog. The key decides the tenant and the mode.",
    },
    "shopperToken": {
        "type": "apiKey", "in": "header", "name": SHOPPER_HEADER,
        "description": "The signed-in customer's JWT: minted by POST /v1/shopper_tokens, or signed by your own "
                       "backend with an RS256/ES256 key registered with `harmon signing-keys` (header `kid`; claims "
                       "`iss` = your tenant id, `aud` = `harmon:<tenant_id>:<test|live>`, `sub`, `iat`, `exp` at "
                       "most 1 h later, `jti`).",
    },
}


def catalogue_error(code: str) -> ApiError:
    if code == "over_credit_limit":
        return over_credit_limit(schemas.EXAMPLE_OVER_CREDIT_LIMIT)
    status, type_, param, message = ERRORS[code]
    extra = {"cart_checked_out": {"order_id": schemas.EXAMPLE_ORDER.order_id},
             "order_not_cancellable": {"status": "partially_fulfilled"}}.get(code)
    headers = {"rate_limited": {"Retry-After": "1"},
               "service_unavailable": {"Retry-After": str(RETRY_AFTER_S)}}.get(code)
    return ApiError(status, type_, code, message, param, extra=extra, headers=headers)


def _refusal(attempt: Callable[[], object]) -> ApiError:
    try:
        attempt()
    except ApiError as e:
        return e
    raise AssertionError(f"{attempt} was not refused")


def input_refusals(model: type[BaseModel]) -> list[ApiError]:
    """The real answers to a malformed body, a missing, an unknown and each wrongly typed parameter of `model`."""
    valid = next(iter(REQUEST_EXAMPLES.get(model, EMPTY_BODY_EXAMPLE).values()))
    tries = [{}, {**valid, "colour": "red"}, *({**valid, name: []} for name in model.model_fields)]
    found = [_refusal(lambda: parse_body(model, b'{"sku": ', JSON))]
    for data in tries:
        try:
            parse_body(model, json.dumps(data).encode(), JSON)
        except ApiError as e:
            found.append(e)
    return found


def endpoint_errors(method: str, path_params: list[str], endpoint: Endpoint, op: Operation) -> list[ApiError]:
    """An example of every refusal this operation can answer, in the order the checks run."""
    codes = ["api_key_missing", "api_key_invalid", "api_key_revoked", "rate_limited"]
    if KIND_PUBLISHABLE not in endpoint.keys:
        codes.append("publishable_key_not_allowed")
    codes += ["secret_key_from_browser", "scope_missing"]
    if endpoint.shopper == "required":
        codes.append("shopper_token_missing")
    if endpoint.shopper != "none":
        codes += ["shopper_token_invalid", "shopper_token_expired"]
    found = [catalogue_error(c) for c in codes]
    if endpoint.body is not None:
        found += [catalogue_error("body_too_large"), catalogue_error("body_invalid"),
                  _refusal(lambda: parse_body(endpoint.body, b"{}", "text/plain")), *input_refusals(endpoint.body)]
    if endpoint.query is not None:
        found += input_refusals(endpoint.query)[1:]  # [1:]: a query string is never malformed JSON
    if method == "POST":
        found.append(_refusal(lambda: validate_key("clé")))
    if endpoint.versioned:
        found.append(_refusal(lambda: expected_version("latest", None)))
    codes: list[str | ApiError] = []
    if method == "POST" and endpoint.replay:
        codes += ["idempotency_key_mismatch", "idempotency_key_in_use"]
    if path_params:
        codes.append("resource_missing")
    if endpoint.versioned:
        codes.append("cart_version_conflict")
    codes += op.errors
    if op.asks:
        codes.append("upstream_timeout")
    codes += ["internal_error", "service_unavailable"]  # every /v1 route reads the database (the key)
    found += [c if isinstance(c, ApiError) else catalogue_error(c) for c in codes]
    unique: dict[tuple[str, str | None], ApiError] = {}
    for e in found:
        unique.setdefault((e.code, e.param), e)
    return list(unique.values())


def _responses(op: Operation, refusals: list[ApiError], method: str, endpoint: Endpoint) -> dict[str, Any]:
    headers: dict[str, Any] = {"Request-Id": {"$ref": "#/components/headers/RequestId"}}
    if op.answers is schemas.Cart:
        headers["ETag"] = {"$ref": "#/components/headers/ETag"}
    if method == "POST" and endpoint.replay:
        headers[REPLAYED_HEADER] = {"$ref": "#/components/headers/IdempotentReplayed"}
    responses: dict[str, Any] = {str(op.status): {
        "description": (op.answers.__doc__ or op.answers.__name__).strip().splitlines()[0],
        "headers": headers,
        "content": {JSON: {"schema": _ref(op.answers), "examples": {op.answers.__name__: {"value": op.example()}}}},
    }}
    by_status: dict[int, list[ApiError]] = {}
    for e in refusals:
        by_status.setdefault(e.status, []).append(e)
    for status, group in sorted(by_status.items()):
        codes = list(dict.fromkeys(e.code for e in group))
        model = schemas.OverCreditLimit if codes == ["over_credit_limit"] else schemas.ErrorResponse
        examples: dict[str, Any] = {}
        for e in group:
            name = e.code if e.code not in examples else f"{e.code} ({e.param})"
            examples[name] = {"summary": f"{e.type}: {e.code}" + (f" ({e.param})" if e.param else ""),
                              "value": e.body(RID)}
        error_headers = {"Request-Id": {"$ref": "#/components/headers/RequestId"}}
        if any("Retry-After" in e.headers for e in group):
            error_headers["Retry-After"] = {"$ref": "#/components/headers/RetryAfter"}
        responses[str(status)] = {
            "description": ", ".join(codes),
            "headers": error_headers,
            "content": {JSON: {"schema": _ref(model), "examples": examples}},
        }
    return responses


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`X | None` as a query parameter's schema is just X: an absent parameter is the null."""
    options = [s for s in schema.get("anyOf", ()) if s.get("type") != "null"]
    if len(options) == 1:
        rest = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
        return {**options[0], **rest}
    return schema


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    example: dict[str, Any] = {}  # each parameter's value in the first example that gives it
    for given in REQUEST_EXAMPLES.get(model, {}).values():
        example = {**given, **example}
    return [{"name": name, "in": "query", "required": name in required, "schema": _non_null(prop),
             **({"example": example[name]} if name in example else {})}
            for name, prop in schema["properties"].items()]


def _security(endpoint: Endpoint) -> list[dict[str, list]]:
    with_token = {"apiKey": [], "shopperToken": []}
    return {"required": [with_token], "optional": [with_token, {"apiKey": []}],
            "none": [{"apiKey": []}]}[endpoint.shopper]


def _description(op: Operation, endpoint: Endpoint) -> str:
    keys = "secret or publishable key" if KIND_PUBLISHABLE in endpoint.keys else "secret key"
    shopper = {"required": "required", "optional": "optional", "none": "not used"}[endpoint.shopper]
    return f"{op.description}\n\n**Key:** {keys}. **Shopper token:** {shopper}.".strip()


def _catalogue_table() -> str:
    rows = "\n".join(f"| {status} | {type_} | `{code}` |"
                     for code, (status, type_, _, _) in sorted(ERRORS.items(), key=lambda kv: (kv[1][0], kv[1][1])))
    return "| status | type | code |\n|---|---|---|\n" + rows


DESCRIPTION = f"""\
The Harmon Storefront API: contract prices, carts, GCT and credit-checked B2B checkout.

**Authentication.** Every `/v1` route takes an API key, `Authorization: Bearer hk_<test|live>_<sec|pub>_…`:
secret keys (server-side only) may call every route, publishable keys only read the catalog. Routes that act
for a signed-in customer also take `{SHOPPER_HEADER}` (from `POST /v1/shopper_tokens`). In this reference,
**Authorize** with a secret key (and a shopper token) and use **Try it out**: it calls this gateway.

**Checks run in one order**, so every request has one answer: too many failed authentications from this
address (429) → API key (401) → the key's rate limit (429, with `Retry-After`) → key kind and scope (403; a
secret key from a browser origin is `secret_key_from_browser`) → shopper token (401) → request validation
(400/413/415, nothing stored) → idempotency (409) → the operation (404 for another customer's, tenant's or
mode's object, then 409/402).

**Browsers** (cross-origin requests) may use publishable keys only, on the catalog routes; those answer with
`Access-Control-Allow-Origin`. Secret keys belong on your server.

**Money** is integer minor units (cents) beside an ISO `currency`; times are ISO-8601 UTC; ids carry a prefix
(`cart_`, `cli_`, `ord_`, `inv_`, `cus_`, `we_`, `evt_`, `wda_`, `req_`).

**Idempotency.** Every POST accepts `{KEY_HEADER}`; the first final answer is stored and replayed with
`{REPLAYED_HEADER}: true`. Retrying after a 5xx or a 504 with the same key is safe.

**over_credit_limit** is a state, not a crash: checkout answers 402 with the credit figures, the shortfall and
`remedies` (the largest order total that fits, and the open invoices whose payment would cover the shortfall),
and the cart stays intact.

**Errors** have one shape, `{{"error": {{"type", "code", "message", "param", "request_id"}}}}`, and every answer
carries a `Request-Id` header. The catalogue:

"""


def build_openapi(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the app's /v1 routes."""
    paths: dict[str, dict[str, Any]] = {}
    bodies: list[type[BaseModel]] = []
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if not path.startswith("/v1/") or route.method == "HEAD":  # HEAD: aiohttp's twin of every GET
            continue
        endpoint: Endpoint = route.handler.endpoint  # create_app has refused /v1 routes without one
        name = route.handler.__name__
        op = OPERATIONS.get(name)
        if op is None:
            raise RuntimeError(f"{route.method} {path} ({name}) is not in openapi.OPERATIONS: document it")
        path_params = re.findall(r"{(\w+)}", path)
        parameters: list[dict[str, Any]] = [
            {"name": p, "in": "path", "required": True, "schema": PATH_PARAMS[p][0], "example": PATH_PARAMS[p][1]}
            for p in path_params]
        if endpoint.query is not None:
            parameters += _query_parameters(endpoint.query)
        if route.method == "POST":
            parameters.append({"$ref": "#/components/parameters/IdempotencyKey"})
        if endpoint.versioned:
            parameters.append({"$ref": "#/components/parameters/IfMatch"})
        operation: dict[str, Any] = {
            "operationId": name, "summary": op.summary, "description": _description(op, endpoint),
            "tags": [path.split("/")[2]], "security": _security(endpoint),
        }
        if parameters:
            operation["parameters"] = parameters
        if endpoint.body is not None:
            bodies.append(endpoint.body)
            examples = REQUEST_EXAMPLES.get(endpoint.body, EMPTY_BODY_EXAMPLE)
            operation["requestBody"] = {
                "required": bool(endpoint.body.model_fields),  # a model without fields also takes no body
                "content": {JSON: {"schema": _ref(endpoint.body),
                                   "examples": {k: {"value": v} for k, v in examples.items()}}},
            }
        refusals = endpoint_errors(route.method, path_params, endpoint, op)
        operation["responses"] = _responses(op, refusals, route.method, endpoint)
        if path in paths and route.method.lower() in paths[path]:
            raise RuntimeError(f"{route.method} {path} is routed twice")
        paths.setdefault(path, {})[route.method.lower()] = operation

    models = [(m, "serialization") for m in RESPONSE_MODELS] + [(m, "validation") for m in dict.fromkeys(bodies)]
    _, definitions = models_json_schema(models, ref_template="#/components/schemas/{model}")
    return {
        "openapi": "3.1.0",
        "info": {"title": "Harmon Storefront API", "version": VERSION,
                 "description": DESCRIPTION + _catalogue_table()},
        "servers": [{"url": "/", "description": "this gateway"}],
        "tags": [{"name": t} for t in dict.fromkeys(p.split("/")[2] for p in paths)],
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}), "securitySchemes": SECURITY_SCHEMES,
            "parameters": PARAMETERS, "headers": HEADERS,
        },
    }
