"""Every topic, declared once. Partition counts come from settings; keys are documented beside each topic."""

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    carries: tuple[str, ...]  # payload types (libs.contracts.envelope.AnyMessage) on this topic

    @property
    def dlt(self) -> str:
        return f"{self.name}.dlt"


CART_COMMANDS = TopicSpec("cart.commands.v1", "cart id", ("CreateCart", "GetCart", "AddLine", "ChangeLine", "RemoveLine", "FreezeCart", "CompleteCart", "ReleaseCart"))
PRICING_COMMANDS = TopicSpec("pricing.commands.v1", "cart id or sku", ("PriceLines", "PriceCheckout", "PriceCart", "ListProducts", "GetProduct"))
CREDIT_COMMANDS = TopicSpec("credit.commands.v1", "bill-to account id", ("ReserveCredit", "ReleaseCredit", "GetCreditAccount"))
ORDERS_COMMANDS = TopicSpec("orders.commands.v1", "cart id (CancelOrder, GetOrder: order id; invoices: invoice id)",
                            ("PlaceOrder", "GetOrder", "ListOrders", "CancelOrder", "GetInvoice", "ListInvoices"))
NOTIFIER_COMMANDS = TopicSpec("notifier.commands.v1", "endpoint id (events: event id)",
                              ("CreateWebhookEndpoint", "UpdateWebhookEndpoint", "DeleteWebhookEndpoint",
                               "RotateWebhookSecret", "GetWebhookEndpoint", "ListWebhookEndpoints",
                               "ListWebhookDeliveries", "GetEvent", "ListEvents"))
ORDERS_REPLIES = TopicSpec("orders.replies.v1", "checkout id", ("CartFrozen", "CartCompleted", "CartReleased", "LinesPriced", "CheckoutPriced", "CreditReserved", "CreditRejected", "CreditReleased", "Failure"))
ORDERS_EVENTS = TopicSpec("orders.events.v1", "order id", ("OrderConfirmed", "OrderPartiallyFulfilled", "OrderFulfilled",
                                                            "FulfilmentDelivered", "OrderDelivered", "OrderCancelled"))
INVOICES_EVENTS = TopicSpec("invoices.events.v1", "invoice id (PaymentUnapplied: bill-to account id)",
                            ("InvoiceIssued", "InvoiceDueDateSet", "PaymentApplied", "InvoicePaid", "InvoiceVoided",
                             "InvoiceOverdue", "PaymentUnapplied"))
CREDIT_EVENTS = TopicSpec("credit.events.v1", "bill-to account id", ("CreditReserved", "CreditReleased",
                                                                     "CreditExposureChanged"))
ERP_CUSTOMERS = TopicSpec("erp.customers.v1", "customer id", ("CustomerUpsert",))
ERP_PRODUCTS = TopicSpec("erp.products.v1", "sku", ("ProductUpsert",))
ERP_PRICES = TopicSpec("erp.prices.v1", "sku", ("PriceUpsert",))
ERP_CREDIT_LIMITS = TopicSpec("erp.credit_limits.v1", "customer id", ("CreditLimitUpsert",))
ERP_FULFILMENTS = TopicSpec("erp.fulfilments.v1", "order id", ("FulfilmentRecorded",))
ERP_DELIVERIES = TopicSpec("erp.deliveries.v1", "order id", ("DeliveryRecorded",))
ERP_ORDER_CANCELLATIONS = TopicSpec("erp.order_cancellations.v1", "order id", ("OrderCancellationRecorded",))
ERP_PAYMENTS = TopicSpec("erp.payments.v1", "bill-to account id", ("PaymentRecorded",))

ALL: tuple[TopicSpec, ...] = (
    CART_COMMANDS,
    PRICING_COMMANDS,
    CREDIT_COMMANDS,
    ORDERS_COMMANDS,
    NOTIFIER_COMMANDS,
    ORDERS_REPLIES,
    ORDERS_EVENTS,
    INVOICES_EVENTS,
    CREDIT_EVENTS,
    ERP_CUSTOMERS,
    ERP_PRODUCTS,
    ERP_PRICES,
    ERP_CREDIT_LIMITS,
    ERP_FULFILMENTS,
    ERP_DELIVERIES,
    ERP_ORDER_CANCELLATIONS,
    ERP_PAYMENTS,
)

GATEWAY_REPLIES_PREFIX = "gateway.replies."


def gateway_replies(instance_id: str) -> str:
    """The reply topic of one gateway instance: replies to HTTP-driven commands, keyed by correlation id."""
    return f"{GATEWAY_REPLIES_PREFIX}{instance_id}"


def all_topic_names() -> list[str]:
    """Every declared topic and its dead-letter topic."""
    return [name for spec in ALL for name in (spec.name, spec.dlt)]
