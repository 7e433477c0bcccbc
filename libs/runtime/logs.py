"""Log lines carry the request id of the HTTP call that caused them, in every service it touches.

One record is one line: control characters in the message, the exception text and the stack are
backslash-escaped (a client's `%0a` cannot start a forged record), and anything shaped like an API
key or a JWT is masked wherever it appears, even inside a malformed header.
"""

import contextvars
import logging
import re
import sys

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# C0 (newline, CR, NUL, ESC…), DEL, C1 and the Unicode line/paragraph separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# the shapes tests/logscan.py looks for: keys of any kind, JWTs (their header always starts `{"` → eyJ)
_API_KEY = re.compile(r"(hk_(?:test|live)_(?:(?:sec|pub)_)?)[A-Za-z0-9_-]{16,}")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")


def _escape_char(m: re.Match) -> str:
    ch = m.group()
    return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def escape_controls(text: str) -> str:
    return _CONTROL.sub(_escape_char, text)


def _mask_key(m: re.Match) -> str:
    return f"{m.group(1)}…{m.group()[-4:]}"  # the hint people already see: prefix and last four


def mask_secrets(text: str) -> str:
    if "hk_" in text:
        text = _API_KEY.sub(_mask_key, text)
    return _JWT.sub("eyJ…(token masked)", text) if "eyJ" in text else text


class SafeFormatter(logging.Formatter):
    """The standard format, then every control character escaped and every key or token masked."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(escape_controls(super().format(record)))


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def setup_logging(service: str, level: str = "INFO") -> None:
    """One line per record on stderr: time, level, service, logger, request id, message."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(
        SafeFormatter(f"%(asctime)s %(levelname)s {service} %(name)s request_id=%(request_id)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every reconnect attempt of a lost broker as an ERROR, several a millisecond; the
    # broker link (libs/runtime/broker.py) logs each change of the broker's state once instead
    for noisy in ("aiokafka", "aiokafka.consumer.group_coordinator"):
        logging.getLogger(noisy).setLevel(max(logging.CRITICAL, root.level))
