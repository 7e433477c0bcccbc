"""Credit's handlers: load, ask the domain, store, emit; the return value answers the command.

Every change of a bill-to account's exposure bumps the account's version and emits exactly one event on
credit.events.v1 with that version (docs/credit.md, "Events"): CreditReserved, CreditReleased, or
CreditExposureChanged for what invoices.events.v1 brings (capture, payments, voids, unapplied credit).
"""

from libs.contracts import credit as c
from libs.contracts import invoices as i
from libs.contracts import topics
from libs.contracts.base import Rejection, RecordRefused
from libs.contracts.credit import ReservationStatus
from libs.contracts.erp import CreditLimitUpsert, CustomerUpsert
from libs.contracts.errors import ErrorCode
from libs.contracts.orders import OpenInvoice

from . import domain
from .domain import CreditAccount, InvoiceCopy, Reservation
from .unit_of_work import CreditUnitOfWork


def _reserved(r: Reservation, account: CreditAccount, exposure: int) -> c.CreditReserved:
    return c.CreditReserved(reservation_id=r.reservation_id, bill_to_id=r.bill_to_id, amount=r.amount,
                            limit=account.limit, exposure=exposure,
                            available=domain.available_credit(account.limit, exposure), currency=r.currency)


def _open(inv: InvoiceCopy) -> OpenInvoice:
    return OpenInvoice(invoice_id=inv.invoice_id, invoice_number=inv.invoice_number, amount_due=inv.amount_due,
                       due_at=inv.due_at, overdue=inv.overdue)


async def reserve_credit(cmd: c.ReserveCredit, uow: CreditUnitOfWork) -> c.CreditReserved | c.CreditRejected:
    """Hold `amount` on the customer's bill-to account if it stays within the limit; idempotent per reservation id.
    On the checkout path: three statements (lock, exposure, insert + version), as before exposure lived."""
    bill_to_id, account = await uow.accounts.lock_bill_to(cmd.customer_id, cmd.bill_to_id)
    account = account or CreditAccount.unknown(bill_to_id, cmd.currency)
    exposure, existing = await uow.reservations.exposure_and(bill_to_id, cmd.reservation_id)
    if existing is not None:
        existing.again(cmd.amount, cmd.currency)
        if existing.bill_to_id != bill_to_id:  # the customer moved to another bill-to account since
            account = await uow.accounts.get(existing.bill_to_id) or CreditAccount.unknown(existing.bill_to_id,
                                                                                             cmd.currency)
            exposure = await uow.reservations.exposure(existing.bill_to_id)
        return _reserved(existing, account, exposure.total)
    decision = account.reserve(cmd.amount, cmd.currency, exposure)
    if isinstance(decision, domain.Rejected):
        # the remedies are read only for a refusal, and only when there is an invoice to pay
        open_invoices = await uow.invoices.open_for(bill_to_id) if exposure.invoiced else []
        return c.CreditRejected(
            reservation_id=cmd.reservation_id, bill_to_id=bill_to_id, limit=decision.limit,
            exposure=decision.exposure, available=decision.available, order_total=cmd.amount,
            shortfall=decision.shortfall, currency=cmd.currency,
            open_invoices_to_pay=[_open(inv) for inv in domain.to_pay(open_invoices, decision.shortfall)],
        )
    reservation = Reservation(cmd.reservation_id, bill_to_id, cmd.amount, ReservationStatus.RESERVED, cmd.currency,
                              cmd.customer_id, cmd.checkout_id)
    version = await uow.reservations.reserve(reservation, uow.now)
    if version is None:
        # a ReleaseCredit for this id committed while we decided (its tombstone), or the id is another tenant's
        existing = await uow.reservations.get_for_update(cmd.reservation_id)
        if existing is None:
            raise Rejection(ErrorCode.PARAMETER_INVALID, "reservation id already in use", "reservation_id")
        existing.again(cmd.amount, cmd.currency)
        return _reserved(existing, account, exposure.total)
    reserved = _reserved(reservation, account, decision.exposure)
    uow.outbox.add(topics.CREDIT_EVENTS, bill_to_id, reserved, aggregate_id=bill_to_id, aggregate_version=version)
    return reserved


async def release_credit(cmd: c.ReleaseCredit, uow: CreditUnitOfWork) -> c.CreditReleased:
    """Give back what a reservation still holds (what its invoices did not capture); for an unknown id leave a
    tombstone so a late ReserveCredit is refused. An event only when something held was given back."""
    bill_to_id = await uow.accounts.lock_for_reservation(cmd.reservation_id, cmd.bill_to_id)
    res = await uow.reservations.get_for_update(cmd.reservation_id)
    if res is None:
        tombstone = Reservation(cmd.reservation_id, bill_to_id, 0, ReservationStatus.RELEASED)
        if await uow.reservations.add(tombstone, uow.now):  # nothing held: the exposure did not change
            exposure = await uow.reservations.exposure(bill_to_id)
            return c.CreditReleased(reservation_id=cmd.reservation_id, bill_to_id=bill_to_id, amount=0,
                                    exposure=exposure.total)
        res = await uow.reservations.get_for_update(cmd.reservation_id)  # a reserve won the race
        if res is None:
            raise Rejection(ErrorCode.PARAMETER_INVALID, "reservation id already in use", "reservation_id")
    uncaptured = res.amount - res.captured
    if res.holds_credit:
        await uow.reservations.release(res.reservation_id, uow.now)
        if uncaptured:
            version, _, exposure = await uow.accounts.touch(res.bill_to_id, res.currency)
            released = c.CreditReleased(reservation_id=res.reservation_id, bill_to_id=res.bill_to_id,
                                        amount=uncaptured, exposure=exposure.total)
            uow.outbox.add(topics.CREDIT_EVENTS, res.bill_to_id, released, aggregate_id=res.bill_to_id,
                           aggregate_version=version)
            return released
    exposure = await uow.reservations.exposure(res.bill_to_id)  # a repeat, or all of it was invoiced
    return c.CreditReleased(reservation_id=res.reservation_id, bill_to_id=res.bill_to_id, amount=uncaptured,
                            exposure=exposure.total)


async def get_credit_account(q: c.GetCreditAccount, uow: CreditUnitOfWork) -> c.CreditAccountView:
    found = await uow.accounts.view(q.customer_id)
    if found is None:
        raise Rejection(ErrorCode.RESOURCE_MISSING, f"no credit account for customer {q.customer_id}", "customer_id")
    customer, bill_to, exposure = found
    limit = bill_to.limit if bill_to else 0
    open_invoices = await uow.invoices.open_for(customer.bill_to_id) if exposure.invoiced else []
    return c.CreditAccountView(
        customer_id=customer.customer_id, bill_to_id=customer.bill_to_id, terms=customer.terms, limit=limit,
        exposure=exposure.total, available=domain.available_credit(limit, exposure.total),
        currency=bill_to.currency if bill_to else customer.currency, unapplied=exposure.unapplied,
        open_invoices=[_open(inv) for inv in open_invoices],
    )


async def upsert_customer(rec: CustomerUpsert, uow: CreditUnitOfWork) -> None:
    await uow.accounts.upsert_customer(rec.customer_id, rec.bill_to_id or rec.customer_id, rec.terms)


async def upsert_credit_limit(rec: CreditLimitUpsert, uow: CreditUnitOfWork) -> None:
    await uow.accounts.upsert_credit_limit(rec.customer_id, rec.limit, rec.currency)


# ---- invoices.events.v1: credit's copy of each invoice, and the unapplied-credit ledger ------------------------

def _invoice_version(uow: CreditUnitOfWork) -> int:
    version = uow.message.aggregate_version if uow.message is not None else None
    if version is None:
        raise RecordRefused(ErrorCode.PARAMETER_MISSING, "an invoice event without aggregate_version")
    return version


def _copy_of(inv: i.InvoiceView, version: int, reservation_id: str | None = None) -> InvoiceCopy:
    return InvoiceCopy(inv.invoice_id, inv.bill_to_id, inv.status, inv.total, inv.amount_due, inv.issued_at, version,
                       inv.invoice_number, inv.due_at, inv.overdue, reservation_id)


async def _announce(uow: CreditUnitOfWork, bill_to_id: str, currency: str, cause: str, *,
                    invoice_id: str | None = None, payment_id: str | None = None) -> None:
    """One exposure change of `bill_to_id`: its version + 1 and one CreditExposureChanged with that version."""
    version, account, exposure = await uow.accounts.touch(bill_to_id, currency)
    changed = c.CreditExposureChanged(
        bill_to_id=bill_to_id, cause=cause, limit=account.limit, exposure=exposure.total,
        available=domain.available_credit(account.limit, exposure.total), unapplied=exposure.unapplied,
        currency=account.currency, invoice_id=invoice_id, payment_id=payment_id)
    uow.outbox.add(topics.CREDIT_EVENTS, bill_to_id, changed, aggregate_id=bill_to_id, aggregate_version=version)


async def invoice_issued(evt: i.InvoiceIssued, uow: CreditUnitOfWork) -> None:
    """The capture (docs/credit.md, "Capture"): the invoice copy, and min(held, total) of the order's reservation
    moved into it, in one transaction, once per invoice."""
    inv = evt.invoice
    incoming = _copy_of(inv, _invoice_version(uow), evt.reservation_id)
    await uow.accounts.lock(inv.bill_to_id, inv.currency)
    current = await uow.invoices.get(inv.invoice_id)
    reservation = None
    if evt.reservation_id is not None and (current is None or current.captured is None):
        reservation = await uow.reservations.get(evt.reservation_id)
        if reservation is not None and reservation.bill_to_id != inv.bill_to_id:
            # the customer moved to another bill-to since the order: lock that account too, then read again
            await uow.accounts.lock(reservation.bill_to_id, reservation.currency or inv.currency)
            reservation = await uow.reservations.get(evt.reservation_id)
    decision = domain.issue(current, incoming, reservation)
    if decision.copy is None:
        return
    await uow.invoices.put(decision.copy)
    if decision.reservation is not None:
        await uow.reservations.set_captured(decision.reservation.reservation_id, decision.reservation.captured)
    moved_here = decision.captured and decision.reservation.bill_to_id == inv.bill_to_id
    if moved_here or decision.copy.owed != (current.owed if current else 0):
        await _announce(uow, inv.bill_to_id, inv.currency, "captured", invoice_id=inv.invoice_id)
    if decision.captured and not moved_here:
        await _announce(uow, decision.reservation.bill_to_id, inv.currency, "captured", invoice_id=inv.invoice_id)


async def _follow(inv: i.InvoiceView, uow: CreditUnitOfWork) -> bool:
    """Update the copy from a later event of the invoice when it is newer; True if what it owes changed."""
    incoming = _copy_of(inv, _invoice_version(uow))
    await uow.accounts.lock(inv.bill_to_id, inv.currency)
    current = await uow.invoices.get(inv.invoice_id)
    after = incoming if current is None else current.follow(incoming)  # no copy yet: this event makes it
    if after is None:
        return False
    await uow.invoices.put(after)
    return after.owed != (current.owed if current else 0)


def _follows(cause: str):
    async def handler(evt, uow: CreditUnitOfWork) -> None:
        if await _follow(evt.invoice, uow):
            await _announce(uow, evt.invoice.bill_to_id, evt.invoice.currency, cause,
                            invoice_id=evt.invoice.invoice_id)
    handler.__name__ = handler.__qualname__ = f"follow_{cause}"
    handler.__doc__ = f"The invoice copy follows the event; an exposure change is announced as `{cause}`."
    return handler


invoice_due_date_set = _follows("invoice_due_date_set")
invoice_paid = _follows("invoice_paid")
invoice_voided = _follows("invoice_voided")
invoice_overdue = _follows("invoice_overdue")


async def payment_applied(evt: i.PaymentApplied, uow: CreditUnitOfWork) -> None:
    """A payment lowered an invoice's amount due; from unapplied credit, the ledger records the use (once per
    payment and invoice), so the sum of exposure moves by the payment only when it is new money."""
    inv = evt.invoice  # its bill-to is the account locked, whose credit a use of unapplied credit was
    changed = await _follow(inv, uow)
    if evt.source == "unapplied":
        changed |= await uow.unapplied.add(evt.payment_id, inv.invoice_id, inv.bill_to_id, -evt.amount, uow.now)
    if changed:
        await _announce(uow, inv.bill_to_id, inv.currency, "payment_applied", invoice_id=inv.invoice_id,
                        payment_id=evt.payment_id)


async def payment_unapplied(evt: i.PaymentUnapplied, uow: CreditUnitOfWork) -> None:
    """A payment's excess becomes the account's unapplied credit, once per payment."""
    await uow.accounts.lock(evt.bill_to_id, evt.currency)
    if await uow.unapplied.add(evt.payment_id, "", evt.bill_to_id, evt.amount, uow.now):
        await _announce(uow, evt.bill_to_id, evt.currency, "payment_unapplied", payment_id=evt.payment_id)
