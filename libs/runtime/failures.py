"""The three classes of handler failure, each with one behaviour (docs/operations.md, "When a message fails").

- PERMANENT: the message can never succeed as it is (a value the database refuses, a record that
  contradicts state, a bug the message triggers every time). Answered at once with the catalogue
  failure and dead-lettered, without retries, so the caller gets its 4xx in milliseconds.
- TRANSIENT: this message lost a race (serialization failure, deadlock, lock timeout, a unique
  index a concurrent writer filled first) or failed in a way we do not know. A few quick retries;
  then it is parked in the service's own database and retried in key order with backoff.
- DOWN: a dependency is unreachable (PostgreSQL, the broker). Nothing is the message's fault:
  consumption pauses, /readyz answers 503, and the message is handled when the dependency is back.
"""

import asyncio
from enum import StrEnum

import asyncpg
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from libs.contracts.base import RecordRefused


class FailureClass(StrEnum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    DOWN = "down"


class PermanentFailure(Exception):
    """Raised by a handler for a message that can never be applied (e.g. a record that contradicts state).

    `code` is the catalogue code the caller is answered with; the message is dead-lettered.
    """

    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


class DependencyDown(Exception):
    """A dependency the handler needs is unreachable: pause, do not park or dead-letter."""


class BrokerUnavailable(DependencyDown):
    """The broker cannot be reached now (or was lost and is being recovered)."""


# SQLSTATEs of a message that lost a race: retrying sees the state the winner left.
_RACES = {"40001", "40P01", "55P03", "23505", "57014"}
# SQLSTATE classes of a server we cannot use for now: connection exceptions, a login refused,
# insufficient resources, an operator intervention (shutting down, starting up).
_SERVER_GONE = {"08", "28", "53", "57"}


def sqlstate(e: BaseException) -> str | None:
    """The PostgreSQL error code of `e` (asyncpg's; SQLAlchemy, in the gateway, wraps it in `.orig`)."""
    for candidate in (e, getattr(e, "orig", None), getattr(e, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None)
        if isinstance(code, str):
            return code
    return None


def classify(e: BaseException) -> FailureClass:
    if isinstance(e, DependencyDown | KafkaError):
        return FailureClass.DOWN
    if isinstance(e, PermanentFailure | RecordRefused | ValidationError):
        return FailureClass.PERMANENT
    code = sqlstate(e)
    if code in _RACES:
        return FailureClass.TRANSIENT
    if code is not None and code[:2] in _SERVER_GONE:
        return FailureClass.DOWN
    if isinstance(e, DBAPIError) and e.connection_invalidated:
        return FailureClass.DOWN
    if isinstance(e, InterfaceError | OperationalError | OSError | ConnectionError | asyncio.TimeoutError
                  | asyncpg.InterfaceError):
        return FailureClass.DOWN
    if code is not None and code[:2] in ("22", "23", "42"):
        # data exceptions (a NUL byte, a number out of range), integrity and syntax/access errors:
        # the same message fails the same way every time
        return FailureClass.PERMANENT
    if type(e).__name__ == "ScopeError":  # a query outside the message's tenant: a bug, never retried into success
        return FailureClass.PERMANENT
    return FailureClass.TRANSIENT


def failure_code(e: BaseException) -> tuple[str, str, str | None]:
    """The catalogue (code, message, param) a caller is answered with for a permanent failure."""
    if isinstance(e, PermanentFailure | RecordRefused):
        return str(e.code), e.message, e.param
    code = sqlstate(e) or ""
    if isinstance(e, ValidationError) or code[:2] in ("22", "23"):
        return "parameter_invalid", "the request holds a value that cannot be stored", None
    return "internal_error", "the request could not be processed", None
