"""Credit rules, free of I/O: may a bill-to account take another reservation, and what moves its exposure?

Exposure (docs/credit.md) = what open reservations still hold (amount − captured) + the amount due of the
account's open invoice copies − its unapplied credit, floored at 0. An account for which no limit record has
arrived has a limit of 0: every reservation of a positive amount is refused, with shortfall = amount.
"""

from dataclasses import dataclass, replace
from datetime import datetime

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


@dataclass(frozen=True)
class Exposure:
    """The three parts of a bill-to account's exposure, in minor units."""

    held: int = 0  # Σ (amount − captured) of its open reservations
    invoiced: int = 0  # Σ amount_due of its open invoice copies
    unapplied: int = 0  # its unapplied credit (overpayments not used by an invoice yet)

    def __post_init__(self):
        if self.held < 0 or self.invoiced < 0 or self.unapplied < 0:
            raise ValueError("held, invoiced and unapplied are non-negative minor units")

    @property
    def total(self) -> int:
        """What counts against the limit: unapplied credit lowers it, never below 0."""
        return max(0, self.held + self.invoiced - self.unapplied)

    def holding(self, amount: int) -> "Exposure":
        return replace(self, held=self.held + amount)


def decide(limit: int, before: Exposure, amount: int) -> Reserved | Rejected:
    """Reserve `amount` if exposure after it stays within the limit (reaching it exactly is allowed)."""
    if limit < 0 or amount < 0:
        raise ValueError("limit and amount are non-negative minor units")
    after = before.holding(amount).total
    if after <= limit:
        return Reserved(limit=limit, exposure=after, available=available_credit(limit, after))
    return Rejected(limit=limit, exposure=before.total, available=available_credit(limit, before.total),
                    shortfall=after - limit)


def decide_reservation(limit: int, exposure: int, amount: int) -> Reserved | Rejected:
    """`decide` for an exposure that is only held credit."""
    return decide(limit, Exposure(held=exposure), amount)


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

    def reserve(self, amount: int, currency: str, exposure: Exposure) -> Reserved | Rejected:
        """May this bill-to account, at `exposure`, take `amount` more?"""
        if self.credit_limit is not None and currency != self.currency:
            raise Rejection(ErrorCode.PARAMETER_INVALID, f"the account's limit is in {self.currency}, not {currency}",
                            "currency")
        return decide(self.limit, exposure, amount)


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
    captured: int = 0  # moved into invoices (receivables) by InvoiceIssued; never more than amount

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

    @property
    def held(self) -> int:
        """What still counts as held: nothing once released, and never what invoices captured."""
        return self.amount - self.captured if self.holds_credit else 0

    def capture(self, total: int) -> tuple["Reservation", int]:
        """An invoice of `total` turns up to what is still held into a receivable: (the reservation after, taken)."""
        taken = min(self.held, total)
        return replace(self, captured=self.captured + taken), taken


@dataclass(frozen=True)
class InvoiceCopy:
    """Credit's copy of one of orders' invoices (from invoices.events.v1), as of `version`.

    `captured` is what its InvoiceIssued took from the order's reservation; None until that event is applied (a
    later event of the invoice may have created the copy first).
    """

    invoice_id: str
    bill_to_id: str
    status: str  # open | paid | void
    total: int
    amount_due: int
    issued_at: datetime
    version: int
    invoice_number: str | None = None
    due_at: datetime | None = None
    overdue: bool = False
    reservation_id: str | None = None
    captured: int | None = None

    @property
    def owed(self) -> int:
        """What this invoice adds to exposure."""
        return self.amount_due if self.status == "open" else 0

    def follow(self, newer: "InvoiceCopy") -> "InvoiceCopy | None":
        """The copy after an event carrying `newer`; None when that event is not newer (a repeat, or out of order)."""
        if newer.version <= self.version:
            return None
        return replace(newer, reservation_id=self.reservation_id or newer.reservation_id, captured=self.captured)


@dataclass(frozen=True)
class Issued:
    """What an InvoiceIssued does: the copy to store (None: keep it), the reservation after capture (None: none
    touched), and the amount captured."""

    copy: InvoiceCopy | None
    reservation: Reservation | None
    captured: int


def issue(current: InvoiceCopy | None, incoming: InvoiceCopy, reservation: Reservation | None) -> Issued:
    """The capture (docs/credit.md, "Capture"): once per invoice, min(held, total) of its reservation becomes the
    invoice's; the copy is stored unless a newer version of it is already there."""
    if current is not None and current.captured is not None:
        return Issued(None, None, 0)  # applied before: the same InvoiceIssued again
    reservation_after, taken = reservation.capture(incoming.total) if reservation is not None else (None, 0)
    base = incoming if current is None or incoming.version > current.version else current
    copy = replace(base, reservation_id=incoming.reservation_id, captured=taken)
    return Issued(copy, reservation_after if taken else None, taken)


def to_pay(open_invoices: list[InvoiceCopy], shortfall: int) -> list[InvoiceCopy]:
    """The remedy: the oldest-first run (due_at, undated last, then issued_at) of open invoices whose amounts due
    cover `shortfall`; all of them when even that does not."""
    run, covered = [], 0
    for inv in sorted(open_invoices, key=oldest_first):
        if covered >= shortfall:
            break
        run.append(inv)
        covered += inv.owed
    return run


def oldest_first(inv: InvoiceCopy) -> tuple:
    return (inv.due_at is None, inv.due_at or inv.issued_at, inv.issued_at, inv.invoice_id)


def unapplied_credit(entries: list[tuple[str, int]]) -> int:
    """The account's unapplied credit from its ledger of (payment id, ±amount): each payment's excess (+) less what
    invoices took of it (−). A payment whose uses arrived before its PaymentUnapplied (another partition) counts 0,
    not less: exposure is then over-counted until the excess arrives, never under-counted."""
    per_payment: dict[str, int] = {}
    for payment_id, amount in entries:
        per_payment[payment_id] = per_payment.get(payment_id, 0) + amount
    return sum(max(0, s) for s in per_payment.values())
