"""Credit commands, replies and events (`credit.commands.v1` / `credit.events.v1`, keyed by bill-to account)."""

from enum import StrEnum
from typing import Literal

from pydantic import Field

from .base import Message
from .fields import CheckoutId, Code, Currency, CustomerId, Minor, ReservationId, Shortfall, SignedMinor, Terms
from .orders import OpenInvoice


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


# Every change of a bill-to account's exposure is exactly one event on credit.events.v1 (key and aggregate_id:
# the bill-to account id), with aggregate_version = the account's version after it: CreditReserved,
# CreditReleased, or CreditExposureChanged (capture, payment, void, unapplied credit).

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
    # the oldest-first run of open invoices whose payment would cover the shortfall (all, when even that does not)
    open_invoices_to_pay: list[OpenInvoice] = Field(default_factory=list)


class ReleaseCredit(Message):
    type: Literal["ReleaseCredit"] = "ReleaseCredit"
    reservation_id: ReservationId
    bill_to_id: CustomerId


class CreditReleased(Message):
    """What was still held (not yet captured by an invoice) was given back."""

    type: Literal["CreditReleased"] = "CreditReleased"
    reservation_id: ReservationId
    bill_to_id: CustomerId
    amount: Minor
    exposure: Minor | None = None  # the account's after the release


class CreditExposureChanged(Message):
    """The account's exposure moved for a reason other than a reservation or release: `cause` is
    `captured` (an invoice turned its share of a reservation into a receivable), `payment_applied`,
    `payment_unapplied`, `invoice_voided`."""

    type: Literal["CreditExposureChanged"] = "CreditExposureChanged"
    bill_to_id: CustomerId
    cause: Code
    limit: Minor
    exposure: Minor
    available: SignedMinor
    unapplied: Minor
    currency: Currency
    invoice_id: str | None = None
    payment_id: Code | None = None


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
    unapplied: Minor = 0
    open_invoices: list[OpenInvoice] = Field(default_factory=list, description="oldest due first")
