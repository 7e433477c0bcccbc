"""Credit's handlers: load, ask the domain, store, emit; the return value answers the command."""

from libs.contracts import credit as c
from libs.contracts import topics
from libs.contracts.base import Rejection
from libs.contracts.credit import ReservationStatus
from libs.contracts.erp import CreditLimitUpsert, CustomerUpsert
from libs.contracts.errors import ErrorCode

from . import domain
from .domain import CreditAccount, Reservation
from .unit_of_work import CreditUnitOfWork


def _reserved(r: Reservation, account: CreditAccount, exposure: int) -> c.CreditReserved:
    return c.CreditReserved(reservation_id=r.reservation_id, bill_to_id=r.bill_to_id, amount=r.amount,
                            limit=account.limit, exposure=exposure,
                            available=domain.available_credit(account.limit, exposure), currency=r.currency)


async def reserve_credit(cmd: c.ReserveCredit, uow: CreditUnitOfWork) -> c.CreditReserved | c.CreditRejected:
    """Hold `amount` on the customer's bill-to account if it stays within the limit; idempotent per reservation id."""
    bill_to_id, account = await uow.accounts.lock_bill_to(cmd.customer_id, cmd.bill_to_id)
    account = account or CreditAccount.unknown(bill_to_id, cmd.currency)
    exposure, existing = await uow.reservations.exposure_and(bill_to_id, cmd.reservation_id)
    if existing is not None:
        existing.again(cmd.amount, cmd.currency)
        if existing.bill_to_id != bill_to_id:  # the customer moved to another bill-to account since
            account = await uow.accounts.get(existing.bill_to_id) or CreditAccount.unknown(existing.bill_to_id,
                                                                                             cmd.currency)
            exposure = await uow.reservations.exposure(existing.bill_to_id)
        return _reserved(existing, account, exposure)
    decision = account.reserve(cmd.amount, cmd.currency, exposure)
    if isinstance(decision, domain.Rejected):
        return c.CreditRejected(
            reservation_id=cmd.reservation_id, bill_to_id=bill_to_id, limit=decision.limit,
            exposure=decision.exposure, available=decision.available, order_total=cmd.amount,
            shortfall=decision.shortfall, currency=cmd.currency,
        )
    reservation = Reservation(cmd.reservation_id, bill_to_id, cmd.amount, ReservationStatus.RESERVED, cmd.currency,
                              cmd.customer_id, cmd.checkout_id)
    if not await uow.reservations.add(reservation, uow.now):
        # a ReleaseCredit for this id committed while we decided (its tombstone), or the id is another tenant's
        existing = await uow.reservations.get_for_update(cmd.reservation_id)
        if existing is None:
            raise Rejection(ErrorCode.PARAMETER_INVALID, "reservation id already in use", "reservation_id")
        existing.again(cmd.amount, cmd.currency)
        return _reserved(existing, account, exposure)
    reserved = _reserved(reservation, account, decision.exposure)
    uow.outbox.add(topics.CREDIT_EVENTS, bill_to_id, reserved, aggregate_id=bill_to_id)
    return reserved


async def release_credit(cmd: c.ReleaseCredit, uow: CreditUnitOfWork) -> c.CreditReleased:
    """Give a reservation's amount back; for an unknown id leave a tombstone so a late ReserveCredit is refused."""
    res = await uow.reservations.get_for_update(cmd.reservation_id)
    if res is None:
        tombstone = Reservation(cmd.reservation_id, cmd.bill_to_id, 0, ReservationStatus.RELEASED)
        if await uow.reservations.add(tombstone, uow.now):
            released = c.CreditReleased(reservation_id=cmd.reservation_id, bill_to_id=cmd.bill_to_id, amount=0)
            uow.outbox.add(topics.CREDIT_EVENTS, cmd.bill_to_id, released, aggregate_id=cmd.bill_to_id)
            return released
        res = await uow.reservations.get_for_update(cmd.reservation_id)  # a reserve won the race
        if res is None:
            raise Rejection(ErrorCode.PARAMETER_INVALID, "reservation id already in use", "reservation_id")
    released = c.CreditReleased(reservation_id=res.reservation_id, bill_to_id=res.bill_to_id, amount=res.amount)
    if res.holds_credit:
        await uow.reservations.release(res.reservation_id, uow.now)
        uow.outbox.add(topics.CREDIT_EVENTS, res.bill_to_id, released, aggregate_id=res.bill_to_id)
    return released


async def get_credit_account(q: c.GetCreditAccount, uow: CreditUnitOfWork) -> c.CreditAccountView:
    found = await uow.accounts.view(q.customer_id)
    if found is None:
        raise Rejection(ErrorCode.RESOURCE_MISSING, f"no credit account for customer {q.customer_id}", "customer_id")
    customer, bill_to, exposure = found
    limit = bill_to.limit if bill_to else 0
    return c.CreditAccountView(
        customer_id=customer.customer_id, bill_to_id=customer.bill_to_id, terms=customer.terms, limit=limit,
        exposure=exposure, available=domain.available_credit(limit, exposure),
        currency=bill_to.currency if bill_to else customer.currency,
    )


async def upsert_customer(rec: CustomerUpsert, uow: CreditUnitOfWork) -> None:
    await uow.accounts.upsert_customer(rec.customer_id, rec.bill_to_id or rec.customer_id, rec.terms)


async def upsert_credit_limit(rec: CreditLimitUpsert, uow: CreditUnitOfWork) -> None:
    await uow.accounts.upsert_credit_limit(rec.customer_id, rec.limit, rec.currency)
