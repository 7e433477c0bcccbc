"""Poison stays out at the door: control characters, repeated query parameters and malformed path values are
refused by the gateway itself, in the catalogue's words. No network: aiohttp's request test double only."""

import json

import pytest
from aiohttp.test_utils import make_mocked_request

from libs.contracts.fields import CartId, Sku
from services.gateway.errors import ApiError
from services.gateway.routes import parse_body, parse_query, path_id, path_value
from services.gateway.routes.carts import AddLineBody
from services.gateway.routes.checkout import CheckoutBody
from services.gateway.routes.orders import OrdersQuery
from services.gateway.routes.products import ListQuery
from services.gateway.routes.shopper_tokens import ShopperTokenBody

JSON = "application/json"


def body_refusal(model, body: dict) -> tuple[int, str, str | None, str]:
    with pytest.raises(ApiError) as info:
        parse_body(model, json.dumps(body).encode(), JSON)
    e = info.value
    return e.status, e.code, e.param, e.message


@pytest.mark.parametrize("model, body, param", [
    (AddLineBody, {"sku": "RICE\u00002KG", "quantity": 1}, "sku"),
    (AddLineBody, {"sku": "RICE-2KG", "order_uom": "CA\u001bSE", "order_quantity": 1}, "order_uom"),
    (AddLineBody, {"sku": "RICE\n2KG", "quantity": 1}, "sku"),
    (CheckoutBody, {"cart_id": "cart_01J", "notes": "back\u0000door"}, "notes"),
    (CheckoutBody, {"cart_id": "cart_01J", "notes": "back\u007fdoor"}, "notes"),
    (CheckoutBody, {"cart_id": "cart_01J", "po_number": "PO\u00071001"}, "po_number"),
    (CheckoutBody, {"cart_id": "cart_01J", "po_number": "PO\n1001"}, "po_number"),
    (CheckoutBody, {"cart_id": "cart_01J\u0000"}, "cart_id"),
    (ShopperTokenBody, {"customer_id": "cus_A\u0000B"}, "customer_id"),
])
def test_control_characters_in_a_body_are_parameter_invalid(model, body, param):
    status, code, at, message = body_refusal(model, body)
    assert (status, code, at) == (400, "parameter_invalid", param)
    assert "control character" in message and "\x00" not in message


def test_a_lone_surrogate_in_a_body_is_parameter_invalid():
    raw = b'{"cart_id": "cart_01J", "notes": "back\\ud800door"}'
    with pytest.raises(ApiError) as info:
        parse_body(CheckoutBody, raw, JSON)
    assert (info.value.status, info.value.code, info.value.param) == (400, "parameter_invalid", "notes")


def test_surrounding_whitespace_is_trimmed_before_the_rule():
    model, _ = parse_body(AddLineBody, json.dumps({"sku": " RICE-2KG\n", "quantity": 1}).encode(), JSON)
    assert model.sku == "RICE-2KG"


def test_notes_keep_line_breaks_and_tabs():
    model, _ = parse_body(CheckoutBody, json.dumps({"cart_id": "cart_01J", "notes": "back door\r\n\tring"}).encode(),
                          JSON)
    assert model.notes == "back door\r\n\tring"


def test_a_customer_id_that_is_not_ours_is_parameter_invalid():
    assert body_refusal(ShopperTokenBody, {"customer_id": "nobody"})[:3] == (400, "parameter_invalid", "customer_id")


def request(path: str, match_info: dict[str, str] | None = None):
    req = make_mocked_request("GET", path)
    if match_info:
        req.match_info.update(match_info)
    return req


@pytest.mark.parametrize("model, query, param", [
    (ListQuery, "limit=1&limit=100000", "limit"),
    (ListQuery, "starting_after=A&starting_after=B", "starting_after"),
    (OrdersQuery, "limit=5&limit=5", "limit"),
])
def test_a_repeated_query_parameter_is_parameter_invalid(model, query, param):
    with pytest.raises(ApiError) as info:
        parse_query(model, request(f"/v1/x?{query}"))
    assert (info.value.status, info.value.code, info.value.param) == (400, "parameter_invalid", param)


@pytest.mark.parametrize("model, query, param", [
    (ListQuery, "starting_after=RICE%002KG", "starting_after"),
    (ListQuery, "starting_after=RICE%0A2KG", "starting_after"),
    (OrdersQuery, "starting_after=ord_01J%00", "starting_after"),
])
def test_control_characters_in_a_query_are_parameter_invalid(model, query, param):
    with pytest.raises(ApiError) as info:
        parse_query(model, request(f"/v1/x?{query}"))
    assert (info.value.status, info.value.code, info.value.param) == (400, "parameter_invalid", param)


def test_a_good_query_parses():
    q = parse_query(ListQuery, request("/v1/products?limit=3&starting_after=MILK-UHT-1L"))
    assert (q.limit, q.starting_after) == (3, "MILK-UHT-1L")


@pytest.mark.parametrize("sku", ["RICE\x00", "RICE 2KG", "A" * 65, "-A"])
def test_a_path_sku_that_cannot_be_one_is_not_found(sku):
    with pytest.raises(ApiError) as info:
        path_value(request("/v1/products/x", {"sku": sku}), "sku", Sku, "product")
    assert (info.value.status, info.value.code, info.value.param) == (404, "resource_missing", "sku")
    assert "\x00" not in info.value.message


def test_path_ids_keep_their_404():
    assert path_id(request("/v1/carts/x", {"cart_id": "cart_01J"}), "cart_id", CartId) == "cart_01J"
    for bad in ("cart_01J\x00", "ord_01J", "cart_"):
        with pytest.raises(ApiError) as info:
            path_id(request("/v1/carts/x", {"cart_id": bad}), "cart_id", CartId)
        assert (info.value.status, info.value.code, info.value.param) == (404, "resource_missing", "cart_id")
