"""Prefixed ULID identifiers (`ord_01J…`): the prefix says what the id names, from creation to the wire."""

from ulid import ULID

TENANT = "ten"
API_KEY = "key"
CUSTOMER = "cus"
CART = "cart"
CART_LINE = "cli"
ORDER = "ord"
ORDER_LINE = "oli"
INVOICE = "inv"
EVENT = "evt"
WEBHOOK_ENDPOINT = "we"
WEBHOOK_DELIVERY = "wda"  # one delivery attempt
REQUEST = "req"
MESSAGE = "msg"
CHECKOUT = "chk"
RESERVATION = "res"
TENANT_SIGNING_KEY = "tsk"


def new_id(prefix: str) -> str:
    """A new id such as `cart_01JD2Z…`: time-ordered, so ids sort by creation."""
    return f"{prefix}_{ULID()}"
