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
