"""Credit rules, free of I/O: may a bill-to account take another reservation?

Exposure is the sum of the bill-to account's open reservations (later also its unpaid invoices).
An account for which no limit record has arrived has a limit of 0: every reservation of a
positive amount is refused, with shortfall = amount.
"""

from dataclasses import dataclass

from libs.contracts.base import Rejection
from libs.contracts.credit import ReservationStatus
from libs.contracts.errors import ErrorCode


@dataclass(frozen=True)
class Reserved:
    limit: int
    exposure: int  # after this reservation
    available: int


@dataclass(frozen=True)
class Rejected:
    limit: int
    exposure: int  # unchanged: nothing was reserved
    available: int  # negative when a limit was lowered below the exposure
    shortfall: int


def effective_limit(credit_limit: int | None) -> int:
    """No limit record means no credit."""
    return 0 if credit_limit is None else credit_limit


def available_credit(limit: int, exposure: int) -> int:
    """What is left under the limit; negative when a limit was lowered below the exposure."""
    return limit - exposure


def decide_reservation(limit: int, exposure: int, amount: int) -> Reserved | Rejected:
    """Reserve `amount` if exposure stays within the limit (reaching it exactly is allowed)."""
    if limit < 0 or exposure < 0 or amount < 0:
        raise ValueError("limit, exposure and amount are non-negative minor units")
    after = exposure + amount
    if after <= limit:
        return Reserved(limit=limit, exposure=after, available=available_credit(limit, after))
    return Rejected(limit=limit, exposure=exposure, available=available_credit(limit, exposure), shortfall=after - limit)


@dataclass(frozen=True)
class CreditAccount:
    """Credit's copy of a customer (erp.customers.v1) and its limit (erp.credit_limits.v1), whichever came first.

    `bill_to_id` is the account whose limit and exposure apply (itself when it bills itself);
    `customer_known` is False while only a limit record has arrived (bill_to_id is then itself).
    """

    customer_id: str
    bill_to_id: str
    terms: str
    credit_limit: int | None  # None: no limit record has arrived, which counts as a limit of 0
    currency: str
    customer_known: bool

    @classmethod
    def unknown(cls, customer_id: str, currency: str) -> "CreditAccount":
        """An account no record has named: it bills itself, on cod, with no credit."""
        return cls(customer_id, customer_id, "cod", None, currency, False)

    @property
    def limit(self) -> int:
        return effective_limit(self.credit_limit)

    def bill_to_for(self, fallback: str) -> str:
        """Credit's own copy of the customer decides; the caller's bill-to is used only for a customer not known yet."""
        return self.bill_to_id if self.customer_known else fallback

    def reserve(self, amount: int, currency: str, exposure: int) -> Reserved | Rejected:
        """May this bill-to account, already holding `exposure`, take `amount` more?"""
        if self.credit_limit is not None and currency != self.currency:
            raise Rejection(ErrorCode.PARAMETER_INVALID, f"the account's limit is in {self.currency}, not {currency}",
                            "currency")
        return decide_reservation(self.limit, exposure, amount)


@dataclass(frozen=True)
class Reservation:
    """Credit held for one checkout; a released row with amount 0 is a tombstone that refuses a late reserve."""

    reservation_id: str
    bill_to_id: str
    amount: int
    status: ReservationStatus
    currency: str | None = None  # None only on a tombstone
    customer_id: str | None = None  # None only on a tombstone
    checkout_id: str | None = None  # None only on a tombstone

    def again(self, amount: int, currency: str) -> None:
        """A ReserveCredit for a reservation that exists: the same one is answered, unless it cannot be."""
        if self.status is ReservationStatus.RELEASED:
            raise Rejection(ErrorCode.RESERVATION_RELEASED, f"reservation {self.reservation_id} was released",
                            "reservation_id")
        if (self.amount, self.currency) != (amount, currency):
            raise Rejection(ErrorCode.PARAMETER_INVALID, f"reservation {self.reservation_id} holds another amount",
                            "reservation_id")

    @property
    def holds_credit(self) -> bool:
        return self.status is ReservationStatus.RESERVED
