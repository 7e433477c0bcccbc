"""The kinds of field (libs/contracts/fields.py): what each accepts, and that the records and messages use them."""

import json

import pytest
from pydantic import TypeAdapter, ValidationError

from libs.contracts import cart, erp, orders, pricing
from libs.contracts.envelope import Envelope
from libs.contracts.fields import (MAX_AMOUNT, CartId, Code, Currency, CustomerId, Minor, Name, Notes, PoNumber, Sku,
                                   Terms, Token, Uom, accepts, explain)

CONTROLS = ["\x00", "\x01", "\x07", "\x1b", "\x7f", "\x85", "\x9f"]
# kind name → (kind, a valid value)
SINGLE_LINE = {"Name": (Name, "Rice 2 kg"), "PoNumber": (PoNumber, "PO 1001"), "Sku": (Sku, "RICE-2KG"),
               "Uom": (Uom, "CASE"), "Code": (Code, "pl-trade_1"), "Token": (Token, "chk_1:2"),
               "CustomerId": (CustomerId, "cus_01JD2Y"), "CartId": (CartId, "cart_01JD2Z"),
               "Currency": (Currency, "JMD"), "Terms": (Terms, "net_30")}
EVERY = {**SINGLE_LINE, "Notes": (Notes, "back door")}


def refused(kind, value) -> str:
    """The refusal in words, as the gateway answers it."""
    with pytest.raises(ValidationError) as info:
        TypeAdapter(kind).validate_python(value)
    err = info.value.errors()[0]
    return explain(err.get("input"), (err.get("ctx") or {}).get("pattern")) or err["msg"]


@pytest.mark.parametrize("name", EVERY)
@pytest.mark.parametrize("char", CONTROLS, ids=lambda c: f"U+{ord(c):04X}")
def test_no_kind_of_field_takes_a_control_character(name, char):
    kind, good = EVERY[name]
    assert accepts(kind, good)
    for bad in (good[:2] + char + good[2:], good + char, char + good):
        assert f"must not contain control characters: U+{ord(char):04X}" in refused(kind, bad), bad


@pytest.mark.parametrize("name", SINGLE_LINE)
@pytest.mark.parametrize("char", ["\t", "\n", "\r"], ids=repr)
def test_single_line_fields_take_no_tab_or_line_break(name, char):
    kind, good = SINGLE_LINE[name]
    assert refused(kind, good[:2] + char + good[2:]).startswith("must not contain control characters")


def test_notes_keep_tabs_and_line_breaks():
    text = "Deliver to the back door\r\n\tring twice\nthanks — ¡gracias!"
    assert TypeAdapter(Notes).validate_python(text) == text


def test_a_lone_surrogate_is_refused():
    lone = json.loads('"back\\ud800door"')
    for kind in (Notes, Name, Sku, CustomerId):
        assert refused(kind, lone) == "must not contain an unpaired surrogate: U+D800 at position 4"


def test_a_refusal_says_the_rule_in_words():
    assert refused(Sku, "RICE 2KG") == ("must be 1 to 64 letters, digits, '.', '_' or '-', starting with a "
                                        "letter or digit")
    assert refused(CustomerId, "bob") == "must be cus_ and 1 to 64 letters or digits"
    assert refused(Terms, "net_0") == "must be 'cod' or 'net_<days>'"


@pytest.mark.parametrize("sku", ["RICE-2KG", "a", "12.5_X-9", "A" * 64])
def test_skus(sku):
    assert accepts(Sku, sku)


@pytest.mark.parametrize("sku", ["", "A" * 65, "RICE 2KG", "-RICE", ".", "RICE/2KG", "RICE%00", "ÄPFEL", "RICE?"])
def test_not_skus(sku):
    assert not accepts(Sku, sku)


@pytest.mark.parametrize("value", ["cus_", "cus_A-B", "cart_01J", "cus_" + "A" * 65, "CUS_1", " cus_1"])
def test_customer_ids_are_ours(value):
    assert not accepts(CustomerId, value)


def test_money_is_bounded_at_ten_to_the_fifteen():
    assert accepts(Minor, 0) and accepts(Minor, MAX_AMOUNT)
    assert not accepts(Minor, MAX_AMOUNT + 1) and not accepts(Minor, -1)
    assert MAX_AMOUNT < 2**53  # every JSON client reads it exactly
    assert 2 * MAX_AMOUNT < 2**63 - 1  # a shortfall (amount − a negative available) still fits BIGINT


# --- the records and messages use them -------------------------------------------------------------

@pytest.mark.parametrize("record", [
    lambda: erp.ProductUpsert(sku="RICE\x002KG", name="Rice", base_uom="EA"),
    lambda: erp.ProductUpsert(sku="RICE", name="Rice\x00", base_uom="EA"),
    lambda: erp.ProductUpsert(sku="RICE", name="Rice", base_uom="E\x00A"),
    lambda: erp.ProductUpsert(sku="RICE", name="Rice", base_uom="EA", units={"CA\x00SE": 12}),
    lambda: erp.ProductUpsert(sku="RICE", name="Rice", base_uom="EA", units={"CASE": MAX_AMOUNT + 1}),
    lambda: erp.CustomerUpsert(customer_id="cus_A\x00B", name="Shop"),
    lambda: erp.CustomerUpsert(customer_id="cus_A", name="Shop", bill_to_id="cus_\x00"),
    lambda: erp.CustomerUpsert(customer_id="cus_A", name="Shop", price_list_id="trade\x00"),
    lambda: erp.CustomerUpsert(customer_id="cus_A", name="Shop", terms="cod\n"),
    lambda: erp.PriceUpsert(price_id="p\x001", sku="RICE", unit_amount=100),
    lambda: erp.PriceUpsert(price_id="p1", sku="RICE", unit_amount=MAX_AMOUNT + 1),
    lambda: erp.PriceUpsert(price_id="p1", sku="RICE", unit_amount=100, min_quantity=2**63),
    lambda: erp.CreditLimitUpsert(customer_id="cus_A", limit=MAX_AMOUNT + 1),
    lambda: erp.CreditLimitUpsert(customer_id="cus_A", limit=100, currency="JM\x00"),
])
def test_erp_records_refuse_what_the_fields_refuse(record):
    with pytest.raises(ValidationError):
        record()


def test_erp_records_at_the_bounds_are_fine():
    assert erp.PriceUpsert(price_id="p1", sku="RICE", unit_amount=MAX_AMOUNT).unit_amount == MAX_AMOUNT
    assert erp.CreditLimitUpsert(customer_id="cus_A", limit=MAX_AMOUNT).limit == MAX_AMOUNT


@pytest.mark.parametrize("message", [
    lambda: cart.AddLine(cart_id="cart_1", customer_id="cus_1", line_id="cli_1", sku="RICE\x002KG", quantity=1),
    lambda: cart.GetCart(cart_id="cart_1\x00", customer_id="cus_1"),
    lambda: orders.PlaceOrder(cart_id="cart_1", customer_id="cus_1", notes="back\x00door"),
    lambda: orders.PlaceOrder(cart_id="cart_1", customer_id="cus_1", po_number="PO\x07"),
    lambda: orders.PlaceOrder(cart_id="cart_1", customer_id="cus_A\x00B"),
    lambda: pricing.GetProduct(sku="RICE\x00"),
    lambda: pricing.ListProducts(starting_after="A\x00"),
    lambda: orders.ListOrders(customer_id="cus_1", starting_after="ord_\x00"),
    lambda: pricing.LinesPriced(cart_id="cart_1", currency="JMD", lines=[], subtotal=MAX_AMOUNT + 1, tax=0,
                                total=MAX_AMOUNT + 1),
])
def test_messages_refuse_what_the_fields_refuse(message):
    with pytest.raises(ValidationError):
        message()


def test_an_envelope_from_outside_with_a_control_character_does_not_parse():
    good = Envelope(tenant_id="ten_1", livemode=False,
                    payload=erp.ProductUpsert(sku="RICE", name="Rice", base_uom="EA")).model_dump(mode="json")
    Envelope.model_validate(good)
    for field in ("tenant_id", "message_id", "request_id", "correlation_id"):
        with pytest.raises(ValidationError):
            Envelope.model_validate({**good, field: "x\x00y"})
    with pytest.raises(ValidationError):
        Envelope.from_bytes(json.dumps({**good, "payload": {**good["payload"], "sku": "RI\u0000CE"}}).encode())
