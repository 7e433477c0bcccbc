"""The base of every payload, and the one failure reply all services share."""

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Message(BaseModel):
    """A typed payload; `type` is its discriminator on the wire."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Failure(Message):
    """A reply that says the command could not be done, in the error catalogue's words (`code`)."""

    type: Literal["Failure"] = "Failure"
    code: str
    message: str
    param: str | None = None
    order_id: str | None = None


class Rejection(Exception):
    """A domain decision not to do a command; becomes a `Failure` reply in the catalogue's words."""

    def __init__(self, code: str, message: str, param: str | None = None, order_id: str | None = None):
        super().__init__(message)
        self.code, self.message, self.param, self.order_id = code, message, param, order_id

    def failure(self) -> Failure:
        return Failure(code=self.code, message=self.message, param=self.param, order_id=self.order_id)
