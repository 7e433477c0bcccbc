"""GET /v1/events[/{event_id}]: the tenant's public events in the key's mode, newest first (docs/api.md,
"Webhooks"). Notifier records them; `data.object` is the order or invoice as the API shows it."""

from typing import Literal

from aiohttp import web
from pydantic import Field

from libs.contracts import public as objects
from libs.contracts import topics
from libs.contracts.fields import EventId
from libs.contracts.webhooks import EVENT_TYPES, EventList, EventView, GetEvent, ListEvents

from ..state import CALLER, endpoint
from . import Body, ask, parse_query, path_id

EventTypeName = Literal[EVENT_TYPES]  # type: ignore[valid-type]


class EventsQuery(Body):
    limit: int = Field(10, ge=1, le=100)
    starting_after: EventId | None = Field(None, description="the last event id of the page before")
    type: EventTypeName | None = Field(None, description="only events of this type, e.g. order.confirmed")


@endpoint(scope="webhooks:read", shopper="none", query=EventsQuery)
async def list_events(request: web.Request) -> web.Response:
    query = parse_query(EventsQuery, request)
    caller = request[CALLER]
    reply = await ask(request, topics.NOTIFIER_COMMANDS, caller.tenant_id,
                      ListEvents(limit=query.limit, starting_after=query.starting_after, event_type=query.type),
                      EventList)
    return web.json_response(objects.listing("/v1/events", [objects.event(e, caller.livemode) for e in reply.events],
                                             reply.has_more))


@endpoint(scope="webhooks:read", shopper="none")
async def get_event(request: web.Request) -> web.Response:
    event_id = path_id(request, "event_id", EventId)
    reply = await ask(request, topics.NOTIFIER_COMMANDS, event_id, GetEvent(event_id=event_id), EventView)
    return web.json_response(objects.event(reply, request[CALLER].livemode))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/events", list_events)
    app.router.add_get("/v1/events/{event_id}", get_event)
