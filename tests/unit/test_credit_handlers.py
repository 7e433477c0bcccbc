"""Credit's handlers over an in-memory unit of work: what each answers, stores and emits — no broker, no database."""

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from libs.contracts import credit as c
from libs.contracts.base import Rejection
from libs.contracts.credit import ReservationStatus
from libs.contracts.envelope import Envelope
from libs.contracts.erp import CreditLimitUpsert, CustomerUpsert
from libs.runtime.database import Scope
from services.credit import handlers
from services.credit.domain import CreditAccount, Reservation
from services.credit.unit_of_work import CreditUnitOfWork

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class MemoryAccounts:
    def __init__(self):
        self.rows: dict[str, CreditAccount] = {}
        self.locked: list[str] = []

    async def lock_bill_to(self, customer_id, fallback):
        customer = self.rows.get(customer_id)
        target = customer.bill_to_id if customer is not None and customer.customer_known else fallback
        self.locked.append(target)
        return target, self.rows.get(target)

    async def get(self, customer_id):
        return self.rows.get(customer_id)

    async def view(self, customer_id):
        customer = self.rows.get(customer_id)
        if customer is None:
            return None
        return customer, self.rows.get(customer.bill_to_id), self.exposure_of(customer.bill_to_id)

    async def upsert_customer(self, customer_id, bill_to_id, terms):
        old = self.rows.get(customer_id) or CreditAccount.unknown(customer_id, "JMD")
        self.rows[customer_id] = replace(old, bill_to_id=bill_to_id, terms=terms, customer_known=True)

    async def upsert_credit_limit(self, customer_id, limit, currency):
        old = self.rows.get(customer_id) or CreditAccount.unknown(customer_id, currency)
        self.rows[customer_id] = replace(old, credit_limit=limit, currency=currency)

    exposure_of = None  # set by the unit of work below


class MemoryReservations:
    def __init__(self):
        self.rows: dict[str, Reservation] = {}

    def exposure_of(self, bill_to_id):
        return sum(r.amount for r in self.rows.values() if r.bill_to_id == bill_to_id and r.holds_credit)

    async def exposure_and(self, bill_to_id, reservation_id):
        return self.exposure_of(bill_to_id), self.rows.get(reservation_id)

    async def exposure(self, bill_to_id):
        return self.exposure_of(bill_to_id)

    async def add(self, r, at):
        if r.reservation_id in self.rows:
            return False
        self.rows[r.reservation_id] = r
        return True

    async def get_for_update(self, reservation_id):
        return self.rows.get(reservation_id)

    async def release(self, reservation_id, at):
        self.rows[reservation_id] = replace(self.rows[reservation_id], status=ReservationStatus.RELEASED)


class World:
    def __init__(self):
        self.accounts, self.reservations = MemoryAccounts(), MemoryReservations()
        self.accounts.exposure_of = self.reservations.exposure_of

    def uow(self, payload) -> CreditUnitOfWork:
        env = Envelope(tenant_id="ten_1", livemode=False, payload=payload, reply_to="orders.replies.v1",
                       correlation_id="chk_1:1")
        uow = CreditUnitOfWork(None, Scope("ten_1", False), env, now=NOW)
        uow.accounts, uow.reservations = self.accounts, self.reservations
        return uow

    async def run(self, handler, payload):
        uow = self.uow(payload)
        reply = await handler(payload, uow)
        return reply, [(topic, key, env.payload) for topic, key, env in uow.outbox.envelopes]


def reserve(rid="res_1", amount=10_000, customer="cus_1", bill_to="cus_1", currency="JMD") -> c.ReserveCredit:
    return c.ReserveCredit(reservation_id=rid, checkout_id="chk_1", customer_id=customer, bill_to_id=bill_to,
                           amount=amount, currency=currency)


@pytest.fixture
async def world() -> World:
    w = World()
    await w.run(handlers.upsert_customer, CustomerUpsert(customer_id="cus_1", name="One", terms="net_30"))
    await w.run(handlers.upsert_credit_limit, CreditLimitUpsert(customer_id="cus_1", limit=50_000))
    return w


async def test_a_reservation_within_the_limit_is_held_answered_and_announced(world):
    reply, emitted = await world.run(handlers.reserve_credit, reserve(amount=50_000))
    assert reply == c.CreditReserved(reservation_id="res_1", bill_to_id="cus_1", amount=50_000, limit=50_000,
                                     exposure=50_000, available=0, currency="JMD")
    assert emitted == [("credit.events.v1", "cus_1", reply)]
    assert world.reservations.rows["res_1"].holds_credit


async def test_one_cent_over_is_rejected_with_the_shortfall_and_nothing_held(world):
    await world.run(handlers.reserve_credit, reserve("res_a", 30_000))
    reply, emitted = await world.run(handlers.reserve_credit, reserve("res_b", 20_001))
    assert reply == c.CreditRejected(reservation_id="res_b", bill_to_id="cus_1", limit=50_000, exposure=30_000,
                                     available=20_000, order_total=20_001, shortfall=1, currency="JMD")
    assert emitted == [] and "res_b" not in world.reservations.rows


async def test_the_same_reservation_again_is_answered_again_without_holding_twice(world):
    first, _ = await world.run(handlers.reserve_credit, reserve(amount=20_000))
    again, emitted = await world.run(handlers.reserve_credit, reserve(amount=20_000))
    assert again == first and emitted == []
    assert world.reservations.exposure_of("cus_1") == 20_000


async def test_the_same_id_with_another_amount_or_after_release_is_refused(world):
    await world.run(handlers.reserve_credit, reserve(amount=20_000))
    with pytest.raises(Rejection) as other:
        await world.run(handlers.reserve_credit, reserve(amount=20_001))
    assert other.value.code == "parameter_invalid"
    await world.run(handlers.release_credit, c.ReleaseCredit(reservation_id="res_1", bill_to_id="cus_1"))
    with pytest.raises(Rejection) as released:
        await world.run(handlers.reserve_credit, reserve(amount=20_000))
    assert released.value.code == "reservation_released"


async def test_a_buyer_is_charged_to_its_bill_to_account_whatever_the_command_says(world):
    await world.run(handlers.upsert_customer, CustomerUpsert(customer_id="cus_buyer", name="Buyer", terms="net_30",
                                                             bill_to_id="cus_1"))
    reply, _ = await world.run(handlers.reserve_credit, reserve(customer="cus_buyer", bill_to="cus_buyer"))
    assert reply.bill_to_id == "cus_1" and world.accounts.locked[-1] == "cus_1"


async def test_no_limit_record_means_no_credit_and_another_currency_is_refused(world):
    reply, _ = await world.run(handlers.reserve_credit, reserve(customer="cus_new", bill_to="cus_new", amount=1))
    assert isinstance(reply, c.CreditRejected) and reply.shortfall == 1 and reply.limit == 0
    with pytest.raises(Rejection) as currency:
        await world.run(handlers.reserve_credit, reserve(currency="USD"))
    assert (currency.value.code, currency.value.param) == ("parameter_invalid", "currency")


async def test_release_gives_the_amount_back_once(world):
    await world.run(handlers.reserve_credit, reserve(amount=20_000))
    first, emitted = await world.run(handlers.release_credit, c.ReleaseCredit(reservation_id="res_1", bill_to_id="cus_1"))
    assert first == c.CreditReleased(reservation_id="res_1", bill_to_id="cus_1", amount=20_000)
    assert emitted == [("credit.events.v1", "cus_1", first)]
    again, emitted = await world.run(handlers.release_credit, c.ReleaseCredit(reservation_id="res_1", bill_to_id="cus_1"))
    assert again == first and emitted == []
    assert world.reservations.exposure_of("cus_1") == 0


async def test_a_release_before_its_reserve_leaves_a_tombstone_that_refuses_the_late_reserve(world):
    reply, _ = await world.run(handlers.release_credit, c.ReleaseCredit(reservation_id="res_late", bill_to_id="cus_1"))
    assert reply.amount == 0
    with pytest.raises(Rejection) as late:
        await world.run(handlers.reserve_credit, reserve("res_late"))
    assert late.value.code == "reservation_released"
    assert world.reservations.exposure_of("cus_1") == 0


async def test_the_account_view_shows_the_bill_to_accounts_limit_and_exposure(world):
    await world.run(handlers.reserve_credit, reserve(amount=12_000))
    view, emitted = await world.run(handlers.get_credit_account, c.GetCreditAccount(customer_id="cus_1"))
    assert view == c.CreditAccountView(customer_id="cus_1", bill_to_id="cus_1", terms="net_30", limit=50_000,
                                       exposure=12_000, available=38_000, currency="JMD")
    assert emitted == []
    with pytest.raises(Rejection) as missing:
        await world.run(handlers.get_credit_account, c.GetCreditAccount(customer_id="cus_nobody"))
    assert missing.value.code == "resource_missing"
