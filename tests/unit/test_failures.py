"""Which behaviour each failure gets (libs/runtime/failures.py): permanent, transient or dependency down."""

import asyncio

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from libs.contracts.base import RecordRefused
from libs.contracts.errors import ErrorCode
from libs.runtime.failures import (BrokerUnavailable, FailureClass, PermanentFailure, classify, failure_code,
                                   sqlstate)
from libs.runtime.scoping import ScopeError


class _Orig(Exception):
    """What SQLAlchemy's asyncpg adapter wraps: an error carrying PostgreSQL's SQLSTATE."""

    def __init__(self, code: str):
        super().__init__(code)
        self.sqlstate = code


def db_error(code: str, cls: type[DBAPIError] = DBAPIError) -> DBAPIError:
    return cls("SELECT 1", {}, _Orig(code))


def validation_error() -> ValidationError:
    class M(BaseModel):
        n: int
    try:
        M(n="x")
    except ValidationError as e:
        return e
    raise AssertionError("no error")


@pytest.mark.parametrize("error, expected", [
    (db_error("22021"), FailureClass.PERMANENT),          # a NUL byte in text
    (db_error("22003"), FailureClass.PERMANENT),          # a number out of range (INTEGER overflow)
    (db_error("23502", IntegrityError), FailureClass.PERMANENT),  # not-null
    (db_error("23503", IntegrityError), FailureClass.PERMANENT),  # foreign key
    (db_error("42P01"), FailureClass.PERMANENT),          # an undefined table: the same every time
    (validation_error(), FailureClass.PERMANENT),
    (PermanentFailure("record_conflict", "same id, other content"), FailureClass.PERMANENT),
    (RecordRefused(ErrorCode.OVER_FULFILMENT, "more than was ordered"), FailureClass.PERMANENT),
    (ScopeError("unbound session"), FailureClass.PERMANENT),
    (db_error("40001"), FailureClass.TRANSIENT),          # serialization failure
    (db_error("40P01"), FailureClass.TRANSIENT),          # deadlock
    (db_error("55P03"), FailureClass.TRANSIENT),          # lock timeout
    (db_error("23505", IntegrityError), FailureClass.TRANSIENT),  # a concurrent writer filled the unique index
    (RuntimeError("unknown"), FailureClass.TRANSIENT),    # unknown: parked and retried, never dropped
    (db_error("57P01"), FailureClass.DOWN),               # the server is shutting down
    (db_error("57P03"), FailureClass.DOWN),               # the server is starting up
    (InterfaceError("SELECT 1", {}, Exception("connection closed")), FailureClass.DOWN),
    (OperationalError("SELECT 1", {}, Exception("refused")), FailureClass.DOWN),
    (ConnectionRefusedError(), FailureClass.DOWN),
    (asyncio.TimeoutError(), FailureClass.DOWN),
    (KafkaConnectionError(), FailureClass.DOWN),
    (BrokerUnavailable("lost"), FailureClass.DOWN),
])
def test_each_failure_has_one_class(error, expected):
    assert classify(error) is expected


def test_a_dead_pooled_connection_is_the_database_down():
    e = db_error("XX000")
    e.connection_invalidated = True
    assert classify(e) is FailureClass.DOWN


def test_the_sqlstate_is_read_from_asyncpg_errors_too():
    e = asyncpg.exceptions.SerializationError("could not serialize")
    assert sqlstate(e) == "40001" and classify(e) is FailureClass.TRANSIENT


def test_a_permanent_failure_answers_in_the_catalogue_words():
    assert failure_code(db_error("22021"))[0] == "parameter_invalid"
    assert failure_code(validation_error())[0] == "parameter_invalid"
    assert failure_code(PermanentFailure("record_conflict", "x", "id")) == ("record_conflict", "x", "id")
    assert failure_code(RecordRefused(ErrorCode.RECORD_CONFLICT, "x", "id")) == ("record_conflict", "x", "id")
    assert failure_code(ScopeError("bug"))[0] == "internal_error"
