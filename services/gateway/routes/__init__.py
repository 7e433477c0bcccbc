"""What every route shares: request bodies and their validation in the catalogue's words, and asking a service."""

import json
import logging
import re
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from libs.contracts.base import Failure, Message
from libs.contracts.cart import MAX_BASE_QUANTITY
from libs.contracts.fields import accepts, explain
from libs.contracts.topics import TopicSpec
from libs.runtime.logs import request_id_var

from ..errors import INVALID_REQUEST, ApiError, from_failure, internal_error, invalid
from ..correlator import CORRELATOR
from ..state import CALLER

log = logging.getLogger("harmon.gateway.routes")

B = TypeVar("B", bound=BaseModel)
QUANTITY_FIELDS = {"quantity", "order_quantity"}
Quantity = Annotated[int, Field(strict=True, ge=1, le=MAX_BASE_QUANTITY)]
Version = Annotated[int, Field(strict=True, ge=1)]


class Body(BaseModel):
    """A request body: unknown fields are refused, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class NoBody(Body):
    """Routes that take no parameters still accept `{}` or an empty body."""


def refuse(code: str, message: str, param: str) -> PydanticCustomError:
    """A cross-field rule broken inside a model validator, carried out with its catalogue code and param."""
    return PydanticCustomError("harmon", message, {"code": code, "param": param})


def validation_error(e: ValidationError) -> ApiError:
    """The first problem pydantic found, in the catalogue's words (always with `param`)."""
    err = e.errors(include_url=False)[0]
    param = ".".join(str(p) for p in err["loc"]) or None
    if err["type"] == "harmon":
        ctx = err.get("ctx") or {}
        return invalid(ctx["code"], err["msg"], ctx["param"])
    if err["type"] == "extra_forbidden":
        return invalid("parameter_unknown", f"unknown parameter: {param}", param)
    if err["type"] == "missing":
        return invalid("parameter_missing", f"missing required parameter: {param}", param)
    if err["loc"] and err["loc"][0] in QUANTITY_FIELDS:
        return invalid("quantity_invalid", f"{param} must be a whole number from 1 to {MAX_BASE_QUANTITY:,}", param)
    if err["type"] in ("string_pattern_mismatch", "string_unicode"):
        # a libs.contracts.fields kind: its rule in words, or the control character, never a regex
        rule = explain(err.get("input"), (err.get("ctx") or {}).get("pattern"))
        if rule is not None:
            return invalid("parameter_invalid", f"{param} {rule}", param)
    return invalid("parameter_invalid", f"{param}: {err['msg']}", param)


MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]")


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # a repeated key is refused: which one wins differs between parsers (ours took the last)
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return obj


def nests_too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Arrays and objects nested deeper than `limit`, found without recursion (brackets in strings do not count):
    the parser itself would hit Python's recursion limit on 20,000 levels."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # too few brackets to nest that deep: a usual body never pays for the scan
    depth = 0
    for bracket in _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", raw)):
        depth += 1 if bracket in b"[{" else -1
        if depth > limit:
            return True
    return False


def parse_body(model: type[BaseModel], raw: bytes, content_type: str | None) -> tuple[BaseModel, dict]:
    """Parse and validate a request body; returns the model and the parsed JSON (for the idempotency hash)."""
    if not raw.strip():
        data: Any = {}
    else:
        if content_type != "application/json":
            raise ApiError(415, INVALID_REQUEST, "unsupported_media_type",
                           "send the body as JSON with 'Content-Type: application/json'")
        if nests_too_deep(raw):
            raise invalid("json_invalid", f"the body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels")
        try:
            data = json.loads(raw, parse_constant=_no_constants, object_pairs_hook=_unique_keys)
        except _DuplicateKey as e:
            raise invalid("json_invalid", f"the body repeats the key {json.dumps(e.key[:80])}", e.key[:80]) from None
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise invalid("json_invalid", "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise invalid("json_invalid", "the body must be a JSON object")
    try:
        return model.model_validate(data), data
    except ValidationError as e:
        raise validation_error(e) from None


_IF_MATCH = re.compile(r'^\s*(?:W/)?"?([1-9][0-9]{0,8})"?\s*$')


def expected_version(if_match: str | None, body_version: int | None) -> int | None:
    """The cart version a write expects, from `If-Match` or the body's `version`; both must agree."""
    if if_match is None:
        return body_version
    m = _IF_MATCH.match(if_match)
    if m is None:
        raise invalid("parameter_invalid", 'If-Match must be a cart version, e.g. "3"', "If-Match")
    version = int(m.group(1))
    if body_version is not None and body_version != version:
        raise invalid("parameter_invalid", "If-Match and version disagree", "version")
    return version


def parse_query(model: type[B], request: web.Request) -> B:
    """Validate the query string; a parameter given twice is refused rather than one of its values picked."""
    for name in request.query:
        if len(request.query.getall(name)) > 1:
            raise invalid("parameter_invalid", f"{name} is given more than once", name)
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as e:
        raise validation_error(e) from None


def path_value(request: web.Request, name: str, kind: Any, what: str) -> str:
    """A value from the path; one that cannot be ours is simply not found, and no service is asked."""
    value = request.match_info[name]
    if not accepts(kind, value):
        # !r: a control character in the path shows escaped, never raw, in the message
        raise ApiError(404, INVALID_REQUEST, "resource_missing", f"no such {what}: {value[:80]!r}", name)
    return value


def path_id(request: web.Request, name: str, kind: Any) -> str:
    """An id we mint (`CartId`, …), from the path."""
    return path_value(request, name, kind, name.removesuffix("_id"))


R = TypeVar("R", bound=Message)


async def ask(request: web.Request, topic: TopicSpec, key: str | None, payload: Message, expect: type[R] | tuple,
              *, timeout_s: float | None = None) -> R:
    """Send a command for this request's tenant and mode; a Failure becomes its catalogue error."""
    caller = request[CALLER]
    reply = await request.app[CORRELATOR].request(
        topic.name, key, payload, tenant_id=caller.tenant_id, livemode=caller.livemode,
        request_id=request_id_var.get(), timeout_s=timeout_s,
    )
    if isinstance(reply, Failure):
        raise from_failure(reply)
    if not isinstance(reply, expect):
        log.error("%s answered with %s", payload.type, reply.type)
        raise internal_error()
    return reply  # type: ignore[return-value]
