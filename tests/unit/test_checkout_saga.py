"""The pure checkout saga (services/orders/domain.py), without broker or database: every state × every reply in
both arrival orders, duplicates, replies for a stale attempt, replies after the final states, expiry and resume in
every state, and PlaceOrder's idempotency. Each case asserts the exact next state, commands and answer."""

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from libs.contracts import topics
from libs.contracts.base import Failure, Rejection
from libs.contracts.cart import (CartCompleted, CartFrozen, CartLine, CartReleased, CheckoutContinuation, CompleteCart,
                                 FreezeCart, ReleaseCart)
from libs.contracts.credit import CreditRejected, CreditReleased, CreditReserved, ReleaseCredit, ReserveCredit
from libs.contracts.errors import ErrorCode
from libs.contracts.orders import (OpenInvoice, OrderConfirmed, OrderLine, OrderView, OverCreditLimit, PlaceOrder,
                                   StatusTransition)
from libs.contracts.pricing import CheckoutPriced, LinesPriced, PricedLine
from services.orders.domain import (Asker, Checkout, CheckoutSaga, CheckoutState, Customer, Held, Placing, Priced,
                                    Send, Step)

S = CheckoutState
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TIMEOUT = timedelta(seconds=5)
LATER = NOW + timedelta(seconds=1)  # when a reply is handled
CART, CUSTOMER, PARENT, OTHER_PARENT = "cart_1", "cus_buyer", "cus_parent", "cus_hq"
GATEWAY = Asker("gateway.replies.1", "corr_1", "req_1")
CUSTOMER_COPY = Customer(CUSTOMER, PARENT, "net_30")


class Mint:
    """Ids per prefix in order: chk_1, res_1, res_2, ord_1, …"""

    def __init__(self):
        self.counts: Counter = Counter()

    def __call__(self, prefix: str) -> str:
        self.counts[prefix] += 1
        return f"{prefix}_{self.counts[prefix]}"


def saga() -> CheckoutSaga:
    return CheckoutSaga(TIMEOUT, Mint())


FROZEN = (
    CartLine(line_id="cli_1", sku="RICE", order_uom="CASE", order_quantity=2, factor=12, base_uom="EA",
             base_quantity=24),
    CartLine(line_id="cli_2", sku="OIL", order_uom="EA", order_quantity=3, factor=1, base_uom="EA", base_quantity=3),
)
PRICED_LINES = [
    PricedLine(line_id="cli_1", sku="RICE", base_quantity=24, unit_price=1_100, price_source="customer",
               subtotal=26_400, tax_category="standard", tax_rate_bp=1500, tax=3_960, total=30_360),
    PricedLine(line_id="cli_2", sku="OIL", base_quantity=3, unit_price=899, price_source="list", subtotal=2_697,
               tax_category="standard", tax_rate_bp=1500, tax=405, total=3_102),
]
TOTALS = LinesPriced(cart_id=CART, currency="JMD", lines=PRICED_LINES, subtotal=29_097, tax=4_365, total=33_462)


def place_cmd(key: str | None = "key_1") -> PlaceOrder:
    return PlaceOrder(cart_id=CART, customer_id=CUSTOMER, idempotency_key=key, notes="Back door", po_number="PO-1")


# ---- the replies --------------------------------------------------------------------------------------------

def priced(lines=FROZEN, totals=TOTALS) -> CheckoutPriced:
    return CheckoutPriced(cart_id=CART, checkout_id="chk_1", cart_version=4, lines=list(lines), priced=totals)


def reserved(reservation_id="res_1") -> CreditReserved:
    # credit charged another account than orders' copy named: credit is the authority on billing
    return CreditReserved(reservation_id=reservation_id, bill_to_id=OTHER_PARENT, amount=33_462, limit=100_000,
                          exposure=33_462, available=66_538, currency="JMD")


TO_PAY = [OpenInvoice(invoice_id="inv_old", invoice_number="ORD-INV-000001", amount_due=5_000,
                      due_at=NOW - timedelta(days=3), overdue=True)]


def rejected(reservation_id="res_1") -> CreditRejected:
    return CreditRejected(reservation_id=reservation_id, bill_to_id=PARENT, limit=30_000, exposure=1_000,
                          available=29_000, order_total=33_462, shortfall=4_462, currency="JMD",
                          open_invoices_to_pay=TO_PAY)


MISSING = Failure(code="resource_missing", message="no cart cart_1", param="cart_id")
REFUSED = Failure(code="sku_unknown", message="no product RICE", param="sku")
REPLIES = {
    "CheckoutPriced": priced(),
    "CreditReserved": reserved(),
    "CreditRejected": rejected(),
    "Failure(resource_missing)": MISSING,
    "Failure(other)": REFUSED,
    "CartFrozen": CartFrozen(cart_id=CART, checkout_id="chk_1", customer_id=CUSTOMER, version=4, lines=list(FROZEN)),
    "CartReleased": CartReleased(cart_id=CART, checkout_id="chk_1"),
    "CartCompleted": CartCompleted(cart_id=CART, checkout_id="chk_1", order_id="ord_1"),
    "CreditReleased": CreditReleased(reservation_id="res_1", bill_to_id=PARENT, amount=33_462),
}
ACKS = ("CartFrozen", "CartReleased", "CartCompleted", "CreditReleased")


# ---- the states, reached by the saga itself -------------------------------------------------------------------

def placed(s: CheckoutSaga, attempt: int = 1) -> Checkout:
    """A checkout just placed (attempt 1), or placed again after its first attempt expired (attempt 2)."""
    step = s.place(place_cmd(), GATEWAY, Placing(customer=CUSTOMER_COPY), NOW)
    co = step.state
    if attempt == 2:
        expired = s.expire(co, NOW + TIMEOUT + timedelta(seconds=1)).state
        co = s.place(place_cmd(), GATEWAY, Placing(checkout=expired, customer=CUSTOMER_COPY), NOW).state
    return co


def reach(state: CheckoutState, s: CheckoutSaga, attempt: int = 1) -> Checkout:
    co = placed(s, attempt)
    on = lambda co, reply: s.on(co, reply, attempt=attempt, now=NOW).state  # noqa: E731
    res = co.reservation_id
    paths = {
        S.AWAITING: [],
        S.AWAITING_CREDIT: [priced()],
        S.AWAITING_PRICES: [reserved(res)],
        S.CONFIRMED: [priced(), reserved(res)],
        S.REJECTED: [rejected(res)],
        S.FAILED: [REFUSED],
    }
    if state is S.EXPIRED:
        return s.expire(co, NOW + TIMEOUT + timedelta(seconds=1)).state
    for reply in paths[state]:
        co = on(co, reply)
    assert co.state is state
    return co


def test_a_new_checkout_awaits_and_sends_freeze_cart_with_what_the_next_steps_need():
    step = saga().place(place_cmd(), GATEWAY, Placing(customer=CUSTOMER_COPY), NOW)
    assert step == Step(
        Checkout(checkout_id="chk_1", cart_id=CART, customer_id=CUSTOMER, idempotency_key="key_1", notes="Back door",
                 po_number="PO-1", bill_to_id=PARENT, terms="net_30", state=S.AWAITING, attempt=1,
                 reservation_id="res_1", asker=GATEWAY, step_deadline=NOW + TIMEOUT),
        send=(Send(topics.CART_COMMANDS, CART, FreezeCart(
            cart_id=CART, customer_id=CUSTOMER, checkout_id="chk_1",
            then=CheckoutContinuation(reservation_id="res_1", bill_to_id=PARENT)), replies=True),),
    )
    assert step.state.correlation_id == "chk_1:1"


def test_a_customer_whose_record_has_not_arrived_bills_itself_on_cod():
    co = saga().place(place_cmd(None), GATEWAY, Placing(), NOW).state
    assert (co.bill_to_id, co.terms, co.idempotency_key) == (CUSTOMER, "cod", None)
    assert co.state is S.AWAITING


# ---- every state × every reply ------------------------------------------------------------------------------

def expected_order(bill_to_id: str = OTHER_PARENT) -> OrderView:
    return OrderView(
        order_id="ord_1", cart_id=CART, customer_id=CUSTOMER, bill_to_id=bill_to_id, status="confirmed",
        terms="net_30", currency="JMD", subtotal=29_097, tax=4_365, total=33_462, notes="Back door", po_number="PO-1",
        created_at=LATER, reservation_id="res_1",
        status_transitions=[StatusTransition(status="confirmed", at=LATER)], lines=[
            OrderLine(line_id="cli_1", sku="RICE", order_uom="CASE", order_quantity=2, factor=12, base_uom="EA",
                      base_quantity=24, unit_price=1_100, price_source="customer", subtotal=26_400,
                      tax_category="standard", tax_rate_bp=1500, tax=3_960, total=30_360),
            OrderLine(line_id="cli_2", sku="OIL", order_uom="EA", order_quantity=3, factor=1, base_uom="EA",
                      base_quantity=3, unit_price=899, price_source="list", subtotal=2_697, tax_category="standard",
                      tax_rate_bp=1500, tax=405, total=3_102),
        ])


def release_cart(co: Checkout) -> Send:
    return Send(topics.CART_COMMANDS, CART, ReleaseCart(cart_id=CART, checkout_id=co.checkout_id))


def release_credit(co: Checkout) -> Send:
    return Send(topics.CREDIT_COMMANDS, PARENT, ReleaseCredit(reservation_id=co.reservation_id, bill_to_id=PARENT))


def expected_step(outcome: str, co: Checkout, reply) -> Step:
    """What the saga must decide, written out for each outcome."""
    parts = dict(priced=Priced(FROZEN, TOTALS), credit=Held(OTHER_PARENT, 33_462))
    if outcome == "unchanged":
        return Step(co, changed=False)
    if outcome == "holds prices":
        return Step(replace(co, state=S.AWAITING_CREDIT, priced=parts["priced"], step_deadline=LATER + TIMEOUT))
    if outcome == "holds credit":
        return Step(replace(co, state=S.AWAITING_PRICES, credit=parts["credit"], step_deadline=LATER + TIMEOUT))
    if outcome == "confirmed":
        order = expected_order()
        return Step(
            replace(co, state=S.CONFIRMED, order_id="ord_1", result=order, **parts),
            send=(Send(topics.ORDERS_EVENTS, "ord_1", OrderConfirmed(order=order), aggregate_id="ord_1",
                       aggregate_version=1),
                  Send(topics.CART_COMMANDS, CART, CompleteCart(cart_id=CART, checkout_id="chk_1", order_id="ord_1"))),
            answer=order, final=True, order=order)
    if outcome == "over the limit":
        # the remedies: the largest order that fits now, and the invoices credit named to pay
        answer = OverCreditLimit(cart_id=CART, limit=30_000, exposure=1_000, available=29_000, order_total=33_462,
                                 shortfall=4_462, currency="JMD", largest_order_total_that_fits=29_000,
                                 open_invoices_to_pay=TO_PAY)
        return Step(replace(co, state=S.REJECTED, result=answer), send=(release_cart(co),), answer=answer, final=True)
    if outcome == "failed":
        return Step(replace(co, state=S.FAILED, result=reply), send=(release_cart(co), release_credit(co)),
                    answer=reply, final=True)
    if outcome == "deleted":
        return Step(None, send=(release_cart(co), release_credit(co)), answer=reply)
    if outcome == "credit released":
        return Step(co, send=(release_credit(co),), changed=False)
    raise AssertionError(outcome)


# state → reply → outcome; an unlisted reply leaves the state unchanged
TABLE: dict[CheckoutState, dict[str, str]] = {
    S.AWAITING: {"CheckoutPriced": "holds prices", "CreditReserved": "holds credit", "CreditRejected": "over the limit",
                 "Failure(resource_missing)": "deleted", "Failure(other)": "failed"},
    S.AWAITING_CREDIT: {"CreditReserved": "confirmed", "CreditRejected": "over the limit",
                        "Failure(resource_missing)": "failed", "Failure(other)": "failed"},
    S.AWAITING_PRICES: {"CheckoutPriced": "confirmed", "Failure(resource_missing)": "failed",
                        "Failure(other)": "failed"},
    S.CONFIRMED: {},
    S.REJECTED: {},
    S.FAILED: {"CreditReserved": "credit released"},
    S.EXPIRED: {"CreditReserved": "credit released"},
}


@pytest.mark.parametrize("reply_name", REPLIES)
@pytest.mark.parametrize("state", list(S))
def test_every_state_and_every_reply(state, reply_name):
    s = saga()
    co = reach(state, s)
    reply = REPLIES[reply_name]
    outcome = TABLE[state].get(reply_name, "unchanged")
    assert s.on(co, reply, attempt=1, now=LATER) == expected_step(outcome, co, reply)


def test_acknowledgements_are_awaited_in_no_state():
    assert all(ack not in row for row in TABLE.values() for ack in ACKS)


@pytest.mark.parametrize("reply_name", REPLIES)
@pytest.mark.parametrize("state", list(S))
def test_a_reply_for_another_attempt_changes_nothing(state, reply_name):
    """Attempt 2 (placed again after attempt 1 expired) ignores every late reply of attempt 1 — even a
    CreditReserved: attempt 1's expiry released that reservation — and a reply naming an attempt not made."""
    s = saga()
    co = reach(state, s, attempt=2)
    assert co.attempt == 2 and co.reservation_id == "res_2"
    for attempt in (1, 3):
        assert s.on(co, REPLIES[reply_name], attempt=attempt, now=LATER) == Step(co, changed=False)


def test_attempt_2_runs_the_whole_table_on_its_own_reservation():
    s = saga()
    co = reach(S.AWAITING_CREDIT, s, attempt=2)
    step = s.on(co, reserved("res_2"), attempt=2, now=LATER)
    assert step.state.state is S.CONFIRMED and step.order.bill_to_id == OTHER_PARENT
    failed = s.on(reach(S.AWAITING_PRICES, saga(), attempt=2), REFUSED, attempt=2, now=LATER)
    assert failed.send[1].payload == ReleaseCredit(reservation_id="res_2", bill_to_id=PARENT)


# ---- both arrival orders, duplicates, after the end -----------------------------------------------------------

@pytest.mark.parametrize("first, second", [("CheckoutPriced", "CreditReserved"), ("CreditReserved", "CheckoutPriced")])
def test_either_arrival_order_makes_the_same_order(first, second):
    s = saga()
    co = placed(s)
    middle = s.on(co, REPLIES[first], attempt=1, now=NOW).state
    step = s.on(middle, REPLIES[second], attempt=1, now=LATER)
    assert step == expected_step("confirmed", co, None)
    assert step.order == expected_order() and step.order.bill_to_id == OTHER_PARENT


@pytest.mark.parametrize("reply_name", ["CheckoutPriced", "CreditReserved"])
def test_a_duplicate_before_the_other_part_changes_nothing(reply_name):
    s = saga()
    once = s.on(placed(s), REPLIES[reply_name], attempt=1, now=NOW).state
    assert s.on(once, REPLIES[reply_name], attempt=1, now=LATER) == Step(once, changed=False)


@pytest.mark.parametrize("reply_name", REPLIES)
def test_nothing_after_confirmation_makes_a_second_order(reply_name):
    s = saga()
    done = reach(S.CONFIRMED, s)
    step = s.on(done, REPLIES[reply_name], attempt=1, now=LATER)
    assert (step.changed, step.order, step.send, step.answer) == (False, None, (), None)


def test_a_failure_after_credit_was_reserved_releases_it():
    s = saga()
    co = reach(S.AWAITING_PRICES, s)
    step = s.on(co, MISSING, attempt=1, now=LATER)  # something has arrived: a 404 now fails the saga and keeps it
    assert step.state.state is S.FAILED and step.final
    assert [m.payload for m in step.send] == [ReleaseCart(cart_id=CART, checkout_id="chk_1"),
                                              ReleaseCredit(reservation_id="res_1", bill_to_id=PARENT)]
    assert all(not m.replies for m in step.send)  # compensation wants no acknowledgement


def test_credit_reserved_after_the_saga_failed_is_released_not_held():
    s = saga()
    failed = s.on(placed(s), REFUSED, attempt=1, now=NOW).state
    step = s.on(failed, reserved(), attempt=1, now=LATER)
    assert step == Step(failed, send=(release_credit(failed),), changed=False)


def test_prices_that_do_not_match_the_frozen_lines_fail_the_saga_with_compensation():
    s = saga()
    co = reach(S.AWAITING_PRICES, s)
    wrong = priced(lines=FROZEN[:1])  # pricing answered for a line the cart does not hold any more
    step = s.on(co, wrong, attempt=1, now=LATER)
    assert step.state.state is S.FAILED and step.final and step.order is None
    assert (step.answer.code, step.answer.param) == ("parameter_invalid", "cart_id")
    assert step.state.result == step.answer
    assert [type(m.payload) for m in step.send] == [ReleaseCart, ReleaseCredit]


@pytest.mark.parametrize("held_first", [True, False])
def test_an_order_is_only_made_for_the_amount_credit_holds(held_first):
    """Priced again after a restart while a price changed: credit holds the first total, the prices say another."""
    s = saga()
    dearer = TOTALS.model_copy(update={"total": TOTALS.total + 1})
    replies = [reserved(), priced(totals=dearer)]
    co = s.on(placed(s), replies[not held_first], attempt=1, now=NOW).state
    step = s.on(co, replies[held_first], attempt=1, now=LATER)
    assert step.state.state is S.FAILED and step.order is None and step.final
    assert (step.answer.code, step.answer.param) == ("cart_version_conflict", "cart_id")
    assert [type(m.payload) for m in step.send] == [ReleaseCart, ReleaseCredit]


def test_a_404_while_nothing_has_arrived_keeps_no_saga():
    s = saga()
    co = placed(s)
    step = s.on(co, MISSING, attempt=1, now=LATER)
    assert step.state is None and step.answer == MISSING and not step.final


def test_commands_that_want_a_reply_are_only_the_asks():
    s = saga()
    co = placed(s)
    confirmed = s.on(s.on(co, priced(), attempt=1, now=NOW).state, reserved(), attempt=1, now=LATER)
    assert [m.replies for m in confirmed.send] == [False, False]  # OrderConfirmed, CompleteCart without reply_to


# ---- expiry and resume in every state -----------------------------------------------------------------------

@pytest.mark.parametrize("state", list(S))
def test_expiry_in_every_state(state):
    s = saga()
    co = reach(state, s)
    overdue = co.step_deadline + timedelta(microseconds=1)
    step = s.expire(co, overdue)
    if state.active:
        assert step == Step(replace(co, state=S.EXPIRED), send=(release_cart(co), release_credit(co)),
                            answer=Failure(code=ErrorCode.UPSTREAM_TIMEOUT, message="checkout did not complete in "
                                           "time; retry with the same Idempotency-Key"))
        assert not step.final and step.state.result is None
        assert s.expire(co, co.step_deadline) == Step(co, changed=False)  # not past it yet
    else:
        assert step == Step(co, changed=False)


@pytest.mark.parametrize("state", list(S))
def test_resume_in_every_state(state):
    s = saga()
    co = reach(state, s)
    step = s.resume(co, LATER)
    if not state.active:
        assert step == Step(co, changed=False)
        return
    again = replace(co, step_deadline=LATER + TIMEOUT)
    if state is S.AWAITING_CREDIT:  # it has the total: credit is asked directly
        ask = Send(topics.CREDIT_COMMANDS, PARENT, ReserveCredit(
            reservation_id="res_1", checkout_id="chk_1", customer_id=CUSTOMER, bill_to_id=PARENT, amount=33_462,
            currency="JMD"), replies=True)
    else:  # CheckoutPriced has not come: from the cart again (a freeze by the same checkout is answered again)
        ask = Send(topics.CART_COMMANDS, CART, FreezeCart(
            cart_id=CART, customer_id=CUSTOMER, checkout_id="chk_1",
            then=CheckoutContinuation(reservation_id="res_1", bill_to_id=PARENT)), replies=True)
    assert step == Step(again, send=(ask,))


# ---- PlaceOrder with a key seen before, and a cart that is not free --------------------------------------------

@pytest.mark.parametrize("state", [S.CONFIRMED, S.REJECTED, S.FAILED])
def test_a_key_whose_checkout_ended_gets_the_stored_answer(state):
    s = saga()
    co = reach(state, s)
    later_ask = Asker("gateway.replies.2", "corr_2", "req_2")
    step = s.place(place_cmd(), later_ask, Placing(checkout=co, cart_order_id=co.order_id), LATER)
    assert step == Step(co, answer=co.result, final=True, changed=False)


@pytest.mark.parametrize("state", [S.AWAITING, S.AWAITING_CREDIT, S.AWAITING_PRICES])
def test_a_key_whose_checkout_is_active_is_answered_to_the_latest_ask(state):
    s = saga()
    co = reach(state, s)
    later_ask = Asker("gateway.replies.2", "corr_2", "req_2")
    step = s.place(place_cmd(), later_ask, Placing(checkout=co, cart_held=True), LATER)
    assert step == Step(replace(co, asker=later_ask))


def test_a_key_whose_checkout_expired_starts_attempt_two_with_a_new_reservation():
    s = saga()
    expired = reach(S.EXPIRED, s)
    later_ask = Asker("gateway.replies.2", "corr_2", "req_2")
    moved = Customer(CUSTOMER, OTHER_PARENT, "net_60")  # the customer's record changed meanwhile
    step = s.place(place_cmd(), later_ask, Placing(checkout=expired, customer=moved), LATER)
    again = replace(expired, state=S.AWAITING, attempt=2, reservation_id="res_2", bill_to_id=OTHER_PARENT,
                    terms="net_60", asker=later_ask, step_deadline=LATER + TIMEOUT)
    assert step == Step(again, send=(Send(topics.CART_COMMANDS, CART, FreezeCart(
        cart_id=CART, customer_id=CUSTOMER, checkout_id="chk_1",
        then=CheckoutContinuation(reservation_id="res_2", bill_to_id=OTHER_PARENT)), replies=True),))
    assert again.correlation_id == "chk_1:2"


def test_an_expired_checkout_whose_cart_is_now_another_checkouts_is_refused():
    s = saga()
    expired = reach(S.EXPIRED, s)
    with pytest.raises(Rejection) as held:
        s.place(place_cmd(), GATEWAY, Placing(checkout=expired, cart_held=True), LATER)
    assert held.value.code is ErrorCode.CART_FROZEN
    with pytest.raises(Rejection) as ordered:
        s.place(place_cmd(), GATEWAY, Placing(checkout=expired, cart_order_id="ord_9"), LATER)
    assert (ordered.value.code, ordered.value.order_id) == (ErrorCode.CART_CHECKED_OUT, "ord_9")


def test_a_cart_already_checked_out_or_being_checked_out_is_refused():
    with pytest.raises(Rejection) as ordered:
        saga().place(place_cmd(), GATEWAY, Placing(cart_order_id="ord_9", cart_held=True), NOW)
    assert (ordered.value.code, ordered.value.param, ordered.value.order_id) == (
        ErrorCode.CART_CHECKED_OUT, "cart_id", "ord_9")
    with pytest.raises(Rejection) as held:
        saga().place(place_cmd(), GATEWAY, Placing(cart_held=True), NOW)
    assert (held.value.code, held.value.param) == (ErrorCode.CART_FROZEN, "cart_id")


# ---- the state checks itself once, when made or loaded ---------------------------------------------------------

def test_a_state_that_does_not_hold_what_it_says_is_refused():
    co = placed(saga())
    with pytest.raises(ValueError):
        replace(co, state=S.AWAITING_CREDIT)  # no CheckoutPriced held
    with pytest.raises(ValueError):
        replace(co, priced=Priced(FROZEN, TOTALS))  # awaiting both, yet holding prices
    with pytest.raises(ValueError):
        replace(co, state=S.CONFIRMED, result=expected_order())  # confirmed without its order id
    with pytest.raises(ValueError):
        replace(co, state=S.FAILED)  # a final state without its answer
    with pytest.raises(ValueError):
        replace(co, attempt=0)
