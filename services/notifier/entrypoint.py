"""Subscriptions of the notifier: every public event of orders.events.v1 and invoices.events.v1, and the webhook
commands and queries on notifier.commands.v1 (libs/contracts/webhooks.py)."""

from libs.contracts import topics
from libs.contracts import webhooks as w
from libs.contracts.invoices import (InvoiceDueDateSet, InvoiceIssued, InvoiceOverdue, InvoicePaid, InvoiceVoided,
                                     PaymentApplied, PaymentUnapplied)
from libs.contracts.orders import (FulfilmentDelivered, OrderCancelled, OrderConfirmed, OrderDelivered,
                                   OrderFulfilled, OrderPartiallyFulfilled)
from libs.runtime.context import ServiceContext, subscribe

from . import handlers

ORDER_EVENTS = (OrderConfirmed, OrderPartiallyFulfilled, OrderFulfilled, OrderDelivered, OrderCancelled)
INVOICE_EVENTS = (InvoiceIssued, InvoicePaid, InvoiceVoided, InvoiceOverdue)
# on the same topics but not public: routed as queries (nothing written, no inbox row), since a type no route
# takes would be dead-lettered
NOT_PUBLIC = {topics.ORDERS_EVENTS: (FulfilmentDelivered,),
              topics.INVOICES_EVENTS: (InvoiceDueDateSet, PaymentApplied, PaymentUnapplied)}


def register(ctx: ServiceContext) -> None:
    subscribe(ctx, topics.ORDERS_EVENTS, {t: handlers.record_order_event for t in ORDER_EVENTS},
              queries={t: handlers.not_public for t in NOT_PUBLIC[topics.ORDERS_EVENTS]})
    subscribe(ctx, topics.INVOICES_EVENTS, {t: handlers.record_invoice_event for t in INVOICE_EVENTS},
              queries={t: handlers.not_public for t in NOT_PUBLIC[topics.INVOICES_EVENTS]})
    subscribe(ctx, topics.NOTIFIER_COMMANDS, {
        w.CreateWebhookEndpoint: handlers.create_webhook_endpoint,
        w.UpdateWebhookEndpoint: handlers.update_webhook_endpoint,
        w.DeleteWebhookEndpoint: handlers.delete_webhook_endpoint,
        w.RotateWebhookSecret: handlers.rotate_webhook_secret,
    }, queries={
        w.GetWebhookEndpoint: handlers.get_webhook_endpoint,
        w.ListWebhookEndpoints: handlers.list_webhook_endpoints,
        w.ListWebhookDeliveries: handlers.list_webhook_deliveries,
        w.GetEvent: handlers.get_event,
        w.ListEvents: handlers.list_events,
    })
