"""Credit commands, replies and events (`credit.commands.v1` / `credit.events.v1`, keyed by bill-to account)."""

from enum import StrEnum
from typing import Literal

from .base import Message
from .fields import CheckoutId, Currency, CustomerId, Minor, ReservationId, Shortfall, SignedMinor, Terms


class ReservationStatus(StrEnum):
    RESERVED = "reserved"
    RELEASED = "released"


class ReserveCredit(Message):
    type: Literal["ReserveCredit"] = "ReserveCredit"
    reservation_id: ReservationId
    checkout_id: CheckoutId
    customer_id: CustomerId
    bill_to_id: CustomerId
    amount: Minor
    currency: Currency


class CreditReserved(Message):
    type: Literal["CreditReserved"] = "CreditReserved"
    reservation_id: ReservationId
    bill_to_id: CustomerId
    amount: Minor
    limit: Minor
    exposure: Minor
    available: SignedMinor
    currency: Currency


class CreditRejected(Message):
    """The order would exceed the bill-to account's limit by `shortfall`."""

    type: Literal["CreditRejected"] = "CreditRejected"
    reservation_id: ReservationId
    bill_to_id: CustomerId
    limit: Minor
    exposure: Minor
    available: SignedMinor
    order_total: Minor
    shortfall: Shortfall
    currency: Currency


class ReleaseCredit(Message):
    type: Literal["ReleaseCredit"] = "ReleaseCredit"
    reservation_id: ReservationId
    bill_to_id: CustomerId


class CreditReleased(Message):
    type: Literal["CreditReleased"] = "CreditReleased"
    reservation_id: ReservationId
    bill_to_id: CustomerId
    amount: Minor


class GetCreditAccount(Message):
    type: Literal["GetCreditAccount"] = "GetCreditAccount"
    customer_id: CustomerId


class CreditAccountView(Message):
    type: Literal["CreditAccountView"] = "CreditAccountView"
    customer_id: CustomerId
    bill_to_id: CustomerId
    terms: Terms
    limit: Minor
    exposure: Minor
    available: SignedMinor
    currency: Currency
