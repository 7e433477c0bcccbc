"""What every kind of field accepts, defined once.

The gateway's request models, the ERP records and the messages between services all use these types, so a
value a database would refuse (a NUL, a number past BIGINT) is refused where it comes in: a 400 at the
gateway, `<topic>.dlt` at once for an ERP record. Let through, it would fail in a service on every retry
and hold up its partition.

- Control characters (U+0000–U+001F, U+007F, U+0080–U+009F) are never accepted, anywhere: not
  even leading or trailing ones a gateway body would strip. Only `Notes`, free text, keeps tab, line
  feed and carriage return (a multi-line delivery instruction). Lone surrogates (`"\\ud800"`) are
  refused with them.
- Codes (SKU, unit, the ERP's price ids and price lists) are letters, digits, `.`, `_` and `-`,
  starting with a letter or digit: safe in a URL path, a Kafka key and a log line.
- Ids we mint are `<prefix>_` + 1 to 64 letters or digits (`cart_01J…`).
- Money is integer minor units from 0 to 10**15 (10 trillion in major units): within BIGINT with room
  for sums, and below 2**53, so every JSON client reads it exactly.
"""

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from . import ids

# --- characters ----------------------------------------------------------------------------------

CONTROLS = "\\x00-\\x1f\\x7f-\\x9f"  # C0, DEL, C1 (as a regex class body, for Python and JSON Schema alike)
CONTROLS_BUT_LINES = "\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f"  # the same, less \t \n \r
# and lone surrogates (JSON's "\ud800"), which no UTF-8 encoder, PostgreSQL or Kafka can carry
_CONTROL = re.compile(f"[{CONTROLS}\ud800-\udfff]")
_CONTROL_BUT_LINES = re.compile(f"[{CONTROLS_BUT_LINES}\ud800-\udfff]")


def _no_controls(forbidden: re.Pattern[str]) -> BeforeValidator:
    """Before any stripping or pattern: the message names the character, not a regex."""

    def check(value: Any) -> Any:
        if isinstance(value, str) and (m := forbidden.search(value)):
            what = "an unpaired surrogate" if "\ud800" <= m.group() <= "\udfff" else "a control character"
            raise PydanticCustomError(
                "control_character", "must not contain control characters: U+{codepoint} at position {position} is {what}",
                {"codepoint": f"{ord(m.group()):04X}", "position": m.start(), "what": what})
        return value

    return BeforeValidator(check)


def _matching(pattern: str, rule: str) -> AfterValidator:
    """After the string checks (and a body's whitespace stripping), so the message says the rule in words."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise PydanticCustomError("string_pattern_mismatch", rule)
        return value

    return AfterValidator(check)


def text(max_length: int, *, min_length: int = 1, lines: bool = False, description: str = "") -> Any:
    """Free text of any printable characters; `lines` also keeps tab, line feed and carriage return."""
    body = CONTROLS_BUT_LINES if lines else CONTROLS
    return Annotated[str, Field(min_length=min_length, max_length=max_length, description=description or None,
                                json_schema_extra={"pattern": f"^[^{body}]*$"}),
                     _no_controls(_CONTROL_BUT_LINES if lines else _CONTROL)]


def code(max_length: int, what: str) -> Any:
    """A code: letters, digits, `.`, `_`, `-`, starting with a letter or digit."""
    pattern = f"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{max_length - 1}}}$"
    rule = f"{what} is 1 to {max_length} letters, digits, '.', '_' or '-', starting with a letter or digit"
    return Annotated[str, Field(min_length=1, max_length=max_length, json_schema_extra={"pattern": pattern}),
                     _no_controls(_CONTROL), _matching(pattern, rule)]


def object_id(prefix: str) -> Any:
    """An id we mint (`ids.new_id`): the prefix, `_`, then 1 to 64 letters or digits."""
    pattern = f"^{prefix}_[0-9A-Za-z]{{1,64}}$"
    return Annotated[str, Field(json_schema_extra={"pattern": pattern}), _no_controls(_CONTROL),
                     _matching(pattern, f"must be {prefix}_ and 1 to 64 letters or digits")]


Name = text(200)
Notes = text(2000, min_length=0, lines=True, description="free text; tab and line breaks are kept")
PoNumber = text(100, min_length=0)
Sku = code(64, "a SKU")
Uom = code(16, "a unit")
Code = code(64, "an ERP code")  # the ERP's own ids: price ids, price lists
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217, e.g. JMD"), _no_controls(_CONTROL)]
TERMS = r"^(cod|net_[1-9][0-9]{0,2})$"
Terms = Annotated[str, Field(description="`cod` or `net_<days>`", json_schema_extra={"pattern": TERMS}),
                  _no_controls(_CONTROL), _matching(TERMS, "terms must be 'cod' or 'net_<days>'")]
# ids, message ids, topic names and idempotency keys in the envelope: printable ASCII
TOKEN = r"^[\x20-\x7e]{1,255}$"
Token = Annotated[str, Field(json_schema_extra={"pattern": TOKEN}), _no_controls(_CONTROL),
                  _matching(TOKEN, "must be 1 to 255 printable ASCII characters")]

TenantId = object_id(ids.TENANT)
CustomerId = object_id(ids.CUSTOMER)
CartId = object_id(ids.CART)
CartLineId = object_id(ids.CART_LINE)
OrderId = object_id(ids.ORDER)
CheckoutId = object_id(ids.CHECKOUT)
ReservationId = object_id(ids.RESERVATION)

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
