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
from services.credit.domain import CreditAccount, Exposure, InvoiceCopy, Reservation, oldest_first, unapplied_credit
from services.credit.unit_of_work import CreditUnitOfWork

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class MemoryAccounts:
    def __init__(self, world):
        self.world = world
        self.rows: dict[str, CreditAccount] = {}
        self.versions: dict[str, int] = {}
        self.locked: list[str] = []

    async def lock_bill_to(self, customer_id, fallback):
        customer = self.rows.get(customer_id)
        target = customer.bill_to_id if customer is not None and customer.customer_known else fallback
        self.locked.append(target)
        return target, self.rows.get(target)

    async def lock_for_reservation(self, reservation_id, fallback):
        res = self.world.reservations.rows.get(reservation_id)
        target = res.bill_to_id if res is not None else fallback
        self.locked.append(target)
        return target

    def _ensure(self, bill_to_id, currency):
        return self.rows.setdefault(bill_to_id, CreditAccount.unknown(bill_to_id, currency))

    async def lock(self, bill_to_id, currency):
        self.locked.append(bill_to_id)
        return self._ensure(bill_to_id, currency)

    def bump(self, bill_to_id, currency):
        account = self._ensure(bill_to_id, currency)
        self.versions[bill_to_id] = self.versions.get(bill_to_id, 0) + 1
        return self.versions[bill_to_id], account

    async def touch(self, bill_to_id, currency):
        version, account = self.bump(bill_to_id, currency)
        return version, account, self.world.exposure_of(bill_to_id)

    async def get(self, customer_id):
        return self.rows.get(customer_id)

    async def view(self, customer_id):
        customer = self.rows.get(customer_id)
        if customer is None:
            return None
        return customer, self.rows.get(customer.bill_to_id), self.world.exposure_of(customer.bill_to_id)

    async def upsert_customer(self, customer_id, bill_to_id, terms):
        old = self.rows.get(customer_id) or CreditAccount.unknown(customer_id, "JMD")
        self.rows[customer_id] = replace(old, bill_to_id=bill_to_id, terms=terms, customer_known=True)

    async def upsert_credit_limit(self, customer_id, limit, currency):
        old = self.rows.get(customer_id) or CreditAccount.unknown(customer_id, currency)
        self.rows[customer_id] = replace(old, credit_limit=limit, currency=currency)


class MemoryReservations:
    def __init__(self, world):
        self.world = world
        self.rows: dict[str, Reservation] = {}

    async def exposure_and(self, bill_to_id, reservation_id):
        return self.world.exposure_of(bill_to_id), self.rows.get(reservation_id)

    async def exposure(self, bill_to_id):
        return self.world.exposure_of(bill_to_id)

    async def add(self, r, at):
        if r.reservation_id in self.rows:
            return False
        self.rows[r.reservation_id] = r
        return True

    async def reserve(self, r, at):
        if not await self.add(r, at):
            return None
        return self.world.accounts.bump(r.bill_to_id, r.currency)[0]

    async def get(self, reservation_id):
        return self.rows.get(reservation_id)

    get_for_update = get

    async def release(self, reservation_id, at):
        self.rows[reservation_id] = replace(self.rows[reservation_id], status=ReservationStatus.RELEASED)

    async def set_captured(self, reservation_id, captured):
        self.rows[reservation_id] = replace(self.rows[reservation_id], captured=captured)


class MemoryInvoices:
    def __init__(self):
        self.rows: dict[str, InvoiceCopy] = {}

    async def get(self, invoice_id):
        return self.rows.get(invoice_id)

    async def put(self, inv):
        self.rows[inv.invoice_id] = inv

    async def open_for(self, bill_to_id):
        return sorted((inv for inv in self.rows.values() if inv.bill_to_id == bill_to_id and inv.status == "open"),
                      key=oldest_first)


class MemoryLedger:
    def __init__(self):
        self.rows: dict[tuple[str, str], tuple[str, int]] = {}

    async def add(self, payment_id, invoice_id, bill_to_id, amount, at):
        if (payment_id, invoice_id) in self.rows:
            return False
        self.rows[(payment_id, invoice_id)] = (bill_to_id, amount)
        return True


class World:
    def __init__(self):
        self.accounts, self.reservations = MemoryAccounts(self), MemoryReservations(self)
        self.invoices, self.ledger = MemoryInvoices(), MemoryLedger()
        self.sent: list[Envelope] = []  # every event emitted, in order

    def exposure_of(self, bill_to_id) -> Exposure:
        return Exposure(
            held=sum(r.held for r in self.reservations.rows.values() if r.bill_to_id == bill_to_id),
            invoiced=sum(inv.owed for inv in self.invoices.rows.values() if inv.bill_to_id == bill_to_id),
            unapplied=unapplied_credit([(p, amount) for (p, _), (b, amount) in self.ledger.rows.items()
                                        if b == bill_to_id]))

    def uow(self, payload, version=None) -> CreditUnitOfWork:
        env = Envelope(tenant_id="ten_1", livemode=False, payload=payload, reply_to="orders.replies.v1",
                       correlation_id="chk_1:1", aggregate_version=version)
        uow = CreditUnitOfWork(None, Scope("ten_1", False), env, now=NOW)
        uow.accounts, uow.reservations = self.accounts, self.reservations
        uow.invoices, uow.unapplied = self.invoices, self.ledger
        return uow

    async def run(self, handler, payload, version=None):
        uow = self.uow(payload, version)
        reply = await handler(payload, uow)
        self.sent += [env for _, _, env in uow.outbox.envelopes]
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
    assert world.exposure_of("cus_1").total == 20_000


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
    assert first == c.CreditReleased(reservation_id="res_1", bill_to_id="cus_1", amount=20_000, exposure=0)
    assert emitted == [("credit.events.v1", "cus_1", first)]
    again, emitted = await world.run(handlers.release_credit, c.ReleaseCredit(reservation_id="res_1", bill_to_id="cus_1"))
    assert again == first and emitted == []
    assert world.exposure_of("cus_1").total == 0


async def test_a_release_before_its_reserve_leaves_a_tombstone_that_refuses_the_late_reserve(world):
    reply, _ = await world.run(handlers.release_credit, c.ReleaseCredit(reservation_id="res_late", bill_to_id="cus_1"))
    assert reply.amount == 0
    with pytest.raises(Rejection) as late:
        await world.run(handlers.reserve_credit, reserve("res_late"))
    assert late.value.code == "reservation_released"
    assert world.exposure_of("cus_1").total == 0


async def test_the_account_view_shows_the_bill_to_accounts_limit_and_exposure(world):
    await world.run(handlers.reserve_credit, reserve(amount=12_000))
    view, emitted = await world.run(handlers.get_credit_account, c.GetCreditAccount(customer_id="cus_1"))
    assert view == c.CreditAccountView(customer_id="cus_1", bill_to_id="cus_1", terms="net_30", limit=50_000,
                                       exposure=12_000, available=38_000, currency="JMD")
    assert emitted == []
    with pytest.raises(Rejection) as missing:
        await world.run(handlers.get_credit_account, c.GetCreditAccount(customer_id="cus_nobody"))
    assert missing.value.code == "resource_missing"


# ---- exposure that lives: invoices.events.v1 (issue 14; docs/credit.md) ---------------------------------------

from datetime import timedelta  # noqa: E402

from libs.contracts import invoices as i  # noqa: E402
from libs.contracts.base import RecordRefused  # noqa: E402
from libs.contracts.orders import OpenInvoice  # noqa: E402


def invoice(iid="inv_a", total=12_345, paid=0, status="open", due_at=None, bill_to="cus_1", number="ORD-INV-000001",
            issued_at=NOW, overdue=False) -> i.InvoiceView:
    return i.InvoiceView(invoice_id=iid, invoice_number=number, order_id="ord_1", customer_id=bill_to,
                         bill_to_id=bill_to, fulfilment_id="ful_1", status=status, terms="net_30", currency="JMD",
                         subtotal=total, tax=0, total=total, amount_paid=paid,
                         amount_due=0 if status != "open" else total - paid, overdue=overdue, lines=[],
                         issued_at=issued_at, due_at=due_at)


def issued(iid="inv_a", total=12_345, rid="res_1", **kw) -> i.InvoiceIssued:
    return i.InvoiceIssued(invoice=invoice(iid, total, **kw), reservation_id=rid)


def applied(iid="inv_a", total=12_345, amount=12_345, paid=None, pid="pay_1", source="payment", **kw):
    paid = amount if paid is None else paid
    return i.PaymentApplied(payment_id=pid, invoice_id=iid, amount=amount, bill_to_id="cus_1", source=source,
                            invoice=invoice(iid, total, paid, "paid" if paid == total else "open", **kw))


def changed(world, cause, exposure, unapplied=0, invoice_id=None, payment_id=None, limit=50_000):
    return c.CreditExposureChanged(bill_to_id="cus_1", cause=cause, limit=limit, exposure=exposure,
                                   available=limit - exposure, unapplied=unapplied, currency="JMD",
                                   invoice_id=invoice_id, payment_id=payment_id)


def versions(world, bill_to="cus_1") -> list[int]:
    return [env.aggregate_version for env in world.sent if env.aggregate_id == bill_to]


async def test_an_issued_invoice_captures_its_share_of_the_reservation_once(world):
    await world.run(handlers.reserve_credit, reserve(amount=30_000))
    _, emitted = await world.run(handlers.invoice_issued, issued(total=12_345), version=1)
    # the sum is unchanged (12,345 moved from held to invoiced) but it is one event, cause captured
    assert emitted == [("credit.events.v1", "cus_1", changed(world, "captured", 30_000, invoice_id="inv_a"))]
    assert world.reservations.rows["res_1"].captured == 12_345
    assert world.exposure_of("cus_1") == Exposure(held=17_655, invoiced=12_345, unapplied=0)
    _, again = await world.run(handlers.invoice_issued, issued(total=12_345), version=1)
    assert again == [] and world.reservations.rows["res_1"].captured == 12_345
    assert versions(world) == [1, 2]


async def test_invoices_capture_no_more_than_is_held_and_exposure_rises_by_the_rest(world):
    await world.run(handlers.reserve_credit, reserve(amount=10_000))
    await world.run(handlers.invoice_issued, issued("inv_a", 6_000), version=1)
    _, emitted = await world.run(handlers.invoice_issued, issued("inv_b", 5_000, number="ORD-INV-000002"), version=1)
    assert emitted[0][2].exposure == 11_000  # 4,000 captured, 1,000 more than was held
    assert world.reservations.rows["res_1"].captured == 10_000
    assert world.exposure_of("cus_1") == Exposure(held=0, invoiced=11_000)


async def test_a_payment_lowers_exposure_by_exactly_its_amount_and_paid_changes_nothing_more(world):
    await world.run(handlers.reserve_credit, reserve(amount=30_000))
    await world.run(handlers.invoice_issued, issued(total=12_345), version=1)
    _, emitted = await world.run(handlers.payment_applied, applied(amount=2_345), version=2)
    assert emitted == [("credit.events.v1", "cus_1",
                        changed(world, "payment_applied", 27_655, invoice_id="inv_a", payment_id="pay_1"))]
    _, emitted = await world.run(handlers.payment_applied, applied(amount=10_000, paid=12_345, pid="pay_2"), version=3)
    assert emitted[0][2].exposure == 17_655
    # InvoicePaid carries what PaymentApplied already brought: the copy is paid, the exposure did not move
    _, emitted = await world.run(handlers.invoice_paid, i.InvoicePaid(invoice=invoice(paid=12_345, status="paid")),
                                 version=4)
    assert emitted == [] and world.invoices.rows["inv_a"].status == "paid"
    assert versions(world) == [1, 2, 3, 4]


async def test_an_older_version_after_a_newer_one_changes_nothing(world):
    await world.run(handlers.invoice_issued, issued(total=12_345, rid=None), version=1)
    await world.run(handlers.payment_applied, applied(amount=2_345), version=3)
    before = world.invoices.rows["inv_a"]
    _, emitted = await world.run(handlers.invoice_due_date_set,
                                 i.InvoiceDueDateSet(invoice=invoice(due_at=NOW + timedelta(days=1))), version=2)
    assert emitted == [] and world.invoices.rows["inv_a"] == before
    _, emitted = await world.run(handlers.payment_applied, applied(amount=2_345), version=3)  # the same again
    assert emitted == [] and world.invoices.rows["inv_a"] == before


async def test_due_dates_and_overdue_follow_the_copy_without_an_exposure_event(world):
    await world.run(handlers.invoice_issued, issued(total=12_345, rid=None), version=1)
    due = NOW + timedelta(days=3)
    _, emitted = await world.run(handlers.invoice_due_date_set, i.InvoiceDueDateSet(invoice=invoice(due_at=due)),
                                 version=2)
    assert emitted == [] and world.invoices.rows["inv_a"].due_at == due
    _, emitted = await world.run(handlers.invoice_overdue,
                                 i.InvoiceOverdue(invoice=invoice(due_at=due, overdue=True)), version=3)
    assert emitted == [] and world.invoices.rows["inv_a"].overdue and world.invoices.rows["inv_a"].version == 3


async def test_a_cancel_voids_the_invoice_and_releases_only_what_is_still_held(world):
    await world.run(handlers.reserve_credit, reserve(amount=30_000))
    await world.run(handlers.invoice_issued, issued(total=12_345), version=1)
    _, emitted = await world.run(handlers.invoice_voided, i.InvoiceVoided(invoice=invoice(status="void")), version=2)
    assert emitted == [("credit.events.v1", "cus_1", changed(world, "invoice_voided", 17_655, invoice_id="inv_a"))]
    released, emitted = await world.run(handlers.release_credit, c.ReleaseCredit(reservation_id="res_1",
                                                                                 bill_to_id="cus_1"))
    assert released == c.CreditReleased(reservation_id="res_1", bill_to_id="cus_1", amount=17_655, exposure=0)
    assert emitted == [("credit.events.v1", "cus_1", released)]
    again, emitted = await world.run(handlers.release_credit, c.ReleaseCredit(reservation_id="res_1",
                                                                              bill_to_id="cus_1"))
    assert again == released and emitted == []
    assert versions(world) == [1, 2, 3, 4]


async def test_releasing_a_reservation_its_invoices_took_whole_gives_back_nothing_and_announces_nothing(world):
    await world.run(handlers.reserve_credit, reserve(amount=12_345))
    await world.run(handlers.invoice_issued, issued(total=12_345), version=1)
    released, emitted = await world.run(handlers.release_credit, c.ReleaseCredit(reservation_id="res_1",
                                                                                 bill_to_id="cus_1"))
    assert released == c.CreditReleased(reservation_id="res_1", bill_to_id="cus_1", amount=0, exposure=12_345)
    assert emitted == [] and world.exposure_of("cus_1") == Exposure(invoiced=12_345)


async def test_an_overpayment_becomes_unapplied_credit_used_by_the_next_invoice(world):
    await world.run(handlers.invoice_issued, issued("inv_a", 10_000, rid=None), version=1)
    await world.run(handlers.payment_applied, applied("inv_a", 10_000, 10_000), version=2)
    unapplied = i.PaymentUnapplied(payment_id="pay_1", bill_to_id="cus_1", amount=4_000, currency="JMD")
    _, emitted = await world.run(handlers.payment_unapplied, unapplied, version=1)
    assert emitted == [("credit.events.v1", "cus_1",
                        changed(world, "payment_unapplied", 0, unapplied=4_000, payment_id="pay_1"))]
    _, emitted = await world.run(handlers.payment_unapplied, unapplied, version=1)
    assert emitted == []
    # the next invoice is issued and orders applies the credit at once
    await world.run(handlers.invoice_issued, issued("inv_b", 9_000, rid=None, number="ORD-INV-000002"), version=1)
    assert world.exposure_of("cus_1").total == 5_000
    use = applied("inv_b", 9_000, 4_000, pid="pay_1", source="unapplied", number="ORD-INV-000002")
    _, emitted = await world.run(handlers.payment_applied, use, version=2)
    assert emitted == [("credit.events.v1", "cus_1", changed(world, "payment_applied", 5_000, invoice_id="inv_b",
                                                             payment_id="pay_1"))]
    assert world.exposure_of("cus_1") == Exposure(invoiced=5_000, unapplied=0)
    _, emitted = await world.run(handlers.payment_applied, use, version=2)
    assert emitted == [] and world.exposure_of("cus_1").total == 5_000


async def test_a_use_of_credit_that_arrives_before_the_credit_over_counts_until_it_does(world):
    await world.run(handlers.invoice_issued, issued("inv_b", 9_000, rid=None), version=1)
    await world.run(handlers.payment_applied, applied("inv_b", 9_000, 4_000, source="unapplied"), version=2)
    assert world.exposure_of("cus_1") == Exposure(invoiced=5_000, unapplied=0)  # 5,000: never less than true
    await world.run(handlers.payment_unapplied,
                    i.PaymentUnapplied(payment_id="pay_1", bill_to_id="cus_1", amount=6_000, currency="JMD"),
                    version=1)
    assert world.exposure_of("cus_1") == Exposure(invoiced=5_000, unapplied=2_000)


async def test_an_event_for_an_account_with_no_row_creates_it(world):
    unapplied = i.PaymentUnapplied(payment_id="pay_9", bill_to_id="cus_new", amount=700, currency="JMD")
    _, emitted = await world.run(handlers.payment_unapplied, unapplied, version=1)
    assert world.accounts.rows["cus_new"] == CreditAccount.unknown("cus_new", "JMD")
    assert not world.accounts.rows["cus_new"].customer_known
    assert [(e.aggregate_id, e.aggregate_version) for e in world.sent] == [("cus_new", 1)]
    assert emitted[0][2].limit == 0 and emitted[0][2].unapplied == 700


async def test_an_invoice_event_without_a_version_is_refused(world):
    with pytest.raises(RecordRefused):
        await world.run(handlers.invoice_issued, issued(), version=None)


async def test_a_refusal_names_the_oldest_invoices_whose_payment_covers_the_shortfall(world):
    d = NOW + timedelta(days=5)
    await world.run(handlers.invoice_issued, issued("inv_a", 20_000, rid=None, due_at=d + timedelta(days=5)), version=1)
    await world.run(handlers.invoice_issued, issued("inv_b", 15_000, rid=None, due_at=d, number="ORD-INV-000002"),
                    version=1)
    await world.run(handlers.invoice_issued, issued("inv_c", 10_000, rid=None, number="ORD-INV-000003"), version=1)
    # exposure 45,000 of 50,000: an order of 20,000 is 15,000 short, which inv_b alone covers
    rejected, _ = await world.run(handlers.reserve_credit, reserve("res_2", 20_000))
    assert (rejected.exposure, rejected.available, rejected.shortfall) == (45_000, 5_000, 15_000)
    assert rejected.open_invoices_to_pay == [OpenInvoice(invoice_id="inv_b", invoice_number="ORD-INV-000002",
                                                         amount_due=15_000, due_at=d)]
    rejected, _ = await world.run(handlers.reserve_credit, reserve("res_3", 20_001))
    assert [inv.invoice_id for inv in rejected.open_invoices_to_pay] == ["inv_b", "inv_a"]
    rejected, _ = await world.run(handlers.reserve_credit, reserve("res_4", 1_000_000))
    assert [inv.invoice_id for inv in rejected.open_invoices_to_pay] == ["inv_b", "inv_a", "inv_c"]
    # paying inv_b frees exactly enough: the same order now fits
    await world.run(handlers.payment_applied, applied("inv_b", 15_000, 15_000, due_at=d, number="ORD-INV-000002"),
                    version=2)
    reserved, _ = await world.run(handlers.reserve_credit, reserve("res_5", 20_000))
    assert isinstance(reserved, c.CreditReserved) and reserved.exposure == 50_000 and reserved.available == 0


async def test_the_account_view_shows_unapplied_credit_and_open_invoices_oldest_due_first(world):
    await world.run(handlers.upsert_customer, CustomerUpsert(customer_id="cus_buyer", name="Buyer", terms="net_30",
                                                             bill_to_id="cus_1"))
    late, soon = NOW + timedelta(days=30), NOW + timedelta(days=2)
    await world.run(handlers.invoice_issued, issued("inv_a", 8_000, rid=None, due_at=late), version=1)
    await world.run(handlers.invoice_issued, issued("inv_b", 3_000, rid=None, due_at=soon, number="ORD-INV-000002",
                                                    overdue=False), version=1)
    await world.run(handlers.payment_unapplied,
                    i.PaymentUnapplied(payment_id="pay_1", bill_to_id="cus_1", amount=1_000, currency="JMD"), version=1)
    view, _ = await world.run(handlers.get_credit_account, c.GetCreditAccount(customer_id="cus_buyer"))
    assert (view.bill_to_id, view.limit, view.exposure, view.available, view.unapplied) == (
        "cus_1", 50_000, 10_000, 40_000, 1_000)
    assert view.open_invoices == [
        OpenInvoice(invoice_id="inv_b", invoice_number="ORD-INV-000002", amount_due=3_000, due_at=soon),
        OpenInvoice(invoice_id="inv_a", invoice_number="ORD-INV-000001", amount_due=8_000, due_at=late)]


async def test_two_buyers_sharing_a_parent_one_pays_the_others_available_rises(world):
    for buyer in ("cus_b1", "cus_b2"):
        await world.run(handlers.upsert_customer, CustomerUpsert(customer_id=buyer, name=buyer, terms="net_30",
                                                                 bill_to_id="cus_1"))
    await world.run(handlers.reserve_credit, reserve("res_1", 20_000, customer="cus_b1", bill_to="cus_1"))
    await world.run(handlers.invoice_issued, issued("inv_a", 20_000), version=1)
    before, _ = await world.run(handlers.get_credit_account, c.GetCreditAccount(customer_id="cus_b2"))
    await world.run(handlers.payment_applied, applied("inv_a", 20_000, 20_000), version=2)
    after, _ = await world.run(handlers.get_credit_account, c.GetCreditAccount(customer_id="cus_b2"))
    assert (before.available, after.available) == (30_000, 50_000)


async def test_every_exposure_change_is_one_event_with_the_next_account_version(world):
    await world.run(handlers.reserve_credit, reserve("res_1", 30_000))  # 1 reserved
    await world.run(handlers.reserve_credit, reserve("res_1", 30_000))  # repeat: nothing
    await world.run(handlers.invoice_issued, issued("inv_a", 10_000), version=1)  # 2 captured
    await world.run(handlers.invoice_due_date_set, i.InvoiceDueDateSet(invoice=invoice("inv_a", 10_000, due_at=NOW)),
                    version=2)  # no exposure change
    await world.run(handlers.payment_applied, applied("inv_a", 10_000, 10_000, due_at=NOW), version=3)  # 3 paid
    await world.run(handlers.release_credit, c.ReleaseCredit(reservation_id="res_1", bill_to_id="cus_1"))  # 4
    assert [(type(e.payload).__name__, e.aggregate_version) for e in world.sent] == [
        ("CreditReserved", 1), ("CreditExposureChanged", 2), ("CreditExposureChanged", 3), ("CreditReleased", 4)]
    assert all(e.aggregate_id == "cus_1" for e in world.sent)
    assert world.accounts.versions["cus_1"] == 4 and world.exposure_of("cus_1").total == 0


async def test_a_capture_for_a_customer_who_moved_to_another_bill_to_moves_exposure_between_the_two(world):
    await world.run(handlers.reserve_credit, reserve("res_1", 30_000))  # held on cus_1
    await world.run(handlers.upsert_customer, CustomerUpsert(customer_id="cus_1", name="One", terms="net_30",
                                                             bill_to_id="cus_parent"))
    _, emitted = await world.run(handlers.invoice_issued, issued("inv_a", 12_000, bill_to="cus_parent"), version=1)
    assert [(key, evt.cause, evt.exposure) for _, key, evt in emitted] == [("cus_parent", "captured", 12_000),
                                                                          ("cus_1", "captured", 18_000)]
    assert world.accounts.locked[-2:] == ["cus_parent", "cus_1"]
    assert versions(world, "cus_parent") == [1] and versions(world, "cus_1") == [1, 2]
