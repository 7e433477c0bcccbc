"""Log records: one JSON object per line (or, with `HARMON_LOG_FORMAT=text`, one human line), never a secret.

Every record carries `ts` (UTC, ISO-8601 with `Z`), `level`, `service`, `instance`, `logger`, `message`
and what is known where it was logged: the `request_id` of the HTTP call that caused it (in every
service it touches), the `tenant_id`, `livemode`, `message_id`, `topic`, `partition` and `offset` of
the message being handled (libs/runtime/dispatch.py binds them), an exception as `exc_info` text.
The JSON is python-json-logger's over the standard `logging` every module and library already logs
through (docs/operations.md, "Logs").

One record is one line in both formats: JSON escapes every control character (and, ASCII-only,
everything past `~`); the text format backslash-escapes them (a client's `%0a` cannot start a forged
record). Anything shaped like an API key or a JWT is masked wherever it appears — message, exception,
any field — even inside a malformed header.
"""

import contextvars
import logging
import os
import re
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Literal, NoReturn

from pythonjsonlogger.core import RESERVED_ATTRS, merge_record_extra
from pythonjsonlogger.json import JsonFormatter

if TYPE_CHECKING:
    from pydantic import ValidationError

    from libs.contracts.envelope import Envelope

LogFormat = Literal["json", "text"]
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "text")

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# the message being handled: tenant_id, livemode, message_id, topic, partition, offset
message_fields_var: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar(
    "message_fields", default=MappingProxyType({}))

# C0 (newline, CR, NUL, ESC…), DEL, C1 and the Unicode line/paragraph separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# the shapes tests/logscan.py looks for: keys of any kind, JWTs (their header always starts `{"` → eyJ)
_API_KEY = re.compile(r"(hk_(?:test|live)_(?:(?:sec|pub)_)?)[A-Za-z0-9_-]{16,}")
_WEBHOOK_SECRET = re.compile(r"whsec_[A-Za-z0-9_-]{8,}")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")


def _escape_char(m: re.Match) -> str:
    ch = m.group()
    return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def escape_controls(text: str) -> str:
    return _CONTROL.sub(_escape_char, text)


def mask_secrets(text: str, ellipsis: str = "…") -> str:
    """Keys become their hint (prefix and the last four, which people already see); tokens disappear."""
    if "hk_" in text:
        text = _API_KEY.sub(lambda m: f"{m.group(1)}{ellipsis}{m.group()[-4:]}", text)
    if "whsec_" in text:  # a webhook endpoint's signing secret: never even its end
        text = _WEBHOOK_SECRET.sub(f"whsec_{ellipsis}(secret masked)", text)
    return _JWT.sub(lambda _: f"eyJ{ellipsis}(token masked)", text) if "eyJ" in text else text


# -- what a record knows of where it was logged ---------------------------------------------------

def _request_fields() -> Mapping[str, object]:
    request_id = request_id_var.get()
    return {"request_id": request_id} if request_id != "-" else {}


# Each provider returns the fields it knows now (nothing when it knows none), in this order. Tracing
# adds trace_id and span_id with one line: add_context(lambda: {"trace_id": …, "span_id": …}).
_CONTEXT: list[Callable[[], Mapping[str, object]]] = [_request_fields, message_fields_var.get]


def add_context(provider: Callable[[], Mapping[str, object]]) -> None:
    """Every record from now on also carries what `provider()` returns when it is logged."""
    _CONTEXT.append(provider)


def context_fields() -> dict[str, object]:
    fields: dict[str, object] = {}
    for provider in _CONTEXT:
        fields.update(provider())
    return fields


def enter_message(env: "Envelope", topic: str, partition: int | None = None,
                  offset: int | None = None) -> tuple[contextvars.Token, contextvars.Token]:
    """While a message is handled, every record carries its request id, tenant, mode, id and position."""
    fields: dict[str, object] = {"tenant_id": env.tenant_id, "livemode": env.livemode,
                                 "message_id": env.message_id, "topic": topic}
    if partition is not None:
        fields.update(partition=partition, offset=offset)
    return request_id_var.set(env.request_id or "-"), message_fields_var.set(MappingProxyType(fields))


def leave_message(tokens: tuple[contextvars.Token, contextvars.Token]) -> None:
    request_id_var.reset(tokens[0])
    message_fields_var.reset(tokens[1])


# -- the formats ----------------------------------------------------------------------------------

class JsonLineFormatter(JsonFormatter):
    """One JSON object per record: the fixed fields, the context, `extra=` fields, `exc_info`/`stack_info`.

    ASCII-only output (`\\uXXXX` for the rest): no control character can reach the file raw, and no
    stream encoding can fail on a record. Masking runs over the serialized object, so it reaches every
    field, whatever its type; key and token characters are never escaped in JSON, so none hides there.
    """

    def __init__(self, service: str, instance: str):
        # request_id: the text format's filter may have set it on the record; it comes from the context here
        super().__init__(json_ensure_ascii=True, reserved_attrs=[*RESERVED_ATTRS, "taskName", "request_id"])
        self.service, self.instance = service, instance

    def add_fields(self, log_data: dict, record: logging.LogRecord, message_dict: dict) -> None:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        log_data.update(ts=ts.replace("+00:00", "Z"), level=record.levelname, service=self.service,
                        instance=self.instance, logger=record.name, message=record.message)
        log_data.update(context_fields())
        log_data.update(message_dict)  # exc_info, stack_info (or a dict logged as the message)
        merge_record_extra(record, log_data, reserved=self.reserved_attrs)  # extra={...}: may refine the context

    def serialize_log_record(self, log_data: dict) -> str:
        return mask_secrets(super().serialize_log_record(log_data), ellipsis="\\u2026")


class SafeFormatter(logging.Formatter):
    """The standard format, then every control character escaped and every key or token masked."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(escape_controls(super().format(record)))


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def text_formatter(service: str) -> SafeFormatter:
    """Today's human line: time, level, service, logger, request id, message."""
    return SafeFormatter(f"%(asctime)s %(levelname)s {service} %(name)s request_id=%(request_id)s %(message)s")


def formatter(log_format: LogFormat, service: str, instance: str) -> logging.Formatter:
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: one of {', '.join(LOG_FORMATS)}")
    return JsonLineFormatter(service, instance) if log_format == "json" else text_formatter(service)


def _log_uncaught(exc_type: type[BaseException], exc: BaseException | None, tb: TracebackType | None) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("harmon.uncaught").critical("uncaught %s", exc_type.__name__, exc_info=(exc_type, exc, tb))


def _log_thread_exception(a: threading.ExceptHookArgs) -> None:
    if not issubclass(a.exc_type, SystemExit):  # as threading's own hook: a thread may exit that way
        _log_uncaught(a.exc_type, a.exc_value, a.exc_traceback)


def _log_unraisable(u: "sys.UnraisableHookArgs") -> None:
    exc_info = (u.exc_type, u.exc_value, u.exc_traceback) if u.exc_value is not None else None
    logging.getLogger("harmon.uncaught").error("%s: %r", u.err_msg or "Exception ignored in", u.object,
                                               exc_info=exc_info)


def setup_logging(service: str, level: str = "INFO", log_format: LogFormat = "json", instance: str = "-", *,
                  text: SafeFormatter | None = None) -> None:
    """Every record of the process, one line each on stderr, in `log_format` (`text`: another human line
    than the services'); Python's own reports of an uncaught exception or a warning become records too
    (they would otherwise print several raw lines)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(text if text is not None and log_format == "text" else formatter(log_format, service, instance))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_exception
    sys.unraisablehook = _log_unraisable
    # aiokafka logs every reconnect attempt of a lost broker as an ERROR, several a millisecond; the
    # broker link (libs/runtime/broker.py) logs each change of the broker's state once instead
    for noisy in ("aiokafka", "aiokafka.consumer.group_coordinator"):
        logging.getLogger(noisy).setLevel(max(logging.CRITICAL, root.level))


def refuse_to_start(service: str, error: "ValidationError", env_prefix: str) -> NoReturn:
    """Settings the process cannot start with: one CRITICAL record naming each variable and what is wrong
    with it (never its value: it may be a secret), in the format the environment asks for; exit 1."""
    def variable(loc: tuple) -> str:
        name = "_".join(str(p) for p in loc).upper() or "SETTINGS"
        return name if name.startswith("HARMON_") else f"{env_prefix}{name}"  # common ones carry their alias

    problems = "; ".join(f"{variable(e['loc'])}: {e['msg']}"
                         for e in error.errors(include_url=False, include_input=False))
    log_format = os.environ.get("HARMON_LOG_FORMAT", "").strip().lower()
    setup_logging(service, "INFO", log_format if log_format in LOG_FORMATS else "json",  # type: ignore[arg-type]
                  os.environ.get("HARMON_INSTANCE_ID", "-"))
    logging.getLogger(f"harmon.{service}").critical("%s: refusing to start with these settings: %s", service, problems)
    sys.exit(1)


def cli_logging(name: str, verbose: bool = False) -> None:
    """A command line's records (`harmon`, the gateway's admin commands): a human line on a terminal, JSON lines
    otherwise (the migrate job of a deployment, a captured run); `HARMON_LOG_FORMAT` decides when set
    (docs/operations.md, "Logs")."""
    log_format = os.environ.get("HARMON_LOG_FORMAT", "").strip().lower() or ("text" if sys.stderr.isatty() else "json")
    if log_format not in LOG_FORMATS:
        sys.exit(f"{name}: HARMON_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
    setup_logging(name, "DEBUG" if verbose else "INFO", log_format,  # type: ignore[arg-type]
                  os.environ.get("HARMON_INSTANCE_ID") or socket.gethostname(),
                  text=SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    for noisy in ("alembic", "aiokafka", "aiokafka.consumer.group_coordinator"):
        logging.getLogger(noisy).setLevel(logging.NOTSET if verbose else logging.WARNING)
