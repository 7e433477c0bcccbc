"""The envelope every message travels in, and the one union of every payload type."""

from datetime import UTC, datetime
from typing import Annotated, Union

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from . import cart, credit, erp, invoices, orders, pricing, webhooks
from .base import Failure, Message
from .fields import TenantId, Token
from .ids import MESSAGE, new_id

AnyMessage = Annotated[
    Union[
        Failure,
        # cart
        cart.CreateCart, cart.GetCart, cart.AddLine, cart.ChangeLine, cart.RemoveLine,
        cart.FreezeCart, cart.CompleteCart, cart.ReleaseCart,
        cart.CartView, cart.CartFrozen, cart.CartCompleted, cart.CartReleased,
        # pricing
        pricing.ListProducts, pricing.GetProduct, pricing.PriceLines,
        pricing.ProductView, pricing.ProductList, pricing.LinesPriced, pricing.PriceCheckout, pricing.CheckoutPriced,
        pricing.PriceCart, pricing.CartPriced,
        # credit
        credit.ReserveCredit, credit.ReleaseCredit, credit.GetCreditAccount,
        credit.CreditReserved, credit.CreditRejected, credit.CreditReleased, credit.CreditAccountView,
        credit.CreditExposureChanged,
        # orders
        orders.PlaceOrder, orders.GetOrder, orders.ListOrders, orders.OrderList, orders.OrderView, orders.OverCreditLimit, orders.OrderConfirmed,
        orders.CancelOrder, orders.OrderPartiallyFulfilled, orders.OrderFulfilled, orders.FulfilmentDelivered,
        orders.OrderDelivered, orders.OrderCancelled,
        # invoices (orders owns them)
        invoices.GetInvoice, invoices.ListInvoices, invoices.InvoiceList, invoices.InvoiceView,
        invoices.InvoiceIssued, invoices.InvoiceDueDateSet, invoices.PaymentApplied, invoices.InvoicePaid,
        invoices.InvoiceVoided, invoices.InvoiceOverdue, invoices.PaymentUnapplied,
        # webhooks (notifier owns them)
        webhooks.CreateWebhookEndpoint, webhooks.UpdateWebhookEndpoint, webhooks.DeleteWebhookEndpoint,
        webhooks.RotateWebhookSecret, webhooks.GetWebhookEndpoint, webhooks.ListWebhookEndpoints,
        webhooks.ListWebhookDeliveries, webhooks.GetEvent, webhooks.ListEvents, webhooks.WebhookEndpointView,
        webhooks.WebhookEndpointDeleted, webhooks.WebhookEndpointList, webhooks.WebhookDeliveryView,
        webhooks.WebhookDeliveryList, webhooks.EventView, webhooks.EventList,
        # master data from the ERP
        erp.CustomerUpsert, erp.ProductUpsert, erp.PriceUpsert, erp.CreditLimitUpsert,
        # lifecycle facts from the ERP
        erp.FulfilmentRecorded, erp.DeliveryRecorded, erp.OrderCancellationRecorded, erp.PaymentRecorded,
    ],
    Field(discriminator="type"),
]


class Envelope(BaseModel):
    """Metadata every message carries; `type` mirrors the payload's discriminator."""

    model_config = ConfigDict(extra="ignore", frozen=True)  # see base.py: ignored, never re-emitted

    message_id: Token = Field(default_factory=lambda: new_id(MESSAGE))
    type: str = ""
    occurred_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    tenant_id: TenantId
    livemode: bool
    correlation_id: Token | None = None
    causation_id: Token | None = None
    request_id: Token | None = None
    reply_to: Token | None = None
    aggregate_id: Token | None = None
    aggregate_version: int | None = None
    # W3C trace context of the span that sent it (libs/runtime/tracing.py); also sent as the Kafka header
    traceparent: Token | None = None
    payload: AnyMessage

    @model_validator(mode="before")
    @classmethod
    def _type_from_payload(cls, data: object) -> object:
        if isinstance(data, dict):
            payload = data.get("payload")
            kind = payload.type if isinstance(payload, Message) else (payload or {}).get("type")
            if data.get("type") not in (None, "", kind):
                raise ValueError(f"envelope type {data.get('type')!r} does not match payload type {kind!r}")
            data = {**data, "type": kind}
        return data

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Envelope":
        return _ADAPTER.validate_json(raw)


_ADAPTER = TypeAdapter(Envelope)
