"""Credit commands, replies and events (`credit.commands.v1` / `credit.events.v1`, keyed by bill-to account)."""

from typing import Literal

from .base import Currency, Message, Minor


class ReserveCredit(Message):
    type: Literal["ReserveCredit"] = "ReserveCredit"
    reservation_id: str
    checkout_id: str
    customer_id: str
    bill_to_id: str
    amount: Minor
    currency: Currency


class CreditReserved(Message):
    type: Literal["CreditReserved"] = "CreditReserved"
    reservation_id: str
    bill_to_id: str
    amount: Minor
    limit: Minor
    exposure: Minor
    available: int
    currency: Currency


class CreditRejected(Message):
    """The order would exceed the bill-to account's limit by `shortfall`."""

    type: Literal["CreditRejected"] = "CreditRejected"
    reservation_id: str
    bill_to_id: str
    limit: Minor
    exposure: Minor
    available: int
    order_total: Minor
    shortfall: Minor
    currency: Currency


class ReleaseCredit(Message):
    type: Literal["ReleaseCredit"] = "ReleaseCredit"
    reservation_id: str
    bill_to_id: str


class CreditReleased(Message):
    type: Literal["CreditReleased"] = "CreditReleased"
    reservation_id: str
    bill_to_id: str
    amount: Minor


class GetCreditAccount(Message):
    type: Literal["GetCreditAccount"] = "GetCreditAccount"
    customer_id: str


class CreditAccountView(Message):
    type: Literal["CreditAccountView"] = "CreditAccountView"
    customer_id: str
    bill_to_id: str
    terms: str
    limit: Minor
    exposure: Minor
    available: int
    currency: Currency
