"""The webhook and event routes (issue 15) as the gateway runs them, over a fake correlator: which command goes to
notifier.commands.v1 with which key, what the answer looks like (a secret only where it belongs), how bodies and
queries are checked, and how notifier's refusals are rendered. No broker, no database.

The middlewares are every route's; their cells are the e2e auth matrix and isolation tests."""

import json
from datetime import UTC, datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from libs.contracts import topics
from libs.contracts.base import Failure, Message
from libs.contracts.webhooks import (EVENT_TYPES, CreateWebhookEndpoint, DeleteWebhookEndpoint, EventList, GetEvent,
                                     GetWebhookEndpoint, ListEvents, ListWebhookDeliveries, ListWebhookEndpoints,
                                     RotateWebhookSecret, UpdateWebhookEndpoint, WebhookDeliveryList,
                                     WebhookEndpointDeleted, WebhookEndpointList)
from services.gateway import schemas
from services.gateway.app import create_app
from services.gateway.config import Settings
from services.gateway.correlator import CORRELATOR
from services.gateway.errors import ApiError
from services.gateway.idempotency import idempotency_middleware
from services.gateway.routes import parse_body, parse_query
from services.gateway.routes.events import EventsQuery, get_event, list_events
from services.gateway.routes.webhooks import (CreateEndpointBody, RotateSecretBody, UpdateEndpointBody,
                                              create_webhook_endpoint, delete_webhook_endpoint,
                                              get_webhook_endpoint, list_webhook_deliveries,
                                              list_webhook_endpoints, rotate_webhook_secret,
                                              update_webhook_endpoint)
from services.gateway.state import BODY, CALLER, MINTED_ID, SCOPES, Caller
from tests.unit.gateway_fakes import FakeCorrelator

SECRET = "unit-test-signing-secret-0123456789abcdefghij"
JSON = "application/json"
ENDPOINT = schemas.EXAMPLE_ENDPOINT.endpoint_id
EVENT = schemas.EXAMPLE_EVENT.event_id
WHSEC = schemas.EXAMPLE_NEW_ENDPOINT.secret
WRITES = (create_webhook_endpoint, update_webhook_endpoint, delete_webhook_endpoint, rotate_webhook_secret)
READS = (list_webhook_endpoints, get_webhook_endpoint, list_webhook_deliveries, list_events, get_event)


def request(method: str, path: str, reply: Message, *, match_info: dict | None = None, body=None,
            livemode: bool = False, minted: str | None = None) -> tuple[web.Request, FakeCorrelator]:
    app = web.Application()
    fake = FakeCorrelator(reply)
    app[CORRELATOR] = fake  # type: ignore[assignment]
    req = make_mocked_request(method, path, app=app, match_info=match_info or {})
    req[CALLER] = Caller(tenant_id="ten_A", livemode=livemode, kind="secret", key_id="key_1", hint="hk_…x")
    if body is not None:
        req[BODY] = body
    if minted is not None:
        req[MINTED_ID] = minted
    return req, fake


def answer(response: web.Response) -> dict:
    return json.loads(response.body)


def body_of(model, data: dict):
    return parse_body(model, json.dumps(data).encode(), JSON)[0]


def refused(model, data: dict) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_body(model, json.dumps(data).encode(), JSON)
    return info.value


# --- declarations --------------------------------------------------------------------------------

def test_the_scopes_split_reading_from_writing_and_no_route_takes_a_shopper_token():
    assert {"webhooks:read", "webhooks:write"} <= set(SCOPES)
    for handler in WRITES:
        assert handler.endpoint.scope == "webhooks:write", handler.__name__  # type: ignore[attr-defined]
    for handler in READS:
        assert handler.endpoint.scope == "webhooks:read", handler.__name__  # type: ignore[attr-defined]
    for handler in WRITES + READS:
        ep = handler.endpoint  # type: ignore[attr-defined]
        assert (ep.shopper, ep.keys) == ("none", frozenset({"secret"})), handler.__name__


def test_the_routes_are_served():
    app = create_app(Settings(database_url="postgresql://u@h/d", signing_secret=SECRET))
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    assert {("POST", "/v1/webhook_endpoints"), ("GET", "/v1/webhook_endpoints"),
            ("GET", "/v1/webhook_endpoints/{endpoint_id}"), ("POST", "/v1/webhook_endpoints/{endpoint_id}"),
            ("DELETE", "/v1/webhook_endpoints/{endpoint_id}"),
            ("POST", "/v1/webhook_endpoints/{endpoint_id}/rotate_secret"),
            ("GET", "/v1/webhook_endpoints/{endpoint_id}/deliveries"), ("GET", "/v1/events"),
            ("GET", "/v1/events/{event_id}")} <= served


# --- endpoints -----------------------------------------------------------------------------------

async def test_create_sends_the_minted_id_and_answers_the_secret_once():
    body = body_of(CreateEndpointBody, {"url": "https://shop.example.com/hooks",
                                        "enabled_events": ["order.confirmed", "invoice.issued", "order.confirmed"],
                                        "description": "order sync"})
    req, fake = request("POST", "/v1/webhook_endpoints", schemas.EXAMPLE_NEW_ENDPOINT, body=body, minted=ENDPOINT,
                        livemode=True)
    response = await create_webhook_endpoint(req)
    [(topic, key, cmd, tenant, livemode)] = fake.asked
    assert (topic, key, tenant, livemode) == (topics.NOTIFIER_COMMANDS.name, ENDPOINT, "ten_A", True)
    assert cmd == CreateWebhookEndpoint(endpoint_id=ENDPOINT, url="https://shop.example.com/hooks",
                                        enabled_events=["order.confirmed", "invoice.issued"],  # a repeat dropped
                                        description="order sync")
    got = answer(response)
    assert response.status == 201
    assert got == {"id": ENDPOINT, "object": "webhook_endpoint", "livemode": True,
                   "url": "https://shop.example.com/harmon/webhooks",
                   "enabled_events": ["order.confirmed", "invoice.issued"], "description": "order sync",
                   "status": "enabled", "created": "2025-03-14T15:09:26Z", "secret": WHSEC}


@pytest.mark.parametrize("events, param", [
    (["order.confirmed", "order.shipped"], "enabled_events[1]"),
    (["*", 7], "enabled_events[1]"),
    (["ORDER.CONFIRMED"], "enabled_events[0]"),
    ([], "enabled_events"),
    ("order.confirmed", "enabled_events"),
])
def test_an_unknown_event_type_is_parameter_invalid_at_its_index(events, param):
    e = refused(CreateEndpointBody, {"url": "https://shop.example.com/hooks", "enabled_events": events})
    assert (e.status, e.code, e.param) == (400, "parameter_invalid", param)
    e = refused(UpdateEndpointBody, {"enabled_events": events})
    assert (e.status, e.code, e.param) == (400, "parameter_invalid", param)


def test_every_event_type_and_the_wildcard_may_be_subscribed():
    body = body_of(CreateEndpointBody, {"url": "http://127.0.0.1:9/h", "enabled_events": [*EVENT_TYPES, "*"]})
    assert body.enabled_events == [*EVENT_TYPES, "*"]


@pytest.mark.parametrize("data, code, param", [
    ({"enabled_events": ["*"]}, "parameter_missing", "url"),
    ({"url": "https://shop.example.com/hooks"}, "parameter_missing", "enabled_events"),
    ({"url": "ftp://shop.example.com/", "enabled_events": ["*"]}, "parameter_invalid", "url"),
    ({"url": "https://shop.example.com/a b", "enabled_events": ["*"]}, "parameter_invalid", "url"),
    ({"url": "https://x.example/", "enabled_events": ["*"], "secret": "whsec_mine"}, "parameter_unknown", "secret"),
    ({"url": "https://x.example/", "enabled_events": ["*"], "status": "disabled"}, "parameter_unknown", "status"),
])
def test_a_create_body_is_checked_before_notifier_is_asked(data, code, param):
    e = refused(CreateEndpointBody, data)
    assert (e.status, e.code, e.param) == (400, code, param)


async def test_a_url_notifier_refuses_is_400_url_invalid_with_param_url():
    body = body_of(CreateEndpointBody, {"url": "https://10.0.0.7/hooks", "enabled_events": ["*"]})
    failure = Failure(code="url_invalid", message="10.0.0.7 is a private address", param="url")
    req, _ = request("POST", "/v1/webhook_endpoints", failure, body=body, minted=ENDPOINT, livemode=True)
    with pytest.raises(ApiError) as info:
        await create_webhook_endpoint(req)
    e = info.value
    assert (e.status, e.type, e.code, e.param) == (400, "invalid_request_error", "url_invalid", "url")


async def test_endpoints_are_listed_without_their_secrets_whatever_notifier_sends():
    leaked = schemas.EXAMPLE_NEW_ENDPOINT  # carries a secret: a list must not show it even then
    reply = WebhookEndpointList(endpoints=[leaked, schemas.EXAMPLE_DISABLED_ENDPOINT], has_more=True)
    req, fake = request("GET", "/v1/webhook_endpoints", reply)
    req = req.clone(rel_url=f"/v1/webhook_endpoints?limit=2&starting_after={ENDPOINT}")
    got = answer(await list_webhook_endpoints(req))
    [(topic, key, cmd, _, _)] = fake.asked
    assert (topic, key, cmd) == (topics.NOTIFIER_COMMANDS.name, "ten_A",
                                 ListWebhookEndpoints(limit=2, starting_after=ENDPOINT))
    assert (got["object"], got["url"], got["has_more"]) == ("list", "/v1/webhook_endpoints", True)
    assert [e["status"] for e in got["data"]] == ["enabled", "disabled"]
    assert WHSEC not in json.dumps(got) and not any("secret" in e for e in got["data"])


async def test_an_endpoint_is_read_without_its_secret_and_anothers_is_not_found():
    req, fake = request("GET", f"/v1/webhook_endpoints/{ENDPOINT}", schemas.EXAMPLE_NEW_ENDPOINT,
                        match_info={"endpoint_id": ENDPOINT})
    got = answer(await get_webhook_endpoint(req))
    assert fake.asked[0][1:3] == (ENDPOINT, GetWebhookEndpoint(endpoint_id=ENDPOINT))
    assert "secret" not in got and got["id"] == ENDPOINT
    req, _ = request("GET", f"/v1/webhook_endpoints/{ENDPOINT}",
                     Failure(code="resource_missing", message="no such webhook endpoint", param="endpoint_id"),
                     match_info={"endpoint_id": ENDPOINT})
    with pytest.raises(ApiError) as info:
        await get_webhook_endpoint(req)
    assert (info.value.status, info.value.code) == (404, "resource_missing")


@pytest.mark.parametrize("handler, method, suffix", [
    (get_webhook_endpoint, "GET", ""), (delete_webhook_endpoint, "DELETE", ""),
    (list_webhook_deliveries, "GET", "/deliveries")])
async def test_an_id_that_cannot_be_an_endpoint_asks_nobody(handler, method, suffix):
    req, fake = request(method, f"/v1/webhook_endpoints/ord_1{suffix}", schemas.EXAMPLE_ENDPOINT,
                        match_info={"endpoint_id": "ord_1"})
    with pytest.raises(ApiError) as info:
        await handler(req)
    assert (info.value.status, info.value.code, info.value.param) == (404, "resource_missing", "endpoint_id")
    assert fake.asked == []


async def test_an_update_sends_only_what_is_given():
    body = body_of(UpdateEndpointBody, {"disabled": True})
    req, fake = request("POST", f"/v1/webhook_endpoints/{ENDPOINT}", schemas.EXAMPLE_DISABLED_ENDPOINT,
                        match_info={"endpoint_id": ENDPOINT}, body=body)
    got = answer(await update_webhook_endpoint(req))
    [(topic, key, cmd, _, _)] = fake.asked
    assert (topic, key) == (topics.NOTIFIER_COMMANDS.name, ENDPOINT)
    assert cmd == UpdateWebhookEndpoint(endpoint_id=ENDPOINT, disabled=True)
    assert (got["status"], got["enabled_events"]) == ("disabled", ["*"]) and "secret" not in got


@pytest.mark.parametrize("data, param", [({"disabled": "yes"}, "disabled"), ({"disabled": 1}, "disabled"),
                                         ({"url": "javascript:alert(1)"}, "url"), ({"secret": "x"}, "secret")])
def test_an_update_body_is_checked(data, param):
    assert refused(UpdateEndpointBody, data).param == param


async def test_delete_answers_the_deleted_endpoint():
    req, fake = request("DELETE", f"/v1/webhook_endpoints/{ENDPOINT}", WebhookEndpointDeleted(endpoint_id=ENDPOINT),
                        match_info={"endpoint_id": ENDPOINT}, livemode=True)
    got = answer(await delete_webhook_endpoint(req))
    assert fake.asked[0][1:3] == (ENDPOINT, DeleteWebhookEndpoint(endpoint_id=ENDPOINT))
    assert got == {"id": ENDPOINT, "object": "webhook_endpoint", "livemode": True, "deleted": True}


async def test_rotate_sends_the_overlap_and_answers_the_new_secret():
    body = body_of(RotateSecretBody, {"expires_in_s": 3600})
    req, fake = request("POST", f"/v1/webhook_endpoints/{ENDPOINT}/rotate_secret", schemas.EXAMPLE_NEW_ENDPOINT,
                        match_info={"endpoint_id": ENDPOINT}, body=body)
    got = answer(await rotate_webhook_secret(req))
    assert fake.asked[0][1:3] == (ENDPOINT, RotateWebhookSecret(endpoint_id=ENDPOINT, expires_in_s=3600))
    assert got["secret"] == WHSEC
    assert body_of(RotateSecretBody, {}).expires_in_s == 86_400  # the default, 24 h
    assert body_of(RotateSecretBody, {"expires_in_s": 0}).expires_in_s == 0


@pytest.mark.parametrize("value", [-1, 7 * 86_400 + 1, "3600", 1.5, True])
def test_the_rotation_overlap_is_whole_seconds_up_to_a_week(value):
    e = refused(RotateSecretBody, {"expires_in_s": value})
    assert (e.code, e.param) == ("parameter_invalid", "expires_in_s")


async def test_deliveries_are_listed_newest_first_as_notifier_answers():
    reply = WebhookDeliveryList(deliveries=[schemas.EXAMPLE_DELIVERED, schemas.EXAMPLE_UNREACHABLE], has_more=False)
    req, fake = request("GET", f"/v1/webhook_endpoints/{ENDPOINT}/deliveries", reply,
                        match_info={"endpoint_id": ENDPOINT})
    req = req.clone(rel_url=f"/v1/webhook_endpoints/{ENDPOINT}/deliveries?limit=5")
    got = answer(await list_webhook_deliveries(req))
    [(_, key, cmd, _, _)] = fake.asked
    assert (key, cmd) == (ENDPOINT, ListWebhookDeliveries(endpoint_id=ENDPOINT, limit=5))
    assert got["url"] == f"/v1/webhook_endpoints/{ENDPOINT}/deliveries"
    delivered, unreachable = got["data"]
    assert delivered == {
        "id": schemas.EXAMPLE_DELIVERED.delivery_id, "object": "webhook_delivery", "endpoint": ENDPOINT,
        "event": EVENT, "event_type": "order.confirmed", "attempt": 2, "created": "2025-03-14T15:10:30Z",
        "outcome": "delivered", "status_code": 200, "error": None, "latency_ms": 87,
        "response_body": '{"received": true}', "next_attempt": None}
    assert (unreachable["outcome"], unreachable["status_code"], unreachable["error"], unreachable["next_attempt"]) == (
        "retrying", None, "timeout", "2025-03-14T15:10:30Z")


# --- events --------------------------------------------------------------------------------------

async def test_events_are_listed_by_type_for_the_keys_tenant_and_mode():
    reply = EventList(events=[schemas.EXAMPLE_EVENT], has_more=True)
    req, fake = request("GET", "/v1/events", reply, livemode=True)
    req = req.clone(rel_url=f"/v1/events?type=order.confirmed&limit=1&starting_after={EVENT}")
    got = answer(await list_events(req))
    [(topic, key, cmd, tenant, livemode)] = fake.asked
    assert (topic, key, tenant, livemode) == (topics.NOTIFIER_COMMANDS.name, "ten_A", "ten_A", True)
    assert cmd == ListEvents(limit=1, starting_after=EVENT, event_type="order.confirmed")
    assert (got["object"], got["url"], got["has_more"]) == ("list", "/v1/events", True)
    [event] = got["data"]
    assert (event["id"], event["object"], event["type"], event["livemode"]) == (EVENT, "event", "order.confirmed", True)


@pytest.mark.parametrize("query, param", [("type=order.shipped", "type"), ("type=*", "type"),
                                          ("starting_after=we_1", "starting_after"), ("limit=0", "limit"),
                                          ("type=order.confirmed&type=invoice.paid", "type")])
def test_event_filters_are_checked(query, param):
    with pytest.raises(ApiError) as info:
        parse_query(EventsQuery, make_mocked_request("GET", f"/v1/events?{query}"))
    assert (info.value.status, info.value.code, info.value.param) == (400, "parameter_invalid", param)


async def test_an_event_shows_its_object_as_the_api_does():
    req, fake = request("GET", f"/v1/events/{EVENT}", schemas.EXAMPLE_EVENT, match_info={"event_id": EVENT})
    got = answer(await get_event(req))
    [(_, key, cmd, _, _)] = fake.asked
    assert (key, cmd) == (EVENT, GetEvent(event_id=EVENT))
    assert got == {"id": EVENT, "object": "event", "type": "order.confirmed", "created": "2025-03-14T15:09:26Z",
                   "livemode": False, "data": {"object": schemas.EXAMPLE_EVENT.data["object"]}}
    assert got["data"]["object"]["object"] == "order" and got["data"]["object"]["id"] == schemas.EXAMPLE_ORDER.order_id
    req, fake = request("GET", "/v1/events/ord_1", schemas.EXAMPLE_EVENT, match_info={"event_id": "ord_1"})
    with pytest.raises(ApiError) as info:
        await get_event(req)
    assert (info.value.status, info.value.code, fake.asked) == (404, "resource_missing", [])


# --- the secret is never stored for an Idempotency-Key replay ------------------------------------

class RecordingStore:
    """The idempotency store's interface, keeping what would be written."""

    def __init__(self):
        from services.gateway.idempotency import Execute
        self.claimed = Execute(lease_until=datetime(2030, 1, 1, tzinfo=UTC), minted_id=ENDPOINT)
        self.finished: list[tuple[int, dict]] = []
        self.leases_in_flight = _NoGauge()

    async def claim(self, *args):
        return self.claimed

    async def finish(self, tenant_id, livemode, key, status, body):
        self.finished.append((status, body))
        return None

    async def release(self, *args):
        raise AssertionError("a 201 is not released")


class _NoGauge:
    def track_inprogress(self):
        import contextlib
        return contextlib.nullcontext()


async def test_the_create_answer_keeps_its_secret_but_the_stored_replay_does_not():
    from services.gateway.idempotency import IDEMPOTENCY_STORE
    body = body_of(CreateEndpointBody, {"url": "https://shop.example.com/hooks", "enabled_events": ["*"]})
    req, fake = request("POST", "/v1/webhook_endpoints", schemas.EXAMPLE_NEW_ENDPOINT, body=body)
    req = req.clone(headers={"Idempotency-Key": "create-1"})
    req.match_info.route.handler = create_webhook_endpoint  # what the router would have matched
    store = RecordingStore()
    req.app[IDEMPOTENCY_STORE] = store  # type: ignore[assignment]
    response = await idempotency_middleware()(req, create_webhook_endpoint)
    assert answer(response)["secret"] == WHSEC  # the caller sees it once
    assert fake.asked[0][2].endpoint_id == ENDPOINT  # the id the key minted: a retry creates no second endpoint
    [(status, stored)] = store.finished
    assert status == 201 and "secret" not in stored and WHSEC not in json.dumps(stored)
    assert stored["id"] == ENDPOINT
