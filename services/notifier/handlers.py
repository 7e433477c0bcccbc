"""Notifier handlers: record each public event once (the order or invoice as the API shows it) and owe it to
every subscribed endpoint; the webhook endpoint commands and the event/delivery queries (notifier.commands.v1,
libs/contracts/webhooks.py; docs/api.md, "Webhooks")."""

import logging

from libs.contracts import public
from libs.contracts import webhooks as w
from libs.contracts.base import Message, Rejection
from libs.contracts.errors import ErrorCode
from libs.contracts.invoices import InvoiceIssued, InvoiceOverdue, InvoicePaid, InvoiceVoided
from libs.contracts.orders import (OrderCancelled, OrderConfirmed, OrderDelivered, OrderFulfilled,
                                   OrderPartiallyFulfilled)

from . import domain
from .domain import Attempt, Endpoint, PublicEvent
from .unit_of_work import NotifierUnitOfWork

log = logging.getLogger("harmon.notifier")

OrderEvent = OrderConfirmed | OrderPartiallyFulfilled | OrderFulfilled | OrderDelivered | OrderCancelled
InvoiceEvent = InvoiceIssued | InvoicePaid | InvoiceVoided | InvoiceOverdue


async def record_event(event: PublicEvent, uow: NotifierUnitOfWork) -> bool:
    """Store the event once and, in the same transaction, owe it to each enabled endpoint of this tenant and
    mode that takes its type (also used by the delivery worker for webhook_endpoint.disabled)."""
    if not await uow.events.record(event):
        return False
    owed = await uow.deliveries.enqueue(event, await uow.endpoints.subscribed(event.type), uow.now)
    log.info("recorded %s for %s, %d deliveries", event.type, event.aggregate_id, owed)
    return True


async def _record(evt: Message, aggregate_id: str, obj: dict, uow: NotifierUnitOfWork) -> None:
    event = PublicEvent.of(evt.type, aggregate_id, uow.message.aggregate_version, {"object": obj},
                           occurred_at=uow.message.occurred_at, received_at=uow.now)
    await record_event(event, uow)


async def record_order_event(evt: OrderEvent, uow: NotifierUnitOfWork) -> None:
    await _record(evt, evt.order.order_id, public.order(evt.order, uow.scope.livemode), uow)


async def record_invoice_event(evt: InvoiceEvent, uow: NotifierUnitOfWork) -> None:
    await _record(evt, evt.invoice.invoice_id, public.invoice(evt.invoice, uow.scope.livemode), uow)


async def not_public(evt: Message, uow: NotifierUnitOfWork) -> None:
    """An event on a topic the notifier reads that subscribers are not shown: read and passed over (routed, so
    the dispatcher does not dead-letter it as an unhandled type)."""
    return None


# --- endpoints --------------------------------------------------------------------------------------------------

def _view(e: Endpoint, secret: str | None = None) -> w.WebhookEndpointView:
    return e.view(secret)


def _missing(endpoint_id: str) -> Rejection:
    return Rejection(ErrorCode.RESOURCE_MISSING, f"no webhook endpoint {endpoint_id}", "id")


async def _endpoint(uow: NotifierUnitOfWork, endpoint_id: str, for_update: bool = False) -> Endpoint:
    endpoint = await uow.endpoints.get(endpoint_id, for_update=for_update)
    if endpoint is None:  # another tenant's or mode's is not visible (row-level security)
        raise _missing(endpoint_id)
    return endpoint


async def create_webhook_endpoint(cmd: w.CreateWebhookEndpoint, uow: NotifierUnitOfWork) -> w.WebhookEndpointView:
    """The endpoint with its first secret (shown in this answer only)."""
    await domain.check_url(cmd.url, uow.scope.livemode, uow.resolve)
    endpoint = Endpoint.create(cmd.endpoint_id, cmd.url, cmd.enabled_events, cmd.description, uow.now)
    if not await uow.endpoints.add(endpoint):
        existing = await uow.endpoints.get(cmd.endpoint_id)
        # the same command again (the gateway retried it): the same answer
        if existing is not None and (existing.url, existing.enabled_events, existing.description) == (
                endpoint.url, endpoint.enabled_events, endpoint.description) and existing.version == 1:
            return _view(existing, existing.secrets[-1].value)
        raise Rejection(ErrorCode.PARAMETER_INVALID, "that webhook endpoint id is in use", "id")
    log.info("webhook endpoint %s created", endpoint.id)  # never the URL's query or the secret
    return _view(endpoint, endpoint.secrets[0].value)


async def update_webhook_endpoint(cmd: w.UpdateWebhookEndpoint, uow: NotifierUnitOfWork) -> w.WebhookEndpointView:
    endpoint = await _endpoint(uow, cmd.endpoint_id, for_update=True)
    if cmd.url is not None:
        await domain.check_url(cmd.url, uow.scope.livemode, uow.resolve)
    changed = endpoint.updated(url=cmd.url, enabled_events=cmd.enabled_events, description=cmd.description,
                               disabled=cmd.disabled)
    if changed is not endpoint:
        await uow.endpoints.save(changed)
    return _view(changed)


async def delete_webhook_endpoint(cmd: w.DeleteWebhookEndpoint, uow: NotifierUnitOfWork) -> w.WebhookEndpointDeleted:
    """Gone (404 after); what was still owed to it is cancelled. Its attempts stay in the log."""
    if not await uow.endpoints.delete(cmd.endpoint_id):
        raise _missing(cmd.endpoint_id)
    cancelled = await uow.deliveries.cancel_for(cmd.endpoint_id)
    log.info("webhook endpoint %s deleted, %d pending deliveries cancelled", cmd.endpoint_id, cancelled)
    return w.WebhookEndpointDeleted(endpoint_id=cmd.endpoint_id)


async def rotate_webhook_secret(cmd: w.RotateWebhookSecret, uow: NotifierUnitOfWork) -> w.WebhookEndpointView:
    endpoint = await _endpoint(uow, cmd.endpoint_id, for_update=True)
    rotated = endpoint.rotated(uow.now, cmd.expires_in_s)
    await uow.endpoints.save(rotated, secrets_changed=True)
    return _view(rotated, rotated.secrets[0].value)


async def get_webhook_endpoint(q: w.GetWebhookEndpoint, uow: NotifierUnitOfWork) -> w.WebhookEndpointView:
    return _view(await _endpoint(uow, q.endpoint_id))


async def list_webhook_endpoints(q: w.ListWebhookEndpoints, uow: NotifierUnitOfWork) -> w.WebhookEndpointList:
    rows = await uow.endpoints.page(q.limit + 1, q.starting_after)
    return w.WebhookEndpointList(endpoints=[_view(e) for e in rows[:q.limit]], has_more=len(rows) > q.limit)


def delivery_view(a: Attempt) -> w.WebhookDeliveryView:
    return w.WebhookDeliveryView(delivery_id=a.id, endpoint_id=a.endpoint_id, event_id=a.event_id,
                                 event_type=a.event_type, attempt=a.attempt, attempted_at=a.attempted_at,
                                 outcome=a.outcome, status_code=a.status_code, error=a.error,
                                 latency_ms=a.latency_ms, response_body=a.response_body,
                                 next_attempt_at=a.next_attempt_at)


async def list_webhook_deliveries(q: w.ListWebhookDeliveries, uow: NotifierUnitOfWork) -> w.WebhookDeliveryList:
    await _endpoint(uow, q.endpoint_id)
    rows = await uow.deliveries.attempts(q.endpoint_id, q.limit + 1, q.starting_after)
    return w.WebhookDeliveryList(deliveries=[delivery_view(a) for a in rows[:q.limit]], has_more=len(rows) > q.limit)


# --- events -----------------------------------------------------------------------------------------------------

def event_view(e: PublicEvent) -> w.EventView:
    return e.view()


async def get_event(q: w.GetEvent, uow: NotifierUnitOfWork) -> w.EventView:
    event = await uow.events.get(q.event_id)
    if event is None:
        raise Rejection(ErrorCode.RESOURCE_MISSING, f"no event {q.event_id}", "id")
    return event_view(event)


async def list_events(q: w.ListEvents, uow: NotifierUnitOfWork) -> w.EventList:
    rows = await uow.events.page(q.limit + 1, q.starting_after, q.event_type)
    return w.EventList(events=[event_view(e) for e in rows[:q.limit]], has_more=len(rows) > q.limit)
