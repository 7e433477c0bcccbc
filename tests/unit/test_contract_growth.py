"""v1 grows by optional fields: a receiver ignores what a newer sender added, and never re-emits it.

The HTTP API and the ERP's records stay strict: both are input from outside, where an unknown field is a
mistake to report, not a newer version to tolerate.
"""

import importlib
import json
import pkgutil

import pytest
from pydantic import BaseModel, ValidationError

import services.gateway.routes
from libs.contracts import cart, orders
from libs.contracts.base import Failure, Message, Record
from libs.contracts.envelope import Envelope
from libs.runtime.unit_of_work import derive
from services.gateway import schemas
from services.gateway.routes import Body, parse_body
from services.gateway.errors import ApiError
from services.gateway.routes.checkout import CheckoutBody

ORDER = schemas.EXAMPLE_ORDER


def newer(env: Envelope, top: dict, payload: dict) -> bytes:
    """`env` as a newer version would send it: fields this version has never heard of, at both levels."""
    raw = env.model_dump(mode="json")
    return json.dumps({**raw, **top, "payload": {**raw["payload"], **payload}}).encode()


def test_an_envelope_from_a_newer_version_parses():
    env = Envelope(tenant_id="ten_1", livemode=False, request_id="req_1",
                   payload=cart.AddLine(cart_id="cart_1", customer_id="cus_1", line_id="cli_1", sku="RICE", quantity=2))
    back = Envelope.from_bytes(newer(env, {"trace_parent": "00-abc-01", "priority": 3}, {"gift_wrap": True}))
    assert back == env  # the same message, as far as this version can tell
    assert isinstance(back.payload, cart.AddLine) and back.payload.quantity == 2


def test_unknown_fields_are_not_re_emitted():
    env = Envelope(tenant_id="ten_1", livemode=False, payload=cart.CreateCart(cart_id="cart_1", customer_id="cus_1"))
    back = Envelope.from_bytes(newer(env, {"trace_parent": "00-abc-01"}, {"channel": "POS"}))
    out = json.loads(back.to_bytes())
    assert "trace_parent" not in out and "channel" not in out["payload"]
    assert out == json.loads(env.to_bytes())
    # nor does anything a handler derives from it carry them
    reply = json.loads(derive(back, Failure(code="resource_missing", message="no cart")).to_bytes())
    assert "trace_parent" not in reply and reply["causation_id"] == env.message_id


def test_unknown_fields_deep_in_a_payload_are_ignored():
    raw = Envelope(tenant_id="ten_1", livemode=False, payload=orders.OrderConfirmed(order=ORDER)).model_dump(mode="json")
    raw["payload"]["order"]["picking"] = {"warehouse": "KIN-1"}
    raw["payload"]["order"]["lines"][0]["lot"] = "L-7"
    back = Envelope.from_bytes(json.dumps(raw).encode())
    assert back.payload.order == ORDER
    assert "lot" not in back.to_bytes().decode() and "picking" not in back.to_bytes().decode()


def test_a_failure_from_a_newer_version_is_still_a_failure():
    raw = Envelope(tenant_id="ten_1", livemode=False, correlation_id="c1",
                   payload=Failure(code="cart_frozen", message="frozen", param="cart_id")).model_dump(mode="json")
    raw["payload"]["retry_after_s"] = 5
    back = Envelope.from_bytes(json.dumps(raw).encode())
    assert type(back.payload) is Failure and back.payload.code == "cart_frozen" and back.type == "Failure"


def test_the_discriminator_still_decides_the_type():
    raw = Envelope(tenant_id="ten_1", livemode=False, payload=cart.GetCart(cart_id="cart_1", customer_id="cus_1"))
    raw = raw.model_dump(mode="json")
    # a message type this version does not know is refused (dead-lettered; replayable once upgraded)
    with pytest.raises(ValidationError, match="union_tag_invalid|does not match any of the expected tags"):
        Envelope.from_bytes(json.dumps({**raw, "type": None, "payload": {**raw["payload"], "type": "GetCart2"}}))
    # no tag at all: refused, however well the fields fit a known type
    untagged = {k: v for k, v in raw["payload"].items() if k != "type"}
    with pytest.raises(ValidationError):
        Envelope.from_bytes(json.dumps({**raw, "type": None, "payload": untagged}))
    # a top-level type that contradicts the payload's is still refused
    with pytest.raises(ValidationError):
        Envelope.from_bytes(json.dumps({**raw, "type": "CreateCart"}))


def test_payloads_stay_frozen():
    line = cart.CreateCart(cart_id="cart_1", customer_id="cus_1")
    with pytest.raises(ValidationError):
        line.cart_id = "cart_2"
    assert hash(line) == hash(cart.CreateCart(cart_id="cart_1", customer_id="cus_1"))


def test_known_fields_are_still_checked():
    with pytest.raises(ValidationError):
        cart.AddLine(cart_id="cart_1", customer_id="cus_1", line_id="cli_1", sku="RICE\x00", quantity=2)


@pytest.mark.parametrize("record, field", [
    ({"type": "PriceUpsert", "price_id": "p1", "sku": "RICE", "unit_amount": 100, "customer-id": "cus_1"}, "customer-id"),
    ({"type": "CustomerUpsert", "customer_id": "cus_1", "name": "Shop", "bill_to": "cus_9"}, "bill_to"),
    ({"type": "ProductUpsert", "sku": "RICE", "name": "Rice", "base_uom": "EA", "unit": {"CASE": 12}}, "unit"),
    ({"type": "CreditLimitUpsert", "customer_id": "cus_1", "limit": 5, "currencey": "USD"}, "currencey"),
])
def test_an_erp_record_with_a_field_we_do_not_know_is_refused(record, field):
    # a misspelt optional field would take its default: a contract price becoming everyone's list price
    raw = json.dumps({"tenant_id": "ten_1", "livemode": False, "payload": record})
    with pytest.raises(ValidationError, match=field):
        Envelope.from_bytes(raw)
    # while the envelope around it may grow like any other
    good = {k: v for k, v in record.items() if k != field}
    assert Envelope.from_bytes(json.dumps({"tenant_id": "ten_1", "livemode": False, "trace": "t", "payload": good}))


def _subclasses(cls: type) -> set[type]:
    return {sub for direct in cls.__subclasses__() for sub in {direct, *_subclasses(direct)}}


def test_the_http_api_still_refuses_unknown_fields():
    for info in pkgutil.iter_modules(services.gateway.routes.__path__):
        importlib.import_module(f"services.gateway.routes.{info.name}")
    bodies = _subclasses(Body)
    assert len(bodies) >= 6  # every request model (query strings too) is a Body
    api_objects = _subclasses(schemas.ApiObject)
    for model in bodies | api_objects:
        assert model.model_config.get("extra") == "forbid", model
        assert not issubclass(model, Message), f"{model} must not inherit the contracts' tolerance"
    with pytest.raises(ApiError) as info:
        parse_body(CheckoutBody, json.dumps({"cart_id": "cart_01J", "po_numbr": "PO-1"}).encode(), "application/json")
    assert (info.value.status, info.value.param) == (400, "po_numbr")


def test_every_contract_model_ignores_or_refuses_on_purpose():
    # a model that set its own `extra` would escape the rule in base.py unnoticed
    for model in _subclasses(BaseModel):
        if model.__module__.startswith("libs.contracts."):
            expected = "forbid" if issubclass(model, Record) else "ignore"
            assert model.model_config.get("extra") == expected, model
