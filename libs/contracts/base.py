"""The base of every payload, and the one failure reply all services share.

v1 grows only by optional fields and new message types, so a receiver ignores a field it does not
know (a newer sender's): a rolling deploy, or an ERP consumer built from an older `asyncapi.v1.json`,
keeps working. Ignored means dropped, not carried along: a service never re-emits a field it cannot
vouch for (`Envelope.to_bytes` writes only what this version knows; a dead letter keeps the original
bytes). The ERP's records (`erp.py`) are the exception: input from outside, refused on an unknown
field as the HTTP API refuses one, since a misspelt optional field would otherwise silently take
its default (a customer's price becoming the list price).
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict

from .errors import ErrorCode


class Message(BaseModel):
    """A typed payload; `type` is its discriminator on the wire. Unknown fields are ignored (dropped)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Record(Message):
    """A record the ERP publishes: an unknown (misspelt) field is refused, and the record dead-lettered."""

    model_config = ConfigDict(extra="forbid")


class Failure(Message):
    """A reply that says the command could not be done, in the error catalogue's words (`code`)."""

    type: Literal["Failure"] = "Failure"
    code: str
    message: str
    param: str | None = None
    order_id: str | None = None
    status: str | None = None  # order_not_cancellable: the order's current status


class Rejection(Exception):
    """A domain decision not to do a command: raised by the domain or a handler, anything it wrote is rolled
    back, and the caller is answered with a `Failure` in the catalogue's words (the one way to refuse)."""

    def __init__(self, code: ErrorCode, message: str, param: str | None = None, order_id: str | None = None,
                 status: str | None = None):
        super().__init__(message)
        self.code = ErrorCode(code)  # a code outside the catalogue is a bug, found here rather than as a 500
        self.message, self.param, self.order_id, self.status = message, param, order_id, status

    def failure(self) -> Failure:
        return Failure(code=self.code, message=self.message, param=self.param, order_id=self.order_id,
                       status=self.status)


class RecordRefused(Exception):
    """A record that does not fit the state it would change (more shipped than ordered, the same id with other
    content): raised by the domain; nothing is written, it is never retried, and it goes to `<topic>.dlt` with
    `code` in its `harmon-dlt-code` header (and the caller, if any, is answered with that code)."""

    def __init__(self, code: ErrorCode, message: str, param: str | None = None):
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message, self.param = message, param
