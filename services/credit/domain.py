"""Credit rules, free of I/O: may a bill-to account take another reservation?

Exposure is the sum of the bill-to account's open reservations (later also its unpaid invoices).
An account for which no limit record has arrived has a limit of 0: every reservation of a
positive amount is refused, with shortfall = amount.
"""

from dataclasses import dataclass


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
