"""Request bodies → the exact catalogue codes and params; service Failures → HTTP status and type. No network."""

import json

import asyncpg.exceptions
import pytest
import sqlalchemy.exc
from pydantic import ValidationError

from libs.contracts.base import Failure
from libs.contracts.orders import OverCreditLimit
from services.gateway.errors import CATALOGUE, ApiError, from_failure, service_unavailable, unavailable_dependency
from services.gateway.idempotency import request_hash, validate_key
from services.gateway.routes import NoBody, expected_version, parse_body, validation_error
from services.gateway.routes.carts import AddLineBody, ChangeLineBody
from services.gateway.routes.checkout import CheckoutBody, over_credit_limit
from services.gateway.routes.products import ListQuery
from services.gateway.routes.shopper_tokens import ShopperTokenBody

JSON = "application/json"


def refusal(model, body, content_type=JSON) -> ApiError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(ApiError) as info:
        parse_body(model, raw, content_type)
    return info.value


def code_param(model, body, content_type=JSON) -> tuple[int, str, str | None]:
    e = refusal(model, body, content_type)
    return e.status, e.code, e.param


# --- JSON and media type -----------------------------------------------------------------------

@pytest.mark.parametrize("raw", [b'{"sku": ', b"not json", b"{'sku': 'A'}", b'{"a": NaN}', b"\xff\xfe"])
def test_malformed_json_is_json_invalid(raw):
    assert code_param(AddLineBody, raw) == (400, "json_invalid", None)


@pytest.mark.parametrize("raw", [b"[]", b'"sku"', b"3", b"null"])
def test_a_body_that_is_not_an_object_is_json_invalid(raw):
    assert code_param(AddLineBody, raw)[:2] == (400, "json_invalid")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_not_sent_as_json_is_415(content_type):
    e = refusal(AddLineBody, {"sku": "A", "quantity": 1}, content_type)
    assert (e.status, e.type, e.code) == (415, "invalid_request_error", "unsupported_media_type")


@pytest.mark.parametrize("raw", [b"", b"  ", b"{}"])
def test_routes_without_parameters_accept_an_empty_body(raw):
    model, data = parse_body(NoBody, raw, None if not raw.strip() else JSON)
    assert data == {}


# --- parameters --------------------------------------------------------------------------------

def test_create_cart_never_takes_a_customer_id():
    assert code_param(NoBody, {"customer_id": "cus_BOB"}) == (400, "parameter_unknown", "customer_id")


def test_unknown_field_is_parameter_unknown():
    assert code_param(AddLineBody, {"sku": "A", "quantity": 1, "colour": "red"}) == (400, "parameter_unknown", "colour")


def test_missing_field_is_parameter_missing():
    assert code_param(AddLineBody, {"quantity": 1}) == (400, "parameter_missing", "sku")
    assert code_param(ShopperTokenBody, {}) == (400, "parameter_missing", "customer_id")
    assert code_param(CheckoutBody, {"notes": "x"}) == (400, "parameter_missing", "cart_id")


@pytest.mark.parametrize("body, param", [
    ({"sku": 5, "quantity": 1}, "sku"),
    ({"sku": "", "quantity": 1}, "sku"),
    ({"sku": "A" * 65, "quantity": 1}, "sku"),
    ({"sku": "A", "order_uom": 3, "order_quantity": 1}, "order_uom"),
    ({"sku": "A", "quantity": 1, "version": 0}, "version"),
    ({"sku": "A", "quantity": 1, "version": "2"}, "version"),
])
def test_wrong_type_or_shape_is_parameter_invalid(body, param):
    assert code_param(AddLineBody, body) == (400, "parameter_invalid", param)


@pytest.mark.parametrize("quantity", [0, -1, 1_000_001, 1.5, 2.0, "5", True, [1]])
def test_bad_quantity_is_quantity_invalid(quantity):
    assert code_param(AddLineBody, {"sku": "A", "quantity": quantity}) == (400, "quantity_invalid", "quantity")


def test_null_quantity_is_no_quantity():
    assert code_param(AddLineBody, {"sku": "A", "quantity": None}) == (400, "parameter_missing", "quantity")


@pytest.mark.parametrize("order_quantity", [0, 1_000_001, "2", 1.5])
def test_bad_order_quantity_is_quantity_invalid(order_quantity):
    body = {"sku": "A", "order_uom": "CASE", "order_quantity": order_quantity}
    assert code_param(AddLineBody, body) == (400, "quantity_invalid", "order_quantity")


@pytest.mark.parametrize("quantity", [1, 1_000_000])
def test_quantity_bounds_are_inclusive(quantity):
    model, _ = parse_body(AddLineBody, json.dumps({"sku": "A", "quantity": quantity}).encode(), JSON)
    assert model.quantity == quantity


def test_add_line_takes_exactly_one_form():
    assert code_param(AddLineBody, {"sku": "A", "quantity": 1, "order_uom": "CASE", "order_quantity": 1}) == \
        (400, "parameter_invalid", "quantity")
    assert code_param(AddLineBody, {"sku": "A"}) == (400, "parameter_missing", "quantity")
    assert code_param(AddLineBody, {"sku": "A", "order_uom": "CASE"}) == (400, "parameter_missing", "order_quantity")
    assert code_param(AddLineBody, {"sku": "A", "order_quantity": 2}) == (400, "parameter_missing", "order_uom")
    model, _ = parse_body(AddLineBody, b'{"sku": "A", "order_uom": "CASE", "order_quantity": 2}', JSON)
    assert (model.order_uom, model.order_quantity, model.quantity) == ("CASE", 2, None)


def test_change_line_takes_exactly_one_quantity():
    assert code_param(ChangeLineBody, {}) == (400, "parameter_missing", "quantity")
    assert code_param(ChangeLineBody, {"quantity": 1, "order_quantity": 1}) == (400, "parameter_invalid", "quantity")
    assert code_param(ChangeLineBody, {"order_quantity": 0}) == (400, "quantity_invalid", "order_quantity")


def test_checkout_ignores_channel_and_checks_lengths():
    model, _ = parse_body(CheckoutBody, b'{"cart_id": "cart_01J", "channel": "POS", "po_number": "PO-1"}', JSON)
    assert model.cart_id == "cart_01J" and "channel" not in model.model_dump()
    assert code_param(CheckoutBody, {"cart_id": "cart_01J", "notes": "n" * 2001}) == (400, "parameter_invalid", "notes")
    assert code_param(CheckoutBody, {"cart_id": "cart_01J", "po_number": "p" * 101}) == \
        (400, "parameter_invalid", "po_number")
    assert code_param(CheckoutBody, {"cart_id": "ord_01J"}) == (400, "parameter_invalid", "cart_id")


@pytest.mark.parametrize("query, code, param", [
    ({"limit": "0"}, "parameter_invalid", "limit"), ({"limit": "101"}, "parameter_invalid", "limit"),
    ({"limit": "ten"}, "parameter_invalid", "limit"), ({"page": "2"}, "parameter_unknown", "page"),
])
def test_list_query_limits(query, code, param):
    with pytest.raises(ValidationError) as info:
        ListQuery.model_validate(query)
    e = validation_error(info.value)
    assert (e.code, e.param) == (code, param)
    assert ListQuery.model_validate({"limit": "100"}).limit == 100


# --- cart version --------------------------------------------------------------------------------

@pytest.mark.parametrize("header, body, expected", [
    (None, None, None), (None, 4, 4), ('"3"', None, 3), ("3", None, 3), ('W/"3"', 3, 3),
])
def test_expected_version(header, body, expected):
    assert expected_version(header, body) == expected


@pytest.mark.parametrize("header, body, param", [
    ("abc", None, "If-Match"), ('"0"', None, "If-Match"), ('"3"', 4, "version"),
])
def test_bad_expected_version(header, body, param):
    with pytest.raises(ApiError) as info:
        expected_version(header, body)
    assert (info.value.status, info.value.code, info.value.param) == (400, "parameter_invalid", param)


# --- idempotency keys and hashes -------------------------------------------------------------------

@pytest.mark.parametrize("key", ["", " ", "k" * 256, "ключ", "a\nb"])
def test_bad_idempotency_key_is_parameter_invalid(key):
    with pytest.raises(ApiError) as info:
        validate_key(key)
    assert (info.value.status, info.value.code, info.value.param) == (400, "parameter_invalid", "Idempotency-Key")


def test_idempotency_key_of_255_is_fine():
    assert validate_key("k" * 255) == "k" * 255


def test_request_hash_is_canonical():
    a = request_hash("POST", "/v1/carts/cart_1/lines", {"sku": "A", "quantity": 1})
    assert a == request_hash("POST", "/v1/carts/cart_1/lines", {"quantity": 1, "sku": "A"})
    assert a != request_hash("POST", "/v1/carts/cart_1/lines", {"sku": "A", "quantity": 2})
    assert a != request_hash("POST", "/v1/carts/cart_2/lines", {"sku": "A", "quantity": 1})
    assert a != request_hash("POST", "/v1/carts/cart_1/lines", {"sku": "A", "quantity": 1}, '"3"')


# --- service failures → HTTP ---------------------------------------------------------------------------

@pytest.mark.parametrize("code, status, type_", [
    ("resource_missing", 404, "invalid_request_error"),
    ("cart_frozen", 409, "invalid_request_error"),
    ("cart_checked_out", 409, "invalid_request_error"),
    ("cart_version_conflict", 409, "invalid_request_error"),
    ("sku_unknown", 400, "invalid_request_error"),
    ("uom_unknown", 400, "invalid_request_error"),
    ("quantity_invalid", 400, "invalid_request_error"),
    ("parameter_invalid", 400, "invalid_request_error"),
    ("parameter_missing", 400, "invalid_request_error"),
    ("upstream_timeout", 504, "api_error"),
])
def test_failure_codes_map_to_the_catalogue(code, status, type_):
    e = from_failure(Failure(code=code, message="m", param="p"))
    assert (e.status, e.type, e.code, e.param) == (status, type_, code, "p")
    assert code in CATALOGUE


def test_cart_checked_out_carries_the_order_id():
    e = from_failure(Failure(code="cart_checked_out", message="done", param="cart_id", order_id="ord_1"))
    assert e.body("req_1") == {"error": {"type": "invalid_request_error", "code": "cart_checked_out", "message": "done",
                                         "param": "cart_id", "order_id": "ord_1", "request_id": "req_1"}}


def test_unknown_failure_code_is_a_500_that_hides_the_message():
    e = from_failure(Failure(code="database_on_fire", message="password=hunter2 at db:5432"))
    assert (e.status, e.type, e.code) == (500, "api_error", "internal_error")
    assert "hunter2" not in json.dumps(e.body("req_1"))


def test_error_shape_is_the_one_shape():
    body = ApiError(400, "invalid_request_error", "sku_unknown", "no sku", "sku").body("req_9")
    assert body == {"error": {"type": "invalid_request_error", "code": "sku_unknown", "message": "no sku",
                              "param": "sku", "request_id": "req_9"}}


def test_over_credit_limit_is_a_402_state():
    e = over_credit_limit(OverCreditLimit(cart_id="cart_1", limit=100, exposure=90, available=10, order_total=25,
                                          shortfall=15, currency="JMD"))
    body = e.body("req_1")
    assert e.status == 402
    assert body["error"]["type"] == body["error"]["code"] == "over_credit_limit"
    assert body["credit"] == {"limit": 100, "exposure": 90, "available": 10, "order_total": 25, "shortfall": 15,
                              "currency": "JMD"}
    assert body["cart_id"] == "cart_1"


# --- hostile JSON ------------------------------------------------------------------------------------

def test_json_nested_twenty_thousand_deep_is_json_invalid_not_a_crash():
    for deep in (b"[" * 20_000 + b"]" * 20_000, b'{"a":' * 20_000 + b"1" + b"}" * 20_000, b"[" * 20_000):
        e = refusal(AddLineBody, deep)
        assert (e.status, e.code) == (400, "json_invalid")


def test_nesting_up_to_32_levels_parses_and_33_is_refused():
    def nested(levels: int) -> bytes:  # the body object is level 1
        return b'{"sku": "A", "quantity": 1, "x": ' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"
    assert code_param(AddLineBody, nested(32)) == (400, "parameter_unknown", "x")  # parsed, then validated
    e = refusal(AddLineBody, nested(33))
    assert (e.status, e.code) == (400, "json_invalid") and "deeper than 32" in e.message


def test_brackets_inside_strings_do_not_count_as_nesting():
    notes = '[{\\"' * 40  # 80 brackets and 40 escaped quotes in one string
    model, _ = parse_body(CheckoutBody, b'{"cart_id": "cart_1", "notes": "' + notes.encode() + b'"}', JSON)
    assert model.notes == notes.replace('\\"', '"')


@pytest.mark.parametrize("raw, param", [
    (b'{"sku": "A", "quantity": 1, "quantity": 999999}', "quantity"),
    (b'{"sku": "A", "sku": "A", "quantity": 1}', "sku"),
    (b'{"cart_id": "cart_1", "notes": {"a": 1, "a": 2}}', "a"),
])
def test_duplicate_json_keys_are_json_invalid(raw, param):
    e = refusal(AddLineBody, raw)
    assert (e.status, e.code, e.param) == (400, "json_invalid", param)
    assert "repeats the key" in e.message


# --- a dependency that is down ------------------------------------------------------------------------

def _wrapped(driver_error: Exception) -> Exception:
    """As SQLAlchemy raises a driver's error: DBAPIError with the driver's exception in .orig."""
    return sqlalchemy.exc.DBAPIError("SELECT 1", None, driver_error)


@pytest.mark.parametrize("error, named", [
    (lambda ae: _wrapped(ae.InvalidAuthorizationSpecificationError('role "g" is not permitted to log in')),
     "DBAPIError ← InvalidAuthorizationSpecificationError"),
    (lambda ae: _wrapped(ae.AdminShutdownError("terminating connection due to administrator command")),
     "DBAPIError ← AdminShutdownError"),
    (lambda ae: _wrapped(ae.CannotConnectNowError("the database system is starting up")),
     "DBAPIError ← CannotConnectNowError"),
    (lambda ae: _wrapped(ae.TooManyConnectionsError("sorry, too many clients already")),
     "DBAPIError ← TooManyConnectionsError"),
    (lambda ae: ConnectionRefusedError(111, "Connection refused"), "ConnectionRefusedError"),
])
def test_a_database_out_of_reach_is_a_dependency_failure(error, named):
    assert unavailable_dependency(error(asyncpg.exceptions)) == named


@pytest.mark.parametrize("error", [
    lambda ae: _wrapped(ae.UndefinedTableError('relation "x" does not exist')),
    lambda ae: _wrapped(ae.UniqueViolationError("duplicate key")),
    lambda ae: KeyError("x"), lambda ae: RuntimeError("a bug"),
])
def test_a_bug_is_not_a_dependency_failure(error):
    assert unavailable_dependency(error(asyncpg.exceptions)) is None


def test_service_unavailable_is_a_503_with_retry_after():
    e = service_unavailable()
    response = e.response("req_1")
    assert (response.status, response.headers["Retry-After"]) == (503, "2")
    assert json.loads(response.body)["error"] == {"type": "api_error", "code": "service_unavailable",
                                                  "message": e.message, "param": None, "request_id": "req_1"}
