"""Every metric deploy/observability/ reads (the alert rules and the Grafana dashboard) is on a running stack's
/metrics, on the service that should serve it, and says what happened after one checkout (docs/operations.md,
"Metrics and alerts")."""

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from libs.contracts.ids import new_id
from libs.stack.supervisor import SERVICES

from tests.deploy.observability import exposed, referenced

pytestmark = pytest.mark.e2e

BACK_END = [s for s in SERVICES if s != "gateway"]
# where each service-specific family must be (the runtime's are on every service)
OWN = {"gateway": {"harmon_http_requests_total", "harmon_http_request_seconds_bucket",
                   "harmon_idempotency_leases_in_flight"},
       "orders": {"harmon_sagas_in_flight", "harmon_sagas_ended_total"}}
EVERYWHERE = {"harmon_consumer_lag", "harmon_messages_dead_lettered_total", "harmon_handler_seconds_bucket",
              "harmon_broker_up", "harmon_service_info"}
OUTBOX = {"harmon_outbox_unsent", "harmon_outbox_oldest_unsent_seconds"}  # every service that publishes


async def pages(stack) -> dict[str, str]:
    out = {}
    async with aiohttp.ClientSession() as http:
        for service in stack.services:
            async with http.get(f"http://127.0.0.1:{stack.health_ports[service]}/metrics") as r:
                assert r.status == 200, service
                out[service] = await r.text()
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


async def test_every_metric_the_alerts_and_the_dashboard_read_is_served_after_a_checkout(stack, store, shop, until):
    token = await store.token(shop.big)
    cart = await store.cart_with(token, {"sku": "OIL-1L", "quantity": 1})
    placed = await store.checkout(token, cart["id"], key=new_id("k"))
    assert placed.status == 201, placed.body

    async def settled():
        got = await pages(stack)
        done = (value(got["orders"], "harmon_sagas_in_flight") == 0
                and all(value(got[s], "harmon_outbox_unsent") == 0 for s in BACK_END))
        return got if done else None
    got = await until(settled, timeout=30, message="the saga gauge and every outbox sampled after the checkout")

    names = {service: exposed(text) for service, text in got.items()}
    served = set().union(*names.values())
    missing = {name: sorted(where) for name, where in referenced().items() if name not in served}
    assert not missing, f"read by deploy/observability/ and on no service's /metrics: {missing}"
    for service, own in OWN.items():
        assert own <= names[service], (service, own - names[service])
    for service in SERVICES:
        assert EVERYWHERE <= names[service], (service, EVERYWHERE - names[service])
        assert value(got[service], "harmon_service_info", service=service) == 1.0
    for service in BACK_END:
        assert OUTBOX <= names[service], (service, OUTBOX - names[service])
        assert value(got[service], "harmon_outbox_oldest_unsent_seconds") == 0

    # what they say about the checkout just placed
    assert value(got["orders"], "harmon_sagas_ended_total", outcome="confirmed") >= 1
    assert value(got["gateway"], "harmon_http_requests_total", route="/v1/checkout", status="201") >= 1
    assert value(got["gateway"], "harmon_http_request_seconds_count", route="/v1/checkout") >= 1
    assert value(got["gateway"], "harmon_idempotency_leases_in_flight") == 0  # the checkout's lease ended
    for service in SERVICES:  # the dead-letter series exist at 0 from the start: the first one is an increase
        assert value(got[service], "harmon_messages_dead_lettered_total") is not None, service
    # every partition a service reads has its lag: the checkout's topics are all read to the end now
    lags = [s for s in next(f for f in text_string_to_metric_families(got["credit"])
                            if f.name == "harmon_consumer_lag").samples if s.labels["topic"] == "credit.commands.v1"]
    assert len(lags) == stack.partitions and all(s.value == 0 for s in lags), lags
