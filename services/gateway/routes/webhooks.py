"""/v1/webhook_endpoints: the merchant's webhook endpoints and their delivery log, owned by notifier
(docs/api.md, "Webhooks"). Secret keys only, no shopper token: these are the merchant's, not a customer's.

The gateway mints the endpoint id (one per Idempotency-Key) and checks the shape of what it sends; what a URL may
point at (https, public addresses in live mode) is notifier's rule, answered as `url_invalid`.
"""

from typing import Any

from aiohttp import web
from pydantic import Field, StrictBool, StrictInt, field_validator

from libs.contracts import public as objects
from libs.contracts import topics
from libs.contracts.fields import Notes, WebhookDeliveryId, WebhookEndpointId, WebhookUrl
from libs.contracts.ids import WEBHOOK_ENDPOINT
from libs.contracts.webhooks import (EVENT_TYPES, CreateWebhookEndpoint, DeleteWebhookEndpoint, EventType,
                                     GetWebhookEndpoint, ListWebhookDeliveries, ListWebhookEndpoints,
                                     RotateWebhookSecret, UpdateWebhookEndpoint, WebhookDeliveryList,
                                     WebhookEndpointDeleted, WebhookEndpointList, WebhookEndpointView)

from ..state import BODY, CALLER, MINTED_ID, endpoint
from . import Body, ask, parse_query, path_value, refuse

SUBSCRIBABLE = (*EVENT_TYPES, "*")
MAX_ROTATION_OVERLAP_S = 7 * 86_400
# never stored with the answer for an Idempotency-Key replay: the gateway's database holds no signing secret
WITHHELD = ("secret",)


def check_enabled_events(value: Any) -> Any:
    """Each entry a known type or "*", reported as `enabled_events[<i>]`; repeats dropped, order kept."""
    if not isinstance(value, list) or not value:
        raise refuse("parameter_invalid", "enabled_events must be a non-empty list of event types, or [\"*\"]",
                     "enabled_events")
    for i, name in enumerate(value):
        if name not in SUBSCRIBABLE:
            shown = repr(name)[:80]
            raise refuse("parameter_invalid", f"enabled_events[{i}] is {shown}, not an event type: one of "
                                              f"{', '.join(SUBSCRIBABLE)}", f"enabled_events[{i}]")
    return list(dict.fromkeys(value))


class CreateEndpointBody(Body):
    url: WebhookUrl = Field(description="where events are POSTed; live mode: https and a public address")
    enabled_events: list[EventType] = Field(description="the event types to receive, or [\"*\"] for all")
    description: Notes | None = None

    _events = field_validator("enabled_events", mode="before")(check_enabled_events)


class UpdateEndpointBody(Body):
    url: WebhookUrl | None = None
    enabled_events: list[EventType] | None = None
    description: Notes | None = None
    disabled: StrictBool | None = Field(None, description="true stops deliveries, false resumes them")

    @field_validator("enabled_events", mode="before")
    @classmethod
    def _events(cls, value: Any) -> Any:
        return None if value is None else check_enabled_events(value)


class RotateSecretBody(Body):
    expires_in_s: StrictInt = Field(86_400, ge=0, le=MAX_ROTATION_OVERLAP_S,
                                    description="how long the old secret keeps signing beside the new one "
                                                "(0: it stops now)")


class EndpointsQuery(Body):
    limit: int = Field(10, ge=1, le=100)
    starting_after: WebhookEndpointId | None = Field(None, description="the last endpoint id of the page before")


class DeliveriesQuery(Body):
    limit: int = Field(10, ge=1, le=100)
    starting_after: WebhookDeliveryId | None = Field(None, description="the last delivery id of the page before")


def _endpoint_id(request: web.Request) -> str:
    return path_value(request, "endpoint_id", WebhookEndpointId, "webhook endpoint")


def _answer(request: web.Request, view: WebhookEndpointView, status: int = 200) -> web.Response:
    return web.json_response(objects.webhook_endpoint(view, request[CALLER].livemode), status=status)


@endpoint(scope="webhooks:write", shopper="none", body=CreateEndpointBody, mints=WEBHOOK_ENDPOINT,
          withheld=WITHHELD)
async def create_webhook_endpoint(request: web.Request) -> web.Response:
    body: CreateEndpointBody = request[BODY]
    endpoint_id = request[MINTED_ID]
    reply = await ask(request, topics.NOTIFIER_COMMANDS, endpoint_id,
                      CreateWebhookEndpoint(endpoint_id=endpoint_id, url=body.url,
                                            enabled_events=body.enabled_events, description=body.description),
                      WebhookEndpointView)
    return _answer(request, reply, 201)


@endpoint(scope="webhooks:read", shopper="none", query=EndpointsQuery)
async def list_webhook_endpoints(request: web.Request) -> web.Response:
    query = parse_query(EndpointsQuery, request)
    caller = request[CALLER]
    # no id to key by: the tenant's endpoints are read together
    reply = await ask(request, topics.NOTIFIER_COMMANDS, caller.tenant_id,
                      ListWebhookEndpoints(limit=query.limit, starting_after=query.starting_after),
                      WebhookEndpointList)
    data = [objects.webhook_endpoint(e.model_copy(update={"secret": None}), caller.livemode)
            for e in reply.endpoints]  # a list never shows a secret, whatever it is sent
    return web.json_response(objects.listing("/v1/webhook_endpoints", data, reply.has_more))


@endpoint(scope="webhooks:read", shopper="none")
async def get_webhook_endpoint(request: web.Request) -> web.Response:
    endpoint_id = _endpoint_id(request)
    reply = await ask(request, topics.NOTIFIER_COMMANDS, endpoint_id, GetWebhookEndpoint(endpoint_id=endpoint_id),
                      WebhookEndpointView)
    return _answer(request, reply.model_copy(update={"secret": None}))


@endpoint(scope="webhooks:write", shopper="none", body=UpdateEndpointBody)
async def update_webhook_endpoint(request: web.Request) -> web.Response:
    endpoint_id = _endpoint_id(request)
    body: UpdateEndpointBody = request[BODY]
    reply = await ask(request, topics.NOTIFIER_COMMANDS, endpoint_id,
                      UpdateWebhookEndpoint(endpoint_id=endpoint_id, url=body.url, enabled_events=body.enabled_events,
                                            description=body.description, disabled=body.disabled),
                      WebhookEndpointView)
    return _answer(request, reply.model_copy(update={"secret": None}))


@endpoint(scope="webhooks:write", shopper="none")
async def delete_webhook_endpoint(request: web.Request) -> web.Response:
    endpoint_id = _endpoint_id(request)
    reply = await ask(request, topics.NOTIFIER_COMMANDS, endpoint_id, DeleteWebhookEndpoint(endpoint_id=endpoint_id),
                      WebhookEndpointDeleted)
    return web.json_response(objects.deleted_webhook_endpoint(reply.endpoint_id, request[CALLER].livemode))


@endpoint(scope="webhooks:write", shopper="none", body=RotateSecretBody, withheld=WITHHELD)
async def rotate_webhook_secret(request: web.Request) -> web.Response:
    endpoint_id = _endpoint_id(request)
    body: RotateSecretBody = request[BODY]
    reply = await ask(request, topics.NOTIFIER_COMMANDS, endpoint_id,
                      RotateWebhookSecret(endpoint_id=endpoint_id, expires_in_s=body.expires_in_s),
                      WebhookEndpointView)
    return _answer(request, reply)


@endpoint(scope="webhooks:read", shopper="none", query=DeliveriesQuery)
async def list_webhook_deliveries(request: web.Request) -> web.Response:
    endpoint_id = _endpoint_id(request)
    query = parse_query(DeliveriesQuery, request)
    reply = await ask(request, topics.NOTIFIER_COMMANDS, endpoint_id,
                      ListWebhookDeliveries(endpoint_id=endpoint_id, limit=query.limit,
                                            starting_after=query.starting_after),
                      WebhookDeliveryList)
    return web.json_response(objects.listing(f"/v1/webhook_endpoints/{endpoint_id}/deliveries",
                                             [objects.webhook_delivery(d) for d in reply.deliveries], reply.has_more))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/webhook_endpoints", create_webhook_endpoint)
    app.router.add_get("/v1/webhook_endpoints", list_webhook_endpoints)
    app.router.add_get("/v1/webhook_endpoints/{endpoint_id}", get_webhook_endpoint)
    app.router.add_post("/v1/webhook_endpoints/{endpoint_id}", update_webhook_endpoint)
    app.router.add_delete("/v1/webhook_endpoints/{endpoint_id}", delete_webhook_endpoint)
    app.router.add_post("/v1/webhook_endpoints/{endpoint_id}/rotate_secret", rotate_webhook_secret)
    app.router.add_get("/v1/webhook_endpoints/{endpoint_id}/deliveries", list_webhook_deliveries)
