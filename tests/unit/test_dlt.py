"""`harmon dlt`'s pure parts: what a dead letter says, which records a replay picks, where the broker is.
The command against a real broker: tests/integration/test_dlt.py."""

import json
import os
import subprocess
import sys

import pytest

from libs.contracts import cart
from libs.contracts.envelope import Envelope
from libs.stack.admin_cli import CommandError
from libs.stack.cli import build_parser
from libs.stack.dlt import _text, broker_address, describe, dlt_and_source, positions, printable

HEADERS = [("harmon-dlt-class", b"permanent"), ("harmon-dlt-reason", b"IntegrityError: \x1b[31mno\x07"),
           ("harmon-dlt-source-topic", b"cart.commands.v1"), ("harmon-dlt-partition", b"3"),
           ("harmon-dlt-offset", b"41"), ("harmon-dlt-attempts", b"1"), ("harmon-dlt-consumer", b"cart")]
ENV = Envelope(tenant_id="ten_1", livemode=True, payload=cart.CreateCart(cart_id="cart_1", customer_id="cus_1"))


def test_either_name_gives_the_dlt_and_its_source():
    assert dlt_and_source("cart.commands.v1") == ("cart.commands.v1.dlt", "cart.commands.v1")
    assert dlt_and_source("cart.commands.v1.dlt") == ("cart.commands.v1.dlt", "cart.commands.v1")


def test_a_dead_letter_that_decodes():
    d = describe(3, 7, 1_764_600_000_000, b"cart_1", ENV.to_bytes(), HEADERS)
    assert (d.type, d.message_id, d.decodes, d.position) == ("CreateCart", ENV.message_id, True, "3:7")
    assert d.extra == {"tenant_id": "ten_1", "livemode": True, "reply_to": None}
    assert d.headers["harmon-dlt-source-topic"] == "cart.commands.v1"


def test_a_dead_letter_of_a_newer_type_still_says_what_it_is():
    raw = ENV.model_dump(mode="json")
    raw["type"] = raw["payload"]["type"] = "CreateCartV2"
    d = describe(0, 0, 0, None, json.dumps(raw).encode(), HEADERS)
    assert (d.type, d.message_id, d.decodes) == ("CreateCartV2", ENV.message_id, False)
    assert "does not decode" in _text(d)


@pytest.mark.parametrize("value", [b"{not json", b"[1, 2]", b'{"type": 5, "message_id": ["x"]}', b"\xff\xfe"])
def test_a_dead_letter_that_is_not_an_envelope(value):
    d = describe(0, 1, 0, b"k", value, [])
    assert (d.type, d.message_id, d.decodes) == (None, None, False)
    assert _text(d).startswith("0:1 ")


def test_what_reaches_the_terminal_has_no_control_characters():
    d = describe(1, 2, 0, b"key\x1b]0;owned\x07", ENV.to_bytes(), HEADERS + [("x-\x1bh", b"v\r\n")])
    text = _text(d)
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7f <= ord(c) <= 0x9f for c in text), text
    assert "\\x1b" in text and "permanent: 1 attempt(s) by cart, from cart.commands.v1[3]@41" in text
    assert printable(None) == "-" and printable("caf\u00e9") == "caf\u00e9"


RANGES = {0: (0, 2), 1: (0, 6), 2: (3, 3)}  # partition -> (first offset, end): 2 is empty, retention took 0-2


def test_a_replay_picks_by_partition_and_offset():
    assert positions(["1:0", "0:1", "1:0"], RANGES, "t.dlt") == [(1, 0), (0, 1)]
    assert positions(["5"], RANGES, "t.dlt") == [(1, 5)]  # only one partition has it


@pytest.mark.parametrize("wanted, code, says", [
    (["0"], 2, "0:0 or 1:0"),  # in two partitions: say which
    (["2:0"], 1, "no record 2:0"),
    (["2:3"], 1, "no record 2:3"),
    (["0:2"], 1, "no record 0:2"),
    (["7:0"], 1, "no record 7:0"),
    (["9"], 1, "no record 9"),
    (["-1"], 2, "PARTITION:OFFSET"),
    (["a:b"], 2, "PARTITION:OFFSET"),
])
def test_a_replay_refuses_what_it_cannot_find_exactly(wanted, code, says):
    with pytest.raises(CommandError) as info:
        positions(wanted, RANGES, "t.dlt")
    assert info.value.code == code and says in str(info.value)


def args(*argv: str):
    return build_parser().parse_args(["dlt", "list", "t", *argv])


def test_the_broker_address_comes_from_the_option_then_the_environment(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARMON_KAFKA_BOOTSTRAP", "kafka:9092")
    assert broker_address(args("--bootstrap", "b:1")) == "b:1"
    assert broker_address(args()) == "kafka:9092"
    monkeypatch.delenv("HARMON_KAFKA_BOOTSTRAP")
    with pytest.raises(CommandError) as info:
        broker_address(args())
    assert info.value.code == 2 and "--bootstrap" in str(info.value)


def test_the_broker_address_of_a_running_harmon_dev(monkeypatch, tmp_path):
    monkeypatch.setenv("HARMON_KAFKA_BOOTSTRAP", "kafka:9092")  # --data-dir wins over it
    (tmp_path / "credentials.json").write_text(json.dumps({"kafka_bootstrap": "127.0.0.1:40123"}))
    (tmp_path / "stack.lock").write_text(str(os.getpid()))  # this process stands in for the supervisor
    assert broker_address(args("--data-dir", str(tmp_path))) == "127.0.0.1:40123"
    # a stack that stopped: its credentials.json names a broker that is gone
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "stack.lock").write_text(dead.stdout.strip())
    with pytest.raises(CommandError) as info:
        broker_address(args("--data-dir", str(tmp_path)))
    assert info.value.code == 1 and "no `harmon dev` is running" in str(info.value)


async def test_replay_needs_to_be_told_which(capsys):
    a = build_parser().parse_args(["dlt", "replay", "t", "--bootstrap", "127.0.0.1:1"])
    assert await a.run(a) == 2
    assert "--offset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dlt", "replay", "t", "--all", "--offset", "0:1"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dlt", "list", "t", "--limit", "0"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_another_users_stack_is_said_to_be_unreadable_not_stopped(tmp_path):
    for name in ("credentials.json", "stack.lock"):
        (tmp_path / name).write_text("{}")
        (tmp_path / name).chmod(0)
    with pytest.raises(CommandError) as info:
        broker_address(args("--data-dir", str(tmp_path)))
    assert "Permission denied" in str(info.value) and "not running" not in str(info.value)
