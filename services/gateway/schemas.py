"""The API's objects as pydantic models, for the reference only: the gateway builds its answers in objects.py.

tests/unit/test_openapi.py validates what objects.py builds against these models (every field, nothing
extra), so the reference cannot drift from the answers. The example views below feed the same builders,
so every example in the reference is a real answer's shape.
"""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from libs.contracts.cart import CartLine as CartLineView
from libs.contracts.cart import CartView
from libs.contracts.credit import CreditAccountView
from libs.contracts.fields import (CartId, CartLineId, Code, Count, Currency, CustomerId, InvoiceId, InvoiceNumber,
                                   Minor, Name, Notes, OrderId, OrderNumber, PoNumber, Shortfall, SignedMinor, Sku,
                                   Terms, Uom)
from libs.contracts.invoices import InvoiceLine as InvoiceLineView
from libs.contracts.invoices import InvoiceView
from libs.contracts.money import TaxCategory
from libs.contracts.orders import FulfilmentLineView, FulfilmentView, OpenInvoice as OpenInvoiceView
from libs.contracts.orders import OrderLine as OrderLineView
from libs.contracts.orders import OrderView, OverCreditLimit as OverCreditLimitView, StatusTransition as StatusTransitionView
from libs.contracts.pricing import LinesPriced, PricedLine, PriceSource, ProductList as ProductListView, ProductView
from libs.contracts.fields import EventId, WebhookDeliveryId, WebhookEndpointId, WebhookUrl
from libs.contracts.webhooks import EVENT_TYPES, EventType
from libs.contracts.webhooks import EventView, WebhookDeliveryView, WebhookEndpointView
from libs.contracts import public

Timestamp = Annotated[datetime, Field(description="ISO-8601, UTC (`Z`)")]
Livemode = Annotated[bool, Field(description="true for live keys' data, false for test keys'")]
BaseQuantity = Annotated[int, Field(ge=1, description="in the product's base unit (`base_uom`)")]


class ApiObject(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CartLine(ApiObject):
    """A cart line as entered, and its quantity settled in base units."""

    id: CartLineId
    object: Literal["cart_line"]
    sku: Sku
    order_uom: Uom = Field(description="the unit the line was entered in")
    order_quantity: int = Field(ge=1)
    factor: int = Field(ge=1, description="base units per order unit")
    base_uom: Uom
    quantity: BaseQuantity


class Cart(ApiObject):
    """The signed-in customer's cart; `version` goes up with every change (send it, or `If-Match`, to write)."""

    id: CartId
    object: Literal["cart"]
    livemode: Livemode
    customer_id: CustomerId
    status: Literal["open", "frozen", "checked_out"] = Field(
        description="frozen while a checkout runs; checked_out once it placed an order (`order_id`)")
    version: int = Field(ge=1)
    order_id: OrderId | None
    lines: list[CartLine]
    created_at: Timestamp
    updated_at: Timestamp


class PricedCartLine(ApiObject):
    line_id: CartLineId
    sku: Sku
    quantity: BaseQuantity
    base_uom: Uom | None
    order_uom: Uom | None
    order_quantity: int | None
    unit_price: Minor = Field(description="per base unit, this customer's contract price")
    price_source: PriceSource = Field(description="customer-specific price, the customer's price list, or list price")
    subtotal: Minor
    tax_category: TaxCategory
    tax_rate_bp: int = Field(ge=0, description="GCT rate in basis points (1500 = 15%)")
    tax: Minor = Field(description="GCT on this line, rounded half-up to the cent")
    total: Minor


class PricedCart(ApiObject):
    """A cart priced now, server-side: contract prices and GCT per line; totals are sums of the rounded lines."""

    object: Literal["priced_cart"]
    livemode: Livemode
    cart_id: CartId
    cart_version: int = Field(ge=1, description="the cart version these prices are for")
    currency: Currency
    subtotal: Minor
    tax: Minor
    total: Minor
    lines: list[PricedCartLine]


class Product(ApiObject):
    """A catalog product; with a shopper token, `unit_price` is that customer's contract price."""

    id: Sku = Field(description="the SKU")
    object: Literal["product"]
    livemode: Livemode
    sku: Sku
    name: Name
    base_uom: Uom
    units: dict[Uom, Count] = Field(description="alternate units and their base units each, e.g. {\"CASE\": 12}")
    tax_category: TaxCategory
    unit_price: Minor | None = Field(description="per base unit; null when the product has no price")
    currency: Currency
    price_source: PriceSource | None


class ProductList(ApiObject):
    object: Literal["list"]
    url: str
    data: list[Product]
    has_more: bool = Field(description="true: ask again with `starting_after` = the last SKU")


class OrderLine(ApiObject):
    """The snapshot of a line as asked (order unit) and settled (base units, price, GCT) at checkout."""

    id: CartLineId = Field(description="the cart line it was")
    object: Literal["order_line"]
    sku: Sku
    order_uom: Uom
    order_quantity: int = Field(ge=1)
    factor: int = Field(ge=1)
    base_uom: Uom
    quantity: BaseQuantity
    unit_price: Minor
    price_source: PriceSource
    subtotal: Minor
    tax_category: TaxCategory
    tax_rate_bp: int = Field(ge=0)
    tax: Minor
    total: Minor
    quantity_fulfilled: int = Field(ge=0, description="base units shipped so far (by the fulfilments)")


OrderStatus = Literal["confirmed", "partially_fulfilled", "fulfilled", "delivered", "cancelled"]


class StatusTransition(ApiObject):
    status: OrderStatus
    at: Timestamp


class FulfilmentLine(ApiObject):
    line_id: CartLineId = Field(description="the order line shipped")
    quantity: BaseQuantity


class Fulfilment(ApiObject):
    """One shipment the ERP recorded, and the invoice it issued."""

    id: Code = Field(description="the ERP's fulfilment id")
    object: Literal["fulfilment"]
    lines: list[FulfilmentLine]
    shipped_at: Timestamp
    carrier: Name | None
    tracking_number: Code | None
    delivered_at: Timestamp | None = Field(description="null until the ERP records the delivery")
    invoice: InvoiceId | None = Field(description="the invoice this shipment issued")


class Order(ApiObject):
    id: OrderId
    object: Literal["order"]
    livemode: Livemode
    order_number: OrderNumber | None = Field(description="`<prefix>-NNNNNN`, unique in the tenant and mode; null "
                                                         "only on orders placed before numbers")
    cart_id: CartId
    customer_id: CustomerId
    bill_to_id: CustomerId = Field(description="the account whose credit the order uses")
    channel: Literal["ECOMMERCE"] = Field(description="set by the server, never taken from a client")
    status: OrderStatus = Field(description="confirmed → partially_fulfilled → fulfilled → delivered, or cancelled")
    terms: Terms = Field(description="payment terms, e.g. cod or net_30")
    currency: Currency
    subtotal: Minor
    tax: Minor
    total: Minor
    notes: Notes | None
    po_number: PoNumber | None
    lines: list[OrderLine]
    status_transitions: list[StatusTransition] = Field(description="every status the order took, and when; oldest "
                                                                   "first")
    fulfilments: list[Fulfilment] = Field(description="oldest first")
    cancellation_reason: Notes | None
    cancelled_by: Literal["customer", "merchant"] | None = Field(
        description="customer: POST /v1/orders/{order_id}/cancel; merchant: the ERP")
    created_at: Timestamp


class OrderList(ApiObject):
    object: Literal["list"]
    url: str
    data: list[Order]
    has_more: bool = Field(description="true: ask again with `starting_after` = the last order's id")


class InvoiceLine(ApiObject):
    """What one order line's shipment bills: the order line's amounts in proportion to the quantity shipped (the
    last invoice of a line takes the remainder, so a line's invoices add up exactly to it)."""

    object: Literal["invoice_line"]
    order_line: CartLineId = Field(description="the order line's id")
    sku: Sku
    base_uom: Uom
    quantity: BaseQuantity
    unit_price: Minor
    subtotal: Minor
    tax_category: TaxCategory
    tax_rate_bp: int = Field(ge=0)
    tax: Minor
    total: Minor


class Invoice(ApiObject):
    """What a fulfilment shipped, to be paid by the bill-to account."""

    id: InvoiceId
    object: Literal["invoice"]
    livemode: Livemode
    invoice_number: InvoiceNumber = Field(description="`<prefix>-INV-NNNNNN`, unique in the tenant and mode")
    order: OrderId
    order_number: OrderNumber | None
    customer: CustomerId = Field(description="the buyer whose order it is")
    bill_to: CustomerId = Field(description="the account that pays")
    fulfilment: Code = Field(description="the shipment it bills")
    status: Literal["open", "paid", "void"] = Field(description="open → paid, or void (its order was cancelled)")
    terms: Terms
    currency: Currency
    subtotal: Minor
    tax: Minor
    total: Minor
    amount_paid: Minor
    amount_due: Minor = Field(description="total − amount_paid; 0 once paid or void")
    overdue: bool = Field(description="past due_at and unpaid")
    lines: list[InvoiceLine]
    issued_at: Timestamp = Field(description="when the fulfilment shipped")
    due_at: Timestamp | None = Field(description="net_<days>: issued_at + days; cod: the delivery's time, null until "
                                                 "it is recorded")
    paid_at: Timestamp | None
    voided_at: Timestamp | None


class InvoiceList(ApiObject):
    object: Literal["list"]
    url: str
    data: list[Invoice]
    has_more: bool = Field(description="true: ask again with `starting_after` = the last invoice's id")


class OpenInvoice(ApiObject):
    """An unpaid invoice of the bill-to account: paying it frees its amount_due of credit."""

    id: InvoiceId
    invoice_number: InvoiceNumber | None
    amount_due: Minor
    due_at: Timestamp | None
    overdue: bool


class CreditAccount(ApiObject):
    """The signed-in customer's credit, as its bill-to account has it."""

    object: Literal["credit_account"]
    livemode: Livemode
    customer_id: CustomerId
    bill_to_id: CustomerId = Field(description="the account whose limit and invoices these are (the customer "
                                               "itself, or its parent)")
    terms: Terms
    currency: Currency
    limit: Minor
    exposure: Minor = Field(description="credit held by open orders + unpaid invoices − unapplied credit")
    available: SignedMinor = Field(description="limit − exposure (negative when already over)")
    unapplied: Minor = Field(description="overpayments not yet used: the next invoices are paid from it")
    open_invoices: list[OpenInvoice] = Field(description="oldest due first")


class ShopperToken(ApiObject):
    """A signed-in customer's JWT: send it as `X-Storefront-Shopper-Token`. Never stored, never replayed."""

    object: Literal["shopper_token"]
    livemode: Livemode
    token: str
    customer_id: CustomerId
    expires_at: Timestamp


class WebhookEndpoint(ApiObject):
    """Where the tenant's events of the key's mode are POSTed, signed with the endpoint's secret."""

    id: WebhookEndpointId
    object: Literal["webhook_endpoint"]
    livemode: Livemode
    url: WebhookUrl
    enabled_events: list[EventType] = Field(description="the event types it receives; [\"*\"]: every one")
    description: Notes | None
    status: Literal["enabled", "disabled"] = Field(
        description="disabled by an update, or by notifier after 3 days of failed deliveries")
    created: Timestamp
    secret: str | None = Field(None, description="`whsec_…`: only in the answers to create and rotate_secret "
                                                 "(never replayed, listed or logged)")


class DeletedWebhookEndpoint(ApiObject):
    id: WebhookEndpointId
    object: Literal["webhook_endpoint"]
    livemode: Livemode
    deleted: Literal[True]


class WebhookEndpointList(ApiObject):
    object: Literal["list"]
    url: str
    data: list[WebhookEndpoint]
    has_more: bool = Field(description="true: ask again with `starting_after` = the last endpoint's id")


class WebhookDelivery(ApiObject):
    """One attempt to deliver one event to the endpoint."""

    id: WebhookDeliveryId
    object: Literal["webhook_delivery"]
    endpoint: WebhookEndpointId
    event: EventId
    event_type: str
    attempt: int = Field(ge=1, description="1 for the first attempt at this event, then 2, 3, …")
    created: Timestamp = Field(description="when the attempt was made")
    outcome: Literal["delivered", "retrying", "failed"] = Field(
        description="delivered: a 2xx; retrying: another attempt is scheduled (`next_attempt`); failed: not retried")
    status_code: int | None = Field(description="the endpoint's HTTP status, if it answered")
    error: str | None = Field(description="otherwise why not: timeout, connection_refused, dns, tls, url_invalid, …")
    latency_ms: int = Field(ge=0)
    response_body: str = Field(max_length=1024, description="the first 1 KiB of the endpoint's answer")
    next_attempt: Timestamp | None


class WebhookDeliveryList(ApiObject):
    object: Literal["list"]
    url: str
    data: list[WebhookDelivery]
    has_more: bool = Field(description="true: ask again with `starting_after` = the last delivery's id")


class EventData(ApiObject):
    object: dict = Field(description="the order, invoice or webhook_endpoint exactly as the API shows it")


class Event(ApiObject):
    """Something that happened to an order, an invoice or a webhook endpoint; also the body of a webhook."""

    id: EventId
    object: Literal["event"]
    type: Literal[EVENT_TYPES]  # type: ignore[valid-type]
    created: Timestamp
    livemode: Livemode
    data: EventData


class EventList(ApiObject):
    object: Literal["list"]
    url: str
    data: list[Event]
    has_more: bool = Field(description="true: ask again with `starting_after` = the last event's id")


class Error(ApiObject):
    type: str = Field(description="the error's family: invalid_request_error, authentication_error, …")
    code: str = Field(description="what went wrong, from the catalogue (see the description above)")
    message: str = Field(description="for people; may change")
    param: str | None = Field(description="the parameter or header at fault")
    request_id: str | None = Field(description="the `Request-Id` of this answer")
    order_id: str | None = Field(None, description="cart_checked_out only: the order the cart became")
    status: OrderStatus | None = Field(None, description="order_not_cancellable only: the order's status now")


class ErrorResponse(ApiObject):
    error: Error


class Credit(ApiObject):
    limit: Minor
    exposure: Minor = Field(description="open orders and unpaid invoices of the bill-to account")
    available: SignedMinor = Field(description="limit − exposure (negative when already over)")
    order_total: Minor
    shortfall: Shortfall = Field(description="how much the order is over what is available")
    currency: Currency


class Remedies(ApiObject):
    """What would let the order through."""

    largest_order_total_that_fits: Minor = Field(description="the largest order total the available credit allows "
                                                             "now")
    open_invoices_to_pay: list[OpenInvoice] = Field(
        description="the oldest-first run of open invoices whose payment would cover the shortfall (all of them "
                    "when even that would not)")


class OverCreditLimit(ApiObject):
    """The over_credit_limit state: the cart is intact; change it, or pay, and check out again with a new key."""

    error: Error
    credit: Credit
    remedies: Remedies
    cart_id: CartId


# --- example data: real contract views, rendered by objects.py ---------------------------------

_AT = datetime(2025, 3, 14, 15, 9, 26, tzinfo=UTC)
_CUSTOMER = "cus_01JD2Y7K2B9E4F6G8H0J2K4M6N"
_CART = "cart_01JD2Z3W5X7Y9Z1A3B5C7D9E1F"
_ORDER = "ord_01JD2Z9P1Q3R5S7T9V1W3X5Y7Z"
_LINES = (("cli_01JD2Z4Q8R3M5N7P9S1T3V5X7Z", "RICE-2KG", "CASE", 1, 12),
          ("cli_01JD2Z5A2B4C6D8E0F2G4H6J8K", "MILK-UHT-1L", "EA", 6, 1))

EXAMPLE_CART = CartView(
    cart_id=_CART, customer_id=_CUSTOMER, status="open", version=3, order_id=None,
    lines=[CartLineView(line_id=lid, sku=sku, order_uom=uom, order_quantity=n, factor=f, base_uom="EA",
                        base_quantity=n * f) for lid, sku, uom, n, f in _LINES],
    created_at=_AT, updated_at=_AT,
)
EXAMPLE_EMPTY_CART = EXAMPLE_CART.model_copy(update={"version": 1, "lines": []})
# RICE-2KG 12 × 1,100 (contract) + 15% GCT; MILK-UHT-1L 6 × 310 (list), zero-rated
EXAMPLE_PRICED = LinesPriced(
    cart_id=_CART, currency="JMD", subtotal=15_060, tax=1_980, total=17_040,
    lines=[
        PricedLine(line_id=_LINES[0][0], sku="RICE-2KG", base_quantity=12, unit_price=1_100, price_source="customer",
                   subtotal=13_200, tax_category=TaxCategory.STANDARD, tax_rate_bp=1500, tax=1_980, total=15_180),
        PricedLine(line_id=_LINES[1][0], sku="MILK-UHT-1L", base_quantity=6, unit_price=310, price_source="list",
                   subtotal=1_860, tax_category=TaxCategory.ZERO_RATED, tax_rate_bp=0, tax=0, total=1_860),
    ],
)
EXAMPLE_PRODUCT = ProductView(sku="RICE-2KG", name="Rice 2 kg", base_uom="EA", units={"CASE": 12},
                              tax_category=TaxCategory.STANDARD, unit_price=1_100, currency="JMD",
                              price_source="customer")
EXAMPLE_PRODUCTS = ProductListView(has_more=True, products=[
    EXAMPLE_PRODUCT,
    ProductView(sku="MILK-UHT-1L", name="UHT milk 1 L", base_uom="EA", units={"CASE": 24},
                tax_category=TaxCategory.ZERO_RATED, unit_price=310, currency="JMD", price_source="list"),
])
EXAMPLE_ORDER = OrderView(
    order_id=_ORDER, cart_id=_CART, customer_id=_CUSTOMER, bill_to_id=_CUSTOMER, status="confirmed", terms="net_30",
    currency="JMD", subtotal=15_060, tax=1_980, total=17_040, notes="Deliver to the back door", po_number="PO-1001",
    lines=[OrderLineView(line_id=p.line_id, sku=p.sku, order_uom=uom, order_quantity=n, factor=f, base_uom="EA",
                         base_quantity=p.base_quantity, unit_price=p.unit_price, price_source=p.price_source,
                         subtotal=p.subtotal, tax_category=p.tax_category, tax_rate_bp=p.tax_rate_bp, tax=p.tax,
                         total=p.total)
           for p, (_, _, uom, n, f) in zip(EXAMPLE_PRICED.lines, _LINES, strict=True)],
    created_at=_AT,
)
EXAMPLE_ORDER = EXAMPLE_ORDER.model_copy(update={
    "order_number": "ACME-000042", "reservation_id": "res_01JD2Z9N0P2Q4R6S8T0V2W4X6Y",
    "status_transitions": [StatusTransitionView(status="confirmed", at=_AT)]})
_SHIPPED = _AT + timedelta(days=1)
_INVOICE = "inv_01JD3A1B3C5D7E9F1G3H5J7K9M"
# the rice line shipped in full, the milk not yet
EXAMPLE_FULFILLED_ORDER = EXAMPLE_ORDER.model_copy(update={
    "status": "partially_fulfilled",
    "lines": [EXAMPLE_ORDER.lines[0].model_copy(update={"quantity_fulfilled": 12}), EXAMPLE_ORDER.lines[1]],
    "status_transitions": [*EXAMPLE_ORDER.status_transitions,
                           StatusTransitionView(status="partially_fulfilled", at=_SHIPPED)],
    "fulfilments": [FulfilmentView(fulfilment_id="SHIP-1001", lines=[FulfilmentLineView(line_id=_LINES[0][0],
                                                                                        quantity=12)],
                                   shipped_at=_SHIPPED, carrier="Knutsford Express", tracking_number="KE-55120",
                                   delivered_at=_SHIPPED + timedelta(hours=5), invoice_id=_INVOICE)]})
EXAMPLE_CANCELLED_ORDER = EXAMPLE_ORDER.model_copy(update={
    "status": "cancelled", "cancellation_reason": "ordered twice", "cancelled_by": "customer",
    "status_transitions": [*EXAMPLE_ORDER.status_transitions, StatusTransitionView(status="cancelled", at=_SHIPPED)]})
_RICE = EXAMPLE_PRICED.lines[0]
EXAMPLE_INVOICE = InvoiceView(
    invoice_id=_INVOICE, invoice_number="ACME-INV-000017", order_id=_ORDER, order_number="ACME-000042",
    customer_id=_CUSTOMER, bill_to_id=_CUSTOMER, fulfilment_id="SHIP-1001", status="open", terms="net_30",
    currency="JMD", subtotal=_RICE.subtotal, tax=_RICE.tax, total=_RICE.total, amount_paid=0, amount_due=_RICE.total,
    lines=[InvoiceLineView(line_id=_RICE.line_id, sku=_RICE.sku, base_uom="EA", quantity=12,
                           unit_price=_RICE.unit_price, subtotal=_RICE.subtotal, tax_category=_RICE.tax_category,
                           tax_rate_bp=_RICE.tax_rate_bp, tax=_RICE.tax, total=_RICE.total)],
    issued_at=_SHIPPED, due_at=_SHIPPED + timedelta(days=30))
EXAMPLE_PAID_INVOICE = EXAMPLE_INVOICE.model_copy(update={
    "status": "paid", "amount_paid": _RICE.total, "amount_due": 0, "paid_at": _SHIPPED + timedelta(days=12)})
EXAMPLE_OPEN_INVOICE = OpenInvoiceView(invoice_id=_INVOICE, invoice_number="ACME-INV-000017",
                                       amount_due=_RICE.total, due_at=EXAMPLE_INVOICE.due_at, overdue=False)
EXAMPLE_CREDIT_ACCOUNT = CreditAccountView(
    customer_id=_CUSTOMER, bill_to_id=_CUSTOMER, terms="net_30", limit=50_000, exposure=_RICE.total,
    available=50_000 - _RICE.total, currency="JMD", unapplied=0, open_invoices=[EXAMPLE_OPEN_INVOICE])
EXAMPLE_OVER_CREDIT_LIMIT = OverCreditLimitView(cart_id=_CART, limit=20_000, exposure=_RICE.total,
                                                available=20_000 - _RICE.total, order_total=17_040,
                                                shortfall=17_040 - (20_000 - _RICE.total), currency="JMD",
                                                largest_order_total_that_fits=20_000 - _RICE.total,
                                                open_invoices_to_pay=[EXAMPLE_OPEN_INVOICE])
EXAMPLE_CUSTOMER = _CUSTOMER
EXAMPLE_TOKEN = ("eyJhbGciOiJIUzI1NiIsImtpZCI6ImhzMjU2LTFhMmIzYzRkNWU2ZjdhOGIiLCJ0eXAiOiJKV1QifQ"
                 ".eyJpc3MiOiJoYXJtb24iLCJzdWIiOiJjdXNfMDFKRDJZN0syQjlFNEY2RzhIMEoySzRNNk4ifQ.c2lnbmF0dXJl")
EXAMPLE_REQUEST_ID = "req_01JD2ZB3C5D7E9F1G3H5J7K9M1"

_ENDPOINT = "we_01JD3B2C4D6E8F0G2H4J6K8M0N"
EXAMPLE_ENDPOINT = WebhookEndpointView(
    endpoint_id=_ENDPOINT, url="https://shop.example.com/harmon/webhooks",
    enabled_events=["order.confirmed", "invoice.issued"], description="order sync", status="enabled",
    created_at=_AT)
EXAMPLE_NEW_ENDPOINT = EXAMPLE_ENDPOINT.model_copy(update={
    "secret": "whsec_3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"})
EXAMPLE_DISABLED_ENDPOINT = EXAMPLE_ENDPOINT.model_copy(update={"status": "disabled", "description": None,
                                                                "enabled_events": ["*"]})
EXAMPLE_EVENT = EventView(event_id="evt_01JD2Z9Q2R4S6T8V0W2X4Y6Z8A", event_type="order.confirmed",
                          created_at=_AT, data={"object": public.order(EXAMPLE_ORDER, False)})
EXAMPLE_DELIVERED = WebhookDeliveryView(
    delivery_id="wda_01JD2Z9R3S5T7V9W1X3Y5Z7A9B", endpoint_id=_ENDPOINT, event_id=EXAMPLE_EVENT.event_id,
    event_type="order.confirmed", attempt=2, attempted_at=_AT + timedelta(seconds=64), outcome="delivered",
    status_code=200, latency_ms=87, response_body='{"received": true}')
EXAMPLE_RETRYING = WebhookDeliveryView(
    delivery_id="wda_01JD2Z9Q9R1S3T5V7W9X1Y3Z5A", endpoint_id=_ENDPOINT, event_id=EXAMPLE_EVENT.event_id,
    event_type="order.confirmed", attempt=1, attempted_at=_AT + timedelta(seconds=1), outcome="retrying",
    status_code=503, latency_ms=412, response_body="Service Unavailable", next_attempt_at=_AT + timedelta(seconds=64))
EXAMPLE_UNREACHABLE = EXAMPLE_RETRYING.model_copy(update={"status_code": None, "error": "timeout",
                                                          "latency_ms": 10_000, "response_body": ""})
