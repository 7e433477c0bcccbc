"""What every kind of field accepts, defined once.

The gateway's request models, the ERP records and the messages between services all use these types, so a
value a database would refuse (a NUL, a number past BIGINT) is refused where it comes in: a 400 at the
gateway, `<topic>.dlt` at once for an ERP record. Let through, it would fail in a service on every retry
and hold up its partition.

- Control characters (U+0000–U+001F, U+007F, U+0080–U+009F) are never accepted, anywhere (a gateway
  body trims surrounding whitespace first). Only `Notes`, free text, keeps tab, line feed and
  carriage return (a multi-line delivery instruction). Lone surrogates (`"\\ud800"`) are refused too.
- Codes (SKU, unit, the ERP's price ids and price lists) are letters, digits, `.`, `_` and `-`,
  starting with a letter or digit: safe in a URL path, a Kafka key and a log line.
- Ids we mint are `<prefix>_` + 1 to 64 letters or digits (`cart_01J…`).
- Money is integer minor units from 0 to 10**15 (10 trillion in major units): within BIGINT with room
  for sums, and below 2**53, so every JSON client reads it exactly.
"""

import re
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from . import ids

# Every rule is a pattern pydantic-core checks (in Rust: no Python call per field on the hot path) and the
# JSON Schema shows; a pattern it applies also refuses a lone surrogate (pydantic's `string_unicode`).
CONTROLS = "\\x00-\\x1f\\x7f-\\x9f"  # C0, DEL, C1, as a regex class body
CONTROLS_BUT_LINES = "\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f"  # the same, less tab, LF and CR

# pattern → (the rule in words, the control characters it refuses): for messages, see `explain`
RULES: dict[str, tuple[str, re.Pattern[str]]] = {}
_CONTROL = re.compile(f"[{CONTROLS}]")
_CONTROL_BUT_LINES = re.compile(f"[{CONTROLS_BUT_LINES}]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _kind(pattern: str, rule: str, controls: re.Pattern[str] = _CONTROL, **constraints: Any) -> Any:
    RULES[pattern] = (rule, controls)
    return Annotated[str, Field(pattern=pattern, **constraints)]


def text(max_length: int, *, min_length: int = 1, lines: bool = False, description: str | None = None) -> Any:
    """Free text of any printable characters; `lines` also keeps tab, line feed and carriage return."""
    body, controls = (CONTROLS_BUT_LINES, _CONTROL_BUT_LINES) if lines else (CONTROLS, _CONTROL)
    rule = "must not contain control characters" + (" other than tab and line breaks" if lines else "")
    return _kind(f"^[^{body}]*$", rule, controls, min_length=min_length, max_length=max_length,
                 description=description)


def code(max_length: int) -> Any:
    """A code: letters, digits, `.`, `_`, `-`, starting with a letter or digit."""
    return _kind(f"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{max_length - 1}}}$",
                 f"must be 1 to {max_length} letters, digits, '.', '_' or '-', starting with a letter or digit",
                 min_length=1, max_length=max_length)


def object_id(prefix: str) -> Any:
    """An id we mint (`ids.new_id`): the prefix, `_`, then 1 to 64 letters or digits."""
    return _kind(f"^{prefix}_[0-9A-Za-z]{{1,64}}$", f"must be {prefix}_ and 1 to 64 letters or digits")


def explain(value: object, pattern: str | None) -> str | None:
    """What a string refused by one of these kinds broke, in words; None when it is not one of ours."""
    if isinstance(value, str) and (m := _SURROGATE.search(value)):
        return f"must not contain an unpaired surrogate: U+{ord(m.group()):04X} at position {m.start()}"
    if pattern not in RULES:
        return None
    rule, controls = RULES[pattern]
    if isinstance(value, str) and (m := controls.search(value)):
        return f"must not contain control characters: U+{ord(m.group()):04X} at position {m.start()}"
    return rule


Name = text(200)
Notes = text(2000, min_length=0, lines=True, description="free text; tab and line breaks are kept")
PoNumber = text(100, min_length=0)
Sku = code(64)
Uom = code(16)
Code = code(64)  # the ERP's own ids: price ids, price lists
Currency = _kind(r"^[A-Z]{3}$", "must be three capital letters (ISO 4217, e.g. JMD)")
Terms = _kind(r"^(cod|net_[1-9][0-9]{0,2})$", "must be 'cod' or 'net_<days>'",
              description="`cod` or `net_<days>`")
# ids, message ids, topic names and idempotency keys in the envelope: printable ASCII
Token = _kind(r"^[\x20-\x7e]{1,255}$", "must be 1 to 255 printable ASCII characters")

TenantId = object_id(ids.TENANT)
CustomerId = object_id(ids.CUSTOMER)
CartId = object_id(ids.CART)
CartLineId = object_id(ids.CART_LINE)
OrderId = object_id(ids.ORDER)
CheckoutId = object_id(ids.CHECKOUT)
ReservationId = object_id(ids.RESERVATION)
InvoiceId = object_id(ids.INVOICE)
EventId = object_id(ids.EVENT)
WebhookEndpointId = object_id(ids.WEBHOOK_ENDPOINT)
WebhookDeliveryId = object_id(ids.WEBHOOK_DELIVERY)
# an endpoint's URL: http(s), printable ASCII, no spaces (what it may point at is notifier's rule, docs/api.md)
WebhookUrl = _kind(r"^https?://[\x21-\x7e]{1,2040}$", "must be an http:// or https:// URL of printable characters",
                   max_length=2048)
# `<tenant prefix>-NNNNNN` (orders' per-tenant, per-mode counters); invoices `<prefix>-INV-NNNNNN`
OrderPrefix = _kind(r"^[A-Z0-9]{1,12}$", "must be 1 to 12 capital letters or digits")
OrderNumber = _kind(r"^[A-Z0-9]{1,12}-[0-9]{6,15}$", "must be a prefix, '-' and at least six digits, e.g. ACME-000042")
InvoiceNumber = _kind(r"^[A-Z0-9]{1,12}-INV-[0-9]{6,15}$", "must be a prefix, '-INV-' and at least six digits")

# --- numbers -------------------------------------------------------------------------------------

MAX_AMOUNT = 10**15
MAX_BASE_QUANTITY = 1_000_000  # per cart line

Minor = Annotated[int, Field(ge=0, le=MAX_AMOUNT, description="money in integer minor units (cents)")]
# limit − exposure: negative when a limit was lowered below what is already used
SignedMinor = Annotated[int, Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT, description="integer minor units; may be negative")]
# an amount − a SignedMinor
Shortfall = Annotated[int, Field(ge=0, le=2 * MAX_AMOUNT, description="integer minor units")]
BaseQuantity = Annotated[int, Field(ge=1, le=MAX_BASE_QUANTITY)]
# the ERP's counts that multiply into money (a unit's factor, a quantity break): bounded like money
Count = Annotated[int, Field(ge=1, le=MAX_AMOUNT)]
# a quantity that may be none yet (fulfilled so far)
Quantity0 = Annotated[int, Field(ge=0, le=MAX_BASE_QUANTITY)]
# a positive amount of money (a payment)
PositiveMinor = Annotated[int, Field(ge=1, le=MAX_AMOUNT, description="money in integer minor units (cents), > 0")]


_ADAPTERS: dict[int, tuple[Any, TypeAdapter]] = {}  # the kind is kept, so its id is never reused


def accepts(kind: Any, value: object) -> bool:
    """Whether `value` is a valid `kind` (one of the module's types, e.g. for a path segment)."""
    entry = _ADAPTERS.get(id(kind))
    if entry is None:
        entry = _ADAPTERS[id(kind)] = (kind, TypeAdapter(kind))
    try:
        entry[1].validate_python(value)
    except ValidationError:
        return False
    return True
