"""Credit command handlers: load, ask the domain, store, reply, emit."""

from datetime import UTC, datetime

from libs.contracts import credit as c
from libs.contracts import topics
from libs.contracts.base import Rejection
from libs.contracts.envelope import Envelope
from libs.contracts.erp import CreditLimitUpsert, CustomerUpsert
from libs.runtime.messaging import ServiceContext, UnitOfWork, answer_command

from . import domain
from .repository import CreditRepository
from .tables import Account, Reservation


def _now() -> datetime:
    return datetime.now(UTC)


def _emit(uow: UnitOfWork, bill_to_id: str, event: c.CreditReserved | c.CreditReleased) -> None:
    uow.send(topics.CREDIT_EVENTS.name, bill_to_id, event, aggregate_id=bill_to_id)


async def _bill_to_of(repo: CreditRepository, customer_id: str, fallback: str) -> str:
    """Credit's own copy of the customer decides; the command's bill-to is used only for a customer not known yet."""
    account = await repo.get_account(customer_id)
    return account.bill_to_id if account is not None and account.customer_known else fallback


async def _reserved_again(repo: CreditRepository, existing: Reservation, cmd: c.ReserveCredit) -> c.CreditReserved:
    """The answer to a ReserveCredit whose reservation already exists: the same reservation, today's numbers."""
    if existing.status == "released":
        raise Rejection("reservation_released", f"reservation {existing.reservation_id} was released", "reservation_id")
    if (existing.amount, existing.currency) != (cmd.amount, cmd.currency):
        raise Rejection("parameter_invalid", f"reservation {existing.reservation_id} holds another amount", "reservation_id")
    account = await repo.get_account(existing.bill_to_id)
    limit = domain.effective_limit(account.credit_limit if account else None)
    exposure = await repo.exposure(existing.bill_to_id)
    return c.CreditReserved(
        reservation_id=existing.reservation_id, bill_to_id=existing.bill_to_id, amount=existing.amount,
        limit=limit, exposure=exposure, available=domain.available_credit(limit, exposure), currency=cmd.currency,
    )


async def reserve_credit(cmd: c.ReserveCredit, env: Envelope, ctx: ServiceContext) -> None:
    """Hold `amount` on the customer's bill-to account if it stays within the limit; idempotent per reservation id."""

    async def decide(uow: UnitOfWork) -> c.CreditReserved | c.CreditRejected:
        repo = CreditRepository(uow.session, env)
        bill_to_id = await _bill_to_of(repo, cmd.customer_id, cmd.bill_to_id)
        # The row lock serializes every reservation on this bill-to account, across instances:
        # the sum below then sees all reservations committed before us.
        account = await repo.get_account(bill_to_id, for_update=True)
        existing = await repo.get_reservation(cmd.reservation_id)
        if existing is not None:
            return await _reserved_again(repo, existing, cmd)
        has_limit = account is not None and account.credit_limit is not None
        if has_limit and account.currency != cmd.currency:
            raise Rejection("parameter_invalid", f"the account's limit is in {account.currency}, not {cmd.currency}",
                            "currency")
        limit = domain.effective_limit(account.credit_limit if account else None)
        exposure = await repo.exposure(bill_to_id)
        decision = domain.decide_reservation(limit, exposure, cmd.amount)
        if isinstance(decision, domain.Rejected):
            return c.CreditRejected(
                reservation_id=cmd.reservation_id, bill_to_id=bill_to_id, limit=decision.limit,
                exposure=decision.exposure, available=decision.available, order_total=cmd.amount,
                shortfall=decision.shortfall, currency=cmd.currency,
            )
        inserted = await repo.add_reservation(
            reservation_id=cmd.reservation_id, bill_to_id=bill_to_id, customer_id=cmd.customer_id,
            checkout_id=cmd.checkout_id, amount=cmd.amount, currency=cmd.currency, status="reserved",
            created_at=_now(),
        )
        if not inserted:  # a ReleaseCredit for this id committed while we decided
            existing = await repo.get_reservation(cmd.reservation_id)
            if existing is None:
                raise Rejection("parameter_invalid", "reservation id already in use", "reservation_id")
            return await _reserved_again(repo, existing, cmd)
        reserved = c.CreditReserved(
            reservation_id=cmd.reservation_id, bill_to_id=bill_to_id, amount=cmd.amount, limit=decision.limit,
            exposure=decision.exposure, available=decision.available, currency=cmd.currency,
        )
        _emit(uow, bill_to_id, reserved)
        return reserved

    await answer_command(ctx, env, decide)


async def release_credit(cmd: c.ReleaseCredit, env: Envelope, ctx: ServiceContext) -> None:
    """Give a reservation's amount back; for an unknown id leave a tombstone so a late ReserveCredit is refused."""

    async def decide(uow: UnitOfWork) -> c.CreditReleased | None:
        repo = CreditRepository(uow.session, env)
        res = await repo.get_reservation(cmd.reservation_id, for_update=True)
        if res is None:
            now = _now()
            if await repo.add_tombstone(cmd.reservation_id, cmd.bill_to_id, now):
                released = c.CreditReleased(reservation_id=cmd.reservation_id, bill_to_id=cmd.bill_to_id, amount=0)
                _emit(uow, cmd.bill_to_id, released)
                return released if env.reply_to else None
            res = await repo.get_reservation(cmd.reservation_id, for_update=True)  # a reserve won the race
            if res is None:
                raise Rejection("parameter_invalid", "reservation id already in use", "reservation_id")
        released = c.CreditReleased(reservation_id=res.reservation_id, bill_to_id=res.bill_to_id, amount=res.amount)
        if res.status == "reserved":
            res.status, res.released_at = "released", _now()
            _emit(uow, res.bill_to_id, released)
        # compensation from the saga may not want an answer
        return released if env.reply_to else None

    await answer_command(ctx, env, decide)


def account_view(customer: Account, bill_to: Account | None, exposure: int) -> c.CreditAccountView:
    limit = domain.effective_limit(bill_to.credit_limit if bill_to else None)
    return c.CreditAccountView(
        customer_id=customer.customer_id, bill_to_id=customer.bill_to_id, terms=customer.terms, limit=limit,
        exposure=exposure, available=domain.available_credit(limit, exposure),
        currency=bill_to.currency if bill_to else customer.currency,
    )


async def get_credit_account(cmd: c.GetCreditAccount, env: Envelope, ctx: ServiceContext) -> None:
    async with ctx.uow(env) as uow:
        repo = CreditRepository(uow.session, env)
        customer = await repo.get_account(cmd.customer_id)
        if customer is None:
            reply = Rejection("resource_missing", f"no credit account for customer {cmd.customer_id}", "customer_id").failure()
        else:
            bill_to = customer if customer.bill_to_id == customer.customer_id else await repo.get_account(customer.bill_to_id)
            reply = account_view(customer, bill_to, await repo.exposure(customer.bill_to_id))
    await ctx.reply_now(env, reply)


async def upsert_customer(rec: CustomerUpsert, env: Envelope, ctx: ServiceContext) -> None:
    async with ctx.uow(env) as uow:
        await uow.claim()
        await CreditRepository(uow.session, env).upsert_customer(
            customer_id=rec.customer_id, bill_to_id=rec.bill_to_id or rec.customer_id, terms=rec.terms
        )
        await uow.commit()


async def upsert_credit_limit(rec: CreditLimitUpsert, env: Envelope, ctx: ServiceContext) -> None:
    async with ctx.uow(env) as uow:
        await uow.claim()
        await CreditRepository(uow.session, env).upsert_credit_limit(
            customer_id=rec.customer_id, limit=rec.limit, currency=rec.currency
        )
        await uow.commit()
