"""Log lines carry the request id of the HTTP call that caused them, in every service it touches."""

import contextvars
import logging
import sys

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def setup_logging(service: str, level: str = "INFO") -> None:
    """One line per record on stderr: time, level, service, logger, request id, message."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s request_id=%(request_id)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every reconnect attempt of a lost broker as an ERROR, several a millisecond; the
    # broker link (libs/runtime/broker.py) logs each change of the broker's state once instead
    for noisy in ("aiokafka", "aiokafka.consumer.group_coordinator"):
        logging.getLogger(noisy).setLevel(max(logging.CRITICAL, root.level))
