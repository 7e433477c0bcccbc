"""Contracts: every payload survives the wire, and bad envelopes are refused."""

import pytest
from pydantic import ValidationError

from libs.contracts import cart, credit, erp, orders, pricing
from libs.contracts.base import Failure
from libs.contracts.envelope import Envelope
from libs.contracts.ids import new_id
from libs.contracts.money import TaxCategory

SAMPLES = [
    cart.CreateCart(cart_id="cart_1", customer_id="cus_1"),
    cart.AddLine(cart_id="cart_1", customer_id="cus_1", line_id="cli_1", sku="RICE", order_uom="CASE", order_quantity=2),
    cart.FreezeCart(cart_id="cart_1", customer_id="cus_1", checkout_id="chk_1"),
    pricing.PriceLines(cart_id="cart_1", customer_id="cus_1", lines=[pricing.LineToPrice(line_id="cli_1", sku="RICE", base_quantity=24)]),
    credit.CreditRejected(reservation_id="res_1", bill_to_id="cus_9", limit=5000, exposure=4000, available=1000,
                          order_total=2500, shortfall=1500, currency="JMD"),
    orders.PlaceOrder(cart_id="cart_1", customer_id="cus_1", idempotency_key="k1", notes="back door", po_number="PO-7"),
    erp.ProductUpsert(sku="RICE", name="Rice 1kg", base_uom="EA", units={"CASE": 12}, tax_category=TaxCategory.ZERO_RATED),
    erp.CustomerUpsert(customer_id="cus_1", name="Shop", terms="net_30", bill_to_id="cus_9"),
    Failure(code="sku_unknown", message="no such sku", param="sku"),
]


@pytest.mark.parametrize("payload", SAMPLES, ids=lambda p: p.type)
def test_round_trip(payload):
    env = Envelope(tenant_id="ten_1", livemode=False, payload=payload, request_id="req_1", reply_to="r")
    back = Envelope.from_bytes(env.to_bytes())
    assert back == env
    assert back.type == payload.type
    assert back.occurred_at.tzinfo is not None


def test_type_must_match_payload():
    raw = Envelope(tenant_id="ten_1", livemode=False, payload=SAMPLES[0]).model_dump(mode="json")
    raw["type"] = "AddLine"
    with pytest.raises(ValidationError):
        Envelope.model_validate(raw)


def test_unknown_types_and_bad_values_are_refused():
    # unknown *fields* are ignored, so v1 can grow: tests/unit/test_contract_growth.py
    raw = Envelope(tenant_id="ten_1", livemode=False, payload=SAMPLES[0]).model_dump(mode="json")
    with pytest.raises(ValidationError):
        Envelope.model_validate({**raw, "type": None, "payload": {"type": "Nope"}})
    with pytest.raises(ValidationError):
        Envelope.model_validate({**raw, "tenant_id": ""})


@pytest.mark.parametrize("terms", ["cod", "net_30", "net_7"])
def test_terms_accepted(terms):
    assert erp.CustomerUpsert(customer_id="cus_1", name="x", terms=terms).terms == terms


@pytest.mark.parametrize("terms", ["net_0", "net30", "credit", ""])
def test_terms_refused(terms):
    with pytest.raises(ValidationError):
        erp.CustomerUpsert(customer_id="cus_1", name="x", terms=terms)


def test_units_hold_at_least_one_base_unit():
    with pytest.raises(ValidationError):
        erp.ProductUpsert(sku="A", name="a", base_uom="EA", units={"CASE": 0})


def test_money_is_never_negative():
    with pytest.raises(ValidationError):
        erp.PriceUpsert(price_id="p1", sku="A", unit_amount=-1)


def test_ids_carry_prefix_and_sort_by_time():
    a, b = new_id("ord"), new_id("ord")
    assert a.startswith("ord_") and len(a) == 30
    assert a < b or a[:14] == b[:14]  # same millisecond: only the random part differs
