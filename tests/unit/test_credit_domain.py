"""Credit decisions on a bill-to account: exact integers, no I/O."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.credit.domain import Rejected, Reserved, available_credit, decide_reservation, effective_limit


def test_within_limit_is_reserved():
    assert decide_reservation(limit=50_000, exposure=20_000, amount=10_000) == Reserved(
        limit=50_000, exposure=30_000, available=20_000
    )


def test_exactly_at_limit_is_reserved():
    assert decide_reservation(limit=50_000, exposure=40_000, amount=10_000) == Reserved(
        limit=50_000, exposure=50_000, available=0
    )


def test_one_cent_over_is_rejected_with_shortfall_one():
    assert decide_reservation(limit=50_000, exposure=40_000, amount=10_001) == Rejected(
        limit=50_000, exposure=40_000, available=10_000, shortfall=1
    )


def test_zero_limit_rejects_the_whole_amount():
    assert decide_reservation(limit=0, exposure=0, amount=12_345) == Rejected(
        limit=0, exposure=0, available=0, shortfall=12_345
    )


def test_no_limit_record_means_zero_limit():
    assert effective_limit(None) == 0
    assert effective_limit(75_000) == 75_000
    assert decide_reservation(effective_limit(None), 0, 1) == Rejected(limit=0, exposure=0, available=0, shortfall=1)


def test_lowered_limit_shows_negative_available():
    # the limit was cut to 30,000 while 45,000 was already reserved
    assert available_credit(30_000, 45_000) == -15_000
    assert decide_reservation(limit=30_000, exposure=45_000, amount=5_000) == Rejected(
        limit=30_000, exposure=45_000, available=-15_000, shortfall=20_000
    )


def test_zero_amount_within_limit_is_reserved():
    assert decide_reservation(limit=100, exposure=100, amount=0) == Reserved(limit=100, exposure=100, available=0)


@pytest.mark.parametrize("limit, exposure, amount", [(-1, 0, 0), (0, -1, 0), (0, 0, -1)])
def test_negative_inputs_are_a_bug(limit, exposure, amount):
    with pytest.raises(ValueError):
        decide_reservation(limit, exposure, amount)


cents = st.integers(min_value=0, max_value=10**12)


@given(limit=cents, exposure=cents, amount=cents)
def test_a_reservation_never_takes_exposure_over_the_limit(limit, exposure, amount):
    d = decide_reservation(limit, exposure, amount)
    if isinstance(d, Reserved):
        assert d.exposure == exposure + amount <= limit and d.available == limit - d.exposure
    else:
        assert d.shortfall == exposure + amount - limit > 0 and d.exposure == exposure


# ---- exposure that lives (issue 14): held + invoiced − unapplied, floored at 0 ---------------------------------

from datetime import UTC, datetime  # noqa: E402

from libs.contracts.credit import ReservationStatus  # noqa: E402
from services.credit.domain import (Exposure, InvoiceCopy, Reservation, decide, issue, to_pay,  # noqa: E402
                                    unapplied_credit)


def test_exposure_is_held_plus_invoiced_less_unapplied_never_below_zero():
    assert Exposure(held=17_655, invoiced=12_345, unapplied=5_000).total == 25_000
    assert Exposure(held=1_000, invoiced=0, unapplied=2_500).total == 0
    with pytest.raises(ValueError):
        Exposure(held=-1)


def test_unapplied_credit_lets_an_order_through_that_held_credit_alone_would_not():
    # limit 10,000; 8,000 invoiced; 3,000 overpaid: exposure 5,000, so 5,000 more fits exactly, 5,001 does not
    before = Exposure(held=0, invoiced=8_000, unapplied=3_000)
    assert decide(10_000, before, 5_000) == Reserved(limit=10_000, exposure=10_000, available=0)
    assert decide(10_000, before, 5_001) == Rejected(limit=10_000, exposure=5_000, available=5_000, shortfall=1)
    # more unapplied credit than everything owed: the order is free up to the excess, even with no limit
    assert decide(0, Exposure(unapplied=4_000), 4_000) == Reserved(limit=0, exposure=0, available=0)
    assert decide(0, Exposure(unapplied=4_000), 4_001) == Rejected(limit=0, exposure=0, available=0, shortfall=1)


def _res(amount=30_000, captured=0, status=ReservationStatus.RESERVED) -> Reservation:
    return Reservation("res_1", "cus_1", amount, status, "JMD", "cus_1", "chk_1", captured)


def test_a_capture_takes_at_most_what_is_still_held():
    after, taken = _res().capture(12_345)
    assert (taken, after.captured, after.held) == (12_345, 12_345, 17_655)
    last, taken = after.capture(20_000)  # the last invoice is larger than what is left (rounding, price change)
    assert (taken, last.captured, last.held) == (17_655, 30_000, 0)
    released, taken = _res(status=ReservationStatus.RELEASED).capture(5_000)
    assert (taken, released.captured, released.held) == (0, 0, 0)


D1, D5, D10 = (datetime(2026, 12, d, tzinfo=UTC) for d in (1, 5, 10))


def _inv(invoice_id="inv_a", amount_due=12_345, version=1, status="open", due_at=None, issued_at=D1,
         reservation_id=None, captured=None) -> InvoiceCopy:
    return InvoiceCopy(invoice_id, "cus_1", status, 12_345, amount_due, issued_at, version, None, due_at, False,
                       reservation_id, captured)


def test_a_copy_follows_only_newer_versions_and_keeps_its_capture():
    current = _inv(reservation_id="res_1", captured=12_345)
    paid = current.follow(_inv(amount_due=0, version=2, status="paid"))
    assert (paid.status, paid.owed, paid.version, paid.reservation_id, paid.captured) == ("paid", 0, 2, "res_1",
                                                                                           12_345)
    assert paid.follow(_inv(amount_due=12_345, version=2)) is None  # a repeat
    assert paid.follow(_inv(amount_due=12_345, version=1)) is None  # older
    assert _inv(status="void", amount_due=0).owed == 0


def test_an_issued_invoice_captures_once():
    first = issue(None, _inv(reservation_id="res_1"), _res())
    assert (first.captured, first.copy.captured, first.reservation.held) == (12_345, 12_345, 17_655)
    again = issue(first.copy, _inv(reservation_id="res_1"), first.reservation)
    assert again == issue(first.copy, _inv(reservation_id="res_1"), None) and again.copy is None
    # no reservation known (none sent, or credit never held one): the copy alone, capture 0
    alone = issue(None, _inv(), None)
    assert (alone.captured, alone.copy.captured, alone.reservation) == (0, 0, None)


def test_an_issue_after_a_newer_event_of_its_invoice_keeps_the_newer_copy_and_still_captures():
    newer = _inv(amount_due=2_345, version=2)  # PaymentApplied arrived first and made the copy
    late = issue(newer, _inv(reservation_id="res_1"), _res())
    assert (late.copy.amount_due, late.copy.version, late.copy.captured, late.captured) == (2_345, 2, 12_345, 12_345)


def test_the_remedy_is_the_oldest_first_run_that_covers_the_shortfall():
    a = _inv("inv_a", 20_000, due_at=D10)
    b = _inv("inv_b", 15_000, due_at=D5)
    cod = _inv("inv_c", 10_000, due_at=None, issued_at=D1)  # cod, not delivered: no due date, last
    invoices = [a, cod, b]
    assert to_pay(invoices, 15_000) == [b]
    assert to_pay(invoices, 15_001) == [b, a]
    assert to_pay(invoices, 35_000) == [b, a]
    assert to_pay(invoices, 35_001) == [b, a, cod]
    assert to_pay(invoices, 95_000) == [b, a, cod]  # even all of them do not cover it: all
    assert to_pay(invoices, 0) == []


def test_unapplied_credit_counts_each_payment_never_below_zero():
    assert unapplied_credit([("pay_1", 5_000), ("pay_1", -2_000), ("pay_2", 700)]) == 3_700
    # pay_3's use by an invoice arrived before its PaymentUnapplied (another partition): 0, not −1,500
    assert unapplied_credit([("pay_1", 5_000), ("pay_3", -1_500)]) == 5_000
    assert unapplied_credit([]) == 0
