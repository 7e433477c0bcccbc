"""The services' log formats: one record is one line whatever a client sends, and keys and tokens never appear.

JSON (the default): one object per line with the fixed fields and what the context knows; text
(`HARMON_LOG_FORMAT=text`): today's human line.
"""

import io
import json
import logging
import re
import sys
import threading
import warnings
from collections.abc import Iterator

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from libs.contracts.envelope import Envelope
from libs.contracts.cart import GetCart
from libs.runtime import logs
from libs.runtime.logs import enter_message, leave_message, request_id_var, setup_logging
from libs.runtime.settings import ServiceSettings
from services.gateway.auth import generate_api_key

KEY = generate_api_key(False, "secret")
TOKEN = jwt.encode({"sub": "cus_01", "aud": "harmon:ten_01:test"}, "s" * 32, "HS256", headers={"kid": "hs256-ab"})
FORGED = "2026-12-01 13:00:00,000 INFO gateway FORGED"
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
EVERY_CONTROL = "".join(map(chr, [*range(0x20), 0x7f, 0x85, 0x9b, 0x2028, 0x2029]))
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
FIXED = ("ts", "level", "service", "instance", "logger", "message")


class Captured:
    """What the root handler wrote: its lines, or its records parsed as JSON."""

    def __init__(self, out: io.StringIO):
        self.out = out

    def lines(self) -> list[str]:
        text = self.out.getvalue()
        assert text.endswith("\n")
        return text[:-1].split("\n")

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.lines()]


@pytest.fixture
def configure() -> Iterator:
    """Configure logging as a service does (into a buffer, not stderr); returns the capture."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    hooks = sys.excepthook, sys.unraisablehook, threading.excepthook

    def configure(log_format: str = "json") -> Captured:
        setup_logging("gateway", "DEBUG", log_format, "gw-1")  # type: ignore[arg-type]
        out = io.StringIO()
        root.handlers[0].setStream(out)
        return Captured(out)

    try:
        yield configure
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        sys.excepthook, sys.unraisablehook, threading.excepthook = hooks
        logging.captureWarnings(False)


@pytest.fixture
def logged(configure) -> Captured:
    return configure("json")


@pytest.fixture
def text(configure) -> Captured:
    return configure("text")


def envelope(request_id: str | None = "req_9") -> Envelope:
    return Envelope(tenant_id="ten_01", livemode=True, request_id=request_id, payload=GetCart(cart_id="cart_1", customer_id="cus_1"))


# -- JSON -----------------------------------------------------------------------------------------

def test_a_record_is_one_object_with_the_fixed_fields(logged):
    logging.getLogger("harmon.test").warning("stock %d", 3)
    [record] = logged.records()
    assert list(record)[:6] == list(FIXED)
    assert TS.fullmatch(record["ts"]), record["ts"]
    assert {k: record[k] for k in FIXED[1:]} == {"level": "WARNING", "service": "gateway", "instance": "gw-1",
                                                 "logger": "harmon.test", "message": "stock 3"}
    assert "request_id" not in record and "message_id" not in record, "only what is known"


def test_the_request_id_and_the_message_being_handled_are_fields(logged):
    log = logging.getLogger("harmon.test")
    token = request_id_var.set("req_1")
    try:
        log.info("in a request")
    finally:
        request_id_var.reset(token)
    env = envelope()
    tokens = enter_message(env, "cart.commands.v1", 1, 42)
    try:
        log.info("handling")
    finally:
        leave_message(tokens)
    log.info("after")
    first, handling, after = logged.records()
    assert first["request_id"] == "req_1"
    assert {k: handling[k] for k in ("request_id", "tenant_id", "livemode", "message_id", "topic", "partition",
                                     "offset")} == {"request_id": "req_9", "tenant_id": "ten_01", "livemode": True,
                                                    "message_id": env.message_id, "topic": "cart.commands.v1",
                                                    "partition": 1, "offset": 42}
    assert not {"request_id", "tenant_id", "message_id", "topic"} & set(after), "left with the message"


def test_a_message_without_a_request_id_or_position_leaves_them_out(logged):
    tokens = enter_message(envelope(request_id=None), "orders.events.v1")
    try:
        logging.getLogger("harmon.test").info("x")
    finally:
        leave_message(tokens)
    [record] = logged.records()
    assert record["topic"] == "orders.events.v1" and not {"request_id", "partition", "offset"} & set(record)


def test_a_context_provider_adds_its_fields_in_one_line(logged, monkeypatch):
    # what tracing will do for trace_id and span_id
    monkeypatch.setattr(logs, "_CONTEXT", list(logs._CONTEXT))
    logs.add_context(lambda: {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"})
    logging.getLogger("harmon.test").info("x")
    [record] = logged.records()
    assert (record["trace_id"], record["span_id"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")


def test_extra_fields_are_fields(logged):
    logging.getLogger("harmon.gateway.access").info("GET / 200", extra={"tenant_id": "ten_02", "livemode": False})
    [record] = logged.records()
    assert (record["tenant_id"], record["livemode"]) == ("ten_02", False)


def test_a_forged_newline_and_every_control_character_stay_inside_the_json_string(logged):
    log = logging.getLogger("harmon.gateway.access")
    log.info("%s %s %d", "GET", f"/v1/carts/cart_X\n{FORGED}", 404)
    log.warning("value=%s", EVERY_CONTROL)
    lines = logged.lines()
    assert len(lines) == 2 and not any(CONTROL.search(line) for line in lines)
    assert not any(line.startswith(FORGED) for line in lines)
    forged, every = logged.records()
    assert forged["message"] == f"GET /v1/carts/cart_X\n{FORGED} 404", "escaped by JSON, intact when read"
    assert every["message"] == f"value={EVERY_CONTROL}"
    assert lines[0].isascii() and lines[1].isascii()


def test_an_exception_and_its_traceback_are_one_field(logged):
    try:
        raise ValueError(f"bad\n{FORGED}")
    except ValueError:
        logging.getLogger("harmon.test").exception("failed")
    [line] = logged.lines()
    record = json.loads(line)
    assert record["message"] == "failed" and record["level"] == "ERROR"
    assert record["exc_info"].startswith("Traceback (most recent call last):\n")
    assert record["exc_info"].endswith(f"ValueError: bad\n{FORGED}")


def test_keys_and_tokens_are_masked_in_every_field(logged):
    log = logging.getLogger("harmon.test")
    log.warning("Authorization: Bearer %s\x01", KEY)
    log.warning("X-Storefront-Shopper-Token: %s\x00", TOKEN)
    log.warning("no header: %s%s", KEY, TOKEN)  # glued together
    log.info("key=hk_test_sec_…AbCd")  # a hint stays as it is
    log.info("extra", extra={"header": f"Bearer {KEY}", "nested": {"token": [TOKEN]}, "obj": ValueError(KEY)})
    try:
        raise RuntimeError(f"rejected {KEY} {TOKEN}")
    except RuntimeError:
        log.exception("with a key in the exception")
    lines = logged.lines()
    for line in lines:
        assert KEY not in line and KEY[12:30] not in line and TOKEN[:40] not in line, line
    bearer, shopper, _, hint, extra, failed = logged.records()
    assert bearer["message"] == f"Authorization: Bearer hk_test_sec_…{KEY[-4:]}\x01"
    assert shopper["message"] == "X-Storefront-Shopper-Token: eyJ…(token masked)\x00"
    assert hint["message"] == "key=hk_test_sec_…AbCd"
    assert extra["header"] == f"Bearer hk_test_sec_…{KEY[-4:]}"
    assert extra["nested"] == {"token": ["eyJ…(token masked)"]}
    assert extra["obj"] == f"ValueError: hk_test_sec_…{KEY[-4:]}"
    assert "rejected hk_test_sec_…" in failed["exc_info"] and "eyJ…(token masked)" in failed["exc_info"]


@settings(max_examples=200, deadline=None)
@given(before=st.text(), after=st.text())
def test_any_text_around_a_key_is_one_parseable_line_without_it(before, after):
    formatter = logs.JsonLineFormatter("cart", "1")
    record = logging.LogRecord("harmon.test", logging.INFO, __file__, 1, "%s %s %s %s", (before, KEY, TOKEN, after),
                               None)
    line = formatter.format(record)
    assert "\n" not in line and not CONTROL.search(line) and line.isascii()
    parsed = json.loads(line)
    assert KEY not in parsed["message"] and TOKEN not in parsed["message"] and KEY[12:30] not in line
    assert parsed["message"].startswith(before) and parsed["message"].endswith(after)


def test_uncaught_exceptions_and_warnings_become_records(logged):
    try:
        raise KeyError(f"lost\n{FORGED}")
    except KeyError as e:
        sys.excepthook(type(e), e, e.__traceback__)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("deprecated\nthing", DeprecationWarning, stacklevel=1)
    uncaught, warned = logged.records()
    assert (uncaught["level"], uncaught["logger"], uncaught["message"]) == ("CRITICAL", "harmon.uncaught",
                                                                          "uncaught KeyError")
    assert "KeyError" in uncaught["exc_info"] and FORGED in uncaught["exc_info"]
    assert warned["logger"] == "py.warnings" and "deprecated\nthing" in warned["message"]


def test_the_format_is_a_setting_json_by_default(monkeypatch):
    monkeypatch.setenv("HARMON_CART_DATABASE_URL", "postgresql://x@localhost/x")

    class Settings(ServiceSettings):
        model_config = {"env_prefix": "HARMON_CART_"}

    assert Settings().log_format == "json"
    monkeypatch.setenv("HARMON_LOG_FORMAT", "text")
    assert Settings().log_format == "text"
    monkeypatch.setenv("HARMON_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="HARMON_LOG_FORMAT"):
        Settings()


# -- text -----------------------------------------------------------------------------------------

def test_text_a_forged_newline_stays_inside_its_record(text):
    log = logging.getLogger("harmon.gateway.access")
    token = request_id_var.set("req_1")
    try:
        log.info("%s %s %d", "GET", f"/v1/carts/cart_X\n{FORGED}", 404)
        log.info("%s %s %d", "GET", f"/v1/carts/cart_X\r{FORGED}", 404)
    finally:
        request_id_var.reset(token)
    lines = text.lines()
    assert len(lines) == 2
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO gateway harmon\.gateway\.access "
                        rf"request_id=req_1 GET /v1/carts/cart_X\\n{FORGED} 404", lines[0]), lines[0]
    assert lines[1].endswith(f"GET /v1/carts/cart_X\\r{FORGED} 404")
    assert not any(line.startswith(FORGED) for line in lines)


def test_text_every_control_character_is_escaped(text):
    logging.getLogger("harmon.test").warning("value=%s", EVERY_CONTROL)
    [line] = text.lines()
    assert not CONTROL.search(line)
    assert line.endswith("value=\\x00\\x01\\x02\\x03\\x04\\x05\\x06\\x07\\x08\\t\\n\\x0b\\x0c\\r\\x0e\\x0f\\x10\\x11"
                         "\\x12\\x13\\x14\\x15\\x16\\x17\\x18\\x19\\x1a\\x1b\\x1c\\x1d\\x1e\\x1f\\x7f\\x85\\x9b"
                         "\\u2028\\u2029")


def test_text_an_exception_and_its_traceback_are_one_line(text):
    try:
        raise ValueError(f"bad\n{FORGED}")
    except ValueError:
        logging.getLogger("harmon.test").exception("failed")
    [line] = text.lines()
    assert "failed\\nTraceback (most recent call last):\\n" in line
    assert f"ValueError: bad\\n{FORGED}" in line


def test_text_keys_and_tokens_are_masked_even_when_malformed(text):
    log = logging.getLogger("harmon.test")
    log.warning("Authorization: Bearer %s\x01", KEY)
    log.warning("X-Storefront-Shopper-Token: %s\x00", TOKEN)
    log.warning("no header: %s%s", KEY, TOKEN)  # glued together
    log.info("key=hk_test_sec_…AbCd")  # a hint stays as it is
    lines = text.lines()
    assert lines[0].endswith(f"Authorization: Bearer hk_test_sec_…{KEY[-4:]}\\x01")
    assert lines[1].endswith("X-Storefront-Shopper-Token: eyJ…(token masked)\\x00")
    assert lines[3].endswith("key=hk_test_sec_…AbCd")
    for line in lines:
        assert KEY not in line and KEY[12:30] not in line and TOKEN[:40] not in line, line


def test_a_webhook_signing_secret_is_masked_whole():
    secret = "whsec_" + "Zx9-" * 11
    masked = logs.mask_secrets(f"rotated: {secret} (old one kept)")
    assert secret not in masked and secret[-4:] not in masked and "whsec_…(secret masked)" in masked
