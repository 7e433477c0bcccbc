"""The services' log format: one record is one line whatever a client sends, and keys and tokens never appear."""

import io
import logging
import re
from collections.abc import Iterator

import jwt
import pytest

from libs.runtime.logs import request_id_var, setup_logging
from services.gateway.auth import generate_api_key

KEY = generate_api_key(False, "secret")
TOKEN = jwt.encode({"sub": "cus_01", "aud": "harmon:ten_01:test"}, "s" * 32, "HS256", headers={"kid": "hs256-ab"})
FORGED = "2026-12-01 13:00:00,000 INFO gateway FORGED"
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@pytest.fixture
def logged() -> Iterator:
    """Configure logging as a service does (into a buffer, not stderr); yield a function returning its lines."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    setup_logging("gateway", "DEBUG")
    out = io.StringIO()
    root.handlers[0].setStream(out)

    def lines() -> list[str]:
        text = out.getvalue()
        assert text.endswith("\n")
        return text[:-1].split("\n")

    try:
        yield lines
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_a_forged_newline_stays_inside_its_record(logged):
    log = logging.getLogger("harmon.gateway.access")
    token = request_id_var.set("req_1")
    try:
        log.info("%s %s %d", "GET", f"/v1/carts/cart_X\n{FORGED}", 404)
        log.info("%s %s %d", "GET", f"/v1/carts/cart_X\r{FORGED}", 404)
    finally:
        request_id_var.reset(token)
    lines = logged()
    assert len(lines) == 2
    assert lines[0].endswith(f"request_id=req_1 GET /v1/carts/cart_X\\n{FORGED} 404")
    assert lines[1].endswith(f"GET /v1/carts/cart_X\\r{FORGED} 404")
    assert not any(line.startswith(FORGED) for line in lines)


def test_every_control_character_is_escaped(logged):
    every = "".join(map(chr, [*range(0x20), 0x7f, 0x85, 0x9b, 0x2028, 0x2029]))
    logging.getLogger("harmon.test").warning("value=%s", every)
    [line] = logged()
    assert not CONTROL.search(line)
    assert line.endswith("value=\\x00\\x01\\x02\\x03\\x04\\x05\\x06\\x07\\x08\\t\\n\\x0b\\x0c\\r\\x0e\\x0f\\x10\\x11"
                         "\\x12\\x13\\x14\\x15\\x16\\x17\\x18\\x19\\x1a\\x1b\\x1c\\x1d\\x1e\\x1f\\x7f\\x85\\x9b"
                         "\\u2028\\u2029")


def test_an_exception_and_its_traceback_are_one_line(logged):
    try:
        raise ValueError(f"bad\n{FORGED}")
    except ValueError:
        logging.getLogger("harmon.test").exception("failed")
    [line] = logged()
    assert "failed\\nTraceback (most recent call last):\\n" in line
    assert f"ValueError: bad\\n{FORGED}" in line


def test_keys_and_tokens_are_masked_even_when_malformed(logged):
    log = logging.getLogger("harmon.test")
    log.warning("Authorization: Bearer %s\x01", KEY)
    log.warning("X-Storefront-Shopper-Token: %s\x00", TOKEN)
    log.warning("no header: %s%s", KEY, TOKEN)  # glued together
    log.info("key=hk_test_sec_…AbCd")  # a hint stays as it is
    lines = logged()
    assert lines[0].endswith(f"Authorization: Bearer hk_test_sec_…{KEY[-4:]}\\x01")
    assert lines[1].endswith("X-Storefront-Shopper-Token: eyJ…(token masked)\\x00")
    assert lines[3].endswith("key=hk_test_sec_…AbCd")
    for line in lines:
        assert KEY not in line and KEY[12:30] not in line and TOKEN[:40] not in line, line
