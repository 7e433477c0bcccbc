"""The log scanner finds what it must (full keys, signed and unsigned JWTs) and not what is allowed (key hints)."""

import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from services.gateway.auth import generate_api_key
from libs.runtime.logs import JsonLineFormatter
from tests.logscan import (
    assert_json_logs, assert_no_secrets, json_log_findings, log_files, mask, read_records, record_problems, scan_logs,
    scan_text,
)

KEY = generate_api_key(False, "secret")
LIVE_PUBLISHABLE = generate_api_key(True, "publishable")
TOKEN = jwt.encode({"sub": "cus_01", "aud": "harmon:ten_01:test"}, "s" * 32, "HS256", headers={"kid": "hs256-ab"})
UNSIGNED = jwt.encode({"sub": "cus_01"}, None, "none")


def log_text() -> str:
    return "\n".join([
        "2026-11-23 20:00:00 INFO gateway POST /v1/carts 201 3.1ms key=hk_test_sec_…AbCd",  # a hint: allowed
        f"2026-11-23 20:00:01 WARNING gateway bad header Authorization: Bearer {KEY}",
        f"2026-11-23 20:00:02 INFO gateway token={TOKEN} and {LIVE_PUBLISHABLE}",
        f"2026-11-23 20:00:03 DEBUG orders {UNSIGNED}",
        "2026-11-23 20:00:04 INFO cart request_id=req_01M851VWC0CFXMSWJEZGT9SDYY eyJ-not-a-token",
    ])


def test_finds_keys_and_tokens_by_line_and_masks_them():
    found = scan_text(log_text(), Path("gateway.log"))
    assert [(f.line, f.what) for f in found] == [(2, "API key"), (3, "API key"), (3, "token"), (4, "token")]
    report = "\n".join(map(str, found))
    assert "gateway.log:2: a full API key (hk_test_sec_…" in report
    for secret in (KEY, LIVE_PUBLISHABLE, TOKEN, UNSIGNED):
        assert secret not in report and secret[-12:] not in report


def test_mask_keeps_prefix_and_last_four_only():
    assert mask(KEY) == f"hk_test_sec_…{KEY[-4:]}"
    assert mask(LIVE_PUBLISHABLE).startswith("hk_live_pub_…")
    assert mask(TOKEN) == f"eyJ…({len(TOKEN)} characters)"


@pytest.fixture
def scratch() -> Iterator[Path]:
    # not tmp_path: the run's own scan reads pytest's tmp dirs, and this one is dirty on purpose
    with tempfile.TemporaryDirectory(prefix="harmon-test-logscan-") as path:
        yield Path(path)


def test_clean_logs_pass_and_dirty_ones_fail_naming_the_file(scratch: Path):
    (scratch / "logs").mkdir()
    (scratch / "logs" / "gateway.log").write_text("INFO key=hk_test_sec_…AbCd\n")
    (scratch / "run").mkdir()
    (scratch / "run" / "tansu.log").write_text("listening\n")
    (scratch / "secrets.json").write_text(f'{{"key": "{KEY}"}}')  # not a log: where keys are meant to be
    assert_no_secrets(scratch)

    (scratch / "harmon-dev.stderr").write_text(f"ok\nshopper {TOKEN}\n")
    assert set(log_files(scratch)) == {scratch / "logs" / "gateway.log", scratch / "run" / "tansu.log",
                                        scratch / "harmon-dev.stderr"}
    with pytest.raises(AssertionError, match=r"harmon-dev\.stderr:2: a full token"):
        assert_no_secrets(scratch)
    assert [f.line for f in scan_logs(scratch)] == [2]


@pytest.mark.parametrize("char", ["\r", "\x00", "\x1b", "\t", "\x0b", "\x7f", "\x85", "\u2028"])
def test_an_unescaped_control_character_is_found_by_line_and_column(char):
    text = "2026-11-23 20:00:00 INFO gateway ok\n" f"2026-11-23 20:00:01 INFO gateway GET /v1/x{char}forged\n"
    [found] = scan_text(text, Path("gateway.log"))
    assert (found.line, found.what) == (2, "control character")
    assert str(found) == f"gateway.log:2: an unescaped control character (U+{ord(char):04X} at column 43)"


def test_escaped_control_characters_and_line_ends_pass():
    assert scan_text("INFO GET /v1/carts/cart_X\\n2026-12-01 FORGED \\x00 \\r\\n\nnext line\n") == []


def test_a_bare_carriage_return_in_a_file_fails_the_scan(scratch: Path):
    (scratch / "logs").mkdir()
    (scratch / "logs" / "gateway.log").write_bytes(b"INFO one\nINFO GET /v1/x\r2026-12-01 INFO gateway FORGED\n")
    with pytest.raises(AssertionError, match=r"gateway\.log:2: an unescaped control character \(U\+000D"):
        assert_no_secrets(scratch)


def test_a_postgresql_continuation_tab_is_its_format_but_nothing_else_is():
    log = Path("/x/pg/postgres.log")
    assert scan_text("2026 UTC [1] STATEMENT:  SELECT 1\n\tFROM t\n", log) == []
    assert [f.what for f in scan_text("\tFROM t\x1b[2J\n", log)] == ["control character"]
    assert [f.what for f in scan_text("\tFROM t\n", Path("/x/logs/cart.log"))] == ["control character"]


# -- JSON records -----------------------------------------------------------------------------------

def record(**fields) -> dict:
    return {"ts": "2026-11-23T20:00:00.123Z", "level": "INFO", "service": "cart", "instance": "1",
            "logger": "harmon.cart", "message": "ok", **fields}


def test_a_key_or_token_in_a_json_record_is_found_even_behind_escapes():
    escaped_key = KEY[:12] + "".join(f"\\u{ord(c):04x}" for c in KEY[12:])  # what ensure_ascii never writes
    lines = [json.dumps(record(message=f"Bearer {KEY}")),
             json.dumps(record(header=TOKEN)),
             json.dumps(record(message="x")).replace('"x"', f'"{escaped_key}"'),
             json.dumps(record(nested={"list": [UNSIGNED]}, message="hk_test_sec_\u2026AbCd")),  # a hint: allowed
             json.dumps(record(message="\n".join(["a", "b\x00", "\u2028"])))]  # escaped: allowed
    assert json.loads(lines[2])["message"] == KEY
    found = scan_text("\n".join(lines), Path("cart.log"))
    assert [(f.line, f.what) for f in found] == [(1, "API key"), (2, "token"), (3, "API key"), (4, "token")]
    assert not any(KEY in str(f) or TOKEN in str(f) for f in found)


def test_a_well_formed_record_has_no_problems_and_each_defect_is_named():
    assert record_problems(json.dumps(record())) == []
    full = record(request_id="req_1", tenant_id="ten_1", livemode=False, message_id="msg_1", topic="cart.commands.v1",
                  partition=0, offset=12, exc_info="Traceback…", ts="2026-11-23T20:00:00.123456+00:00")
    assert record_problems(json.dumps(full)) == []
    assert record_problems("2026-11-23 20:00:00 INFO cart request_id=- started") == ["not a JSON object"]
    assert record_problems('["a list"]') == ["not a JSON object"]
    assert record_problems(json.dumps({k: v for k, v in record().items() if k != "instance"})) == ["no 'instance'"]
    assert record_problems(json.dumps(record(ts="2026-11-23T15:00:00-05:00"))) == ["'ts' is not a UTC ISO-8601 time"]
    assert record_problems(json.dumps(record(ts="2026-11-23 20:00:00"))) == ["'ts' is not a UTC ISO-8601 time"]
    assert record_problems(json.dumps(record(level="info"))) == ["'level' is not a logging level"]
    assert record_problems(json.dumps(record(message=None))) == ["'message' is not a string"]
    assert record_problems(json.dumps(record(topic="t", partition=True, livemode="no"))) == [
        "'livemode' is not a bool", "'partition' is not a int"]
    assert record_problems(json.dumps(record(partition=1, offset=2))) == ["a 'partition' without its 'topic'"]


def formatted(*messages: str) -> str:
    formatter = JsonLineFormatter("cart", "1")
    return "".join(formatter.format(logging.LogRecord("harmon.cart", logging.INFO, __file__, 1, m, None, None)) + "\n"
                   for m in messages)


def test_the_services_formatter_writes_records_the_check_accepts(scratch: Path):
    log = scratch / "cart.log"
    log.write_text(formatted("started", f"a key {KEY}", "GET /x\n2026 FORGED") + '{"ts": "2026-')  # still writing
    assert_json_logs(log)
    assert [r["message"] for r in read_records(log)] == ["started", f"a key hk_test_sec_…{KEY[-4:]}",
                                                          "GET /x\n2026 FORGED"]


def test_a_line_that_is_no_record_fails_the_check_naming_file_and_line_never_the_text(scratch: Path):
    log = scratch / "orders.log"
    log.write_text(formatted("started") + f"Traceback (most recent call last): {KEY}\n" + formatted("stopped"))
    [malformed] = [f for f in json_log_findings(log) if f.what == "malformed record"]
    assert (malformed.line, str(malformed)) == (2, f"{log}:2: a malformed record: not a JSON object")
    with pytest.raises(AssertionError, match=r"orders\.log:2: a full API key") as failed:
        assert_json_logs(log)
    assert "orders.log:2: a malformed record: not a JSON object" in str(failed.value)
    assert KEY not in str(failed.value)


def test_finds_a_webhook_signing_secret_and_never_shows_it():
    secret = "whsec_" + "Ab3_" * 11
    [found] = scan_text(f'{{"message": "created with {secret}"}}\n', Path("notifier.log"))
    assert (found.line, found.what) == (1, "webhook secret") and secret not in str(found)
