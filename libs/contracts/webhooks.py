"""Webhook endpoints, events and deliveries (notifier owns them): commands and queries on `notifier.commands.v1`
(key: endpoint id; events: event id). docs/api.md, "Webhooks", is the public side."""

from typing import Literal

from pydantic import AwareDatetime, Field

from .base import Message
from .fields import EventId, Notes, WebhookDeliveryId, WebhookEndpointId, WebhookUrl

# The public event types an endpoint may subscribe to ("*": every one).
EVENT_TYPES = ("order.confirmed", "order.partially_fulfilled", "order.fulfilled", "order.delivered",
               "order.cancelled", "invoice.issued", "invoice.paid", "invoice.voided", "invoice.overdue",
               "webhook_endpoint.disabled")

EventType = Literal["order.confirmed", "order.partially_fulfilled", "order.fulfilled", "order.delivered",
                    "order.cancelled", "invoice.issued", "invoice.paid", "invoice.voided", "invoice.overdue",
                    "webhook_endpoint.disabled", "*"]


class WebhookEndpointView(Message):
    type: Literal["WebhookEndpointView"] = "WebhookEndpointView"
    endpoint_id: WebhookEndpointId
    url: WebhookUrl
    enabled_events: list[EventType]
    description: Notes | None = None
    status: Literal["enabled", "disabled"]
    created_at: AwareDatetime
    # the signing secret (`whsec_…`): only in the answer to CreateWebhookEndpoint and RotateWebhookSecret
    secret: str | None = None


class CreateWebhookEndpoint(Message):
    """Answered with the endpoint and its secret; a URL it may not use is `url_invalid` (param `url`)."""

    type: Literal["CreateWebhookEndpoint"] = "CreateWebhookEndpoint"
    endpoint_id: WebhookEndpointId  # minted by the gateway, so the command is keyed by it
    url: WebhookUrl
    enabled_events: list[EventType] = Field(min_length=1, max_length=len(EVENT_TYPES) + 1)
    description: Notes | None = None


class UpdateWebhookEndpoint(Message):
    """Only the fields given change; `disabled` true stops deliveries, false resumes them."""

    type: Literal["UpdateWebhookEndpoint"] = "UpdateWebhookEndpoint"
    endpoint_id: WebhookEndpointId
    url: WebhookUrl | None = None
    enabled_events: list[EventType] | None = Field(default=None, min_length=1, max_length=len(EVENT_TYPES) + 1)
    description: Notes | None = None
    disabled: bool | None = None


class DeleteWebhookEndpoint(Message):
    type: Literal["DeleteWebhookEndpoint"] = "DeleteWebhookEndpoint"
    endpoint_id: WebhookEndpointId


class WebhookEndpointDeleted(Message):
    type: Literal["WebhookEndpointDeleted"] = "WebhookEndpointDeleted"
    endpoint_id: WebhookEndpointId


class RotateWebhookSecret(Message):
    """A new secret (in the answer); the old one keeps signing beside it for `expires_in_s` (0: stops now)."""

    type: Literal["RotateWebhookSecret"] = "RotateWebhookSecret"
    endpoint_id: WebhookEndpointId
    expires_in_s: int = Field(default=86_400, ge=0, le=7 * 86_400)


class GetWebhookEndpoint(Message):
    type: Literal["GetWebhookEndpoint"] = "GetWebhookEndpoint"
    endpoint_id: WebhookEndpointId


class ListWebhookEndpoints(Message):
    type: Literal["ListWebhookEndpoints"] = "ListWebhookEndpoints"
    limit: int = Field(default=10, ge=1, le=100)
    starting_after: WebhookEndpointId | None = None


class WebhookEndpointList(Message):
    type: Literal["WebhookEndpointList"] = "WebhookEndpointList"
    endpoints: list[WebhookEndpointView]
    has_more: bool


class WebhookDeliveryView(Message):
    """One attempt to deliver one event to one endpoint."""

    type: Literal["WebhookDeliveryView"] = "WebhookDeliveryView"
    delivery_id: WebhookDeliveryId
    endpoint_id: WebhookEndpointId
    event_id: EventId
    event_type: str
    attempt: int = Field(ge=1)
    attempted_at: AwareDatetime
    outcome: Literal["delivered", "retrying", "failed"]  # retrying: another attempt is scheduled
    status_code: int | None = None  # the endpoint's answer, if one came
    error: str | None = None  # otherwise its class: timeout, connection_refused, dns, tls, url_invalid, …
    latency_ms: int = Field(ge=0)
    response_body: str = Field(default="", max_length=1024)  # the first 1 KiB of the answer
    next_attempt_at: AwareDatetime | None = None


class ListWebhookDeliveries(Message):
    type: Literal["ListWebhookDeliveries"] = "ListWebhookDeliveries"
    endpoint_id: WebhookEndpointId
    limit: int = Field(default=10, ge=1, le=100)
    starting_after: WebhookDeliveryId | None = None


class WebhookDeliveryList(Message):
    type: Literal["WebhookDeliveryList"] = "WebhookDeliveryList"
    deliveries: list[WebhookDeliveryView]
    has_more: bool


class EventView(Message):
    """A public event: `data.object` is the order or invoice exactly as the API shows it (libs/contracts/public.py)."""

    type: Literal["EventView"] = "EventView"
    event_id: EventId
    event_type: str
    created_at: AwareDatetime
    data: dict


class GetEvent(Message):
    type: Literal["GetEvent"] = "GetEvent"
    event_id: EventId


class ListEvents(Message):
    type: Literal["ListEvents"] = "ListEvents"
    limit: int = Field(default=10, ge=1, le=100)
    starting_after: EventId | None = None
    event_type: str | None = Field(default=None, max_length=64)


class EventList(Message):
    type: Literal["EventList"] = "EventList"
    events: list[EventView]
    has_more: bool
