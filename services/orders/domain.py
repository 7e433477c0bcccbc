"""The checkout saga's rules, free of I/O (docs/architecture.md, "The checkout saga").

A checkout is a frozen `Checkout` (its row, parsed once when loaded). `CheckoutSaga` takes it and what
happened — a PlaceOrder, a reply, a deadline passed, a restart — and returns a `Step`: the next state,
the commands and events to send, the answer for the waiting gateway, and the order to create. The
handler stores and sends what the step says; nothing here reads or writes the database or the broker.

The sequence: PlaceOrder → FreezeCart(then) → the cart hands the frozen lines to pricing
(PriceCheckout) → pricing answers the saga with CheckoutPriced and hands the total to credit
(ReserveCredit) → credit answers the saga. The saga so receives, in either order, CheckoutPriced and
the credit answer — or a Failure from any of the three — and confirms once it holds both.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from libs.contracts import topics
from libs.contracts.base import Failure, Message, Rejection
from libs.contracts.cart import CartLine, CheckoutContinuation, CompleteCart, FreezeCart, ReleaseCart
from libs.contracts.credit import CreditRejected, CreditReserved, ReleaseCredit, ReserveCredit
from libs.contracts.errors import ErrorCode
from libs.contracts.ids import CHECKOUT, ORDER, RESERVATION, new_id
from libs.contracts.orders import (OrderConfirmed, OrderLine, OrderStatus, OrderView, OverCreditLimit, PlaceOrder,
                                   StatusTransition)
from libs.contracts.pricing import CheckoutPriced, LinesPriced
from libs.contracts.topics import TopicSpec


class CheckoutState(StrEnum):
    """Where a checkout is. The stored values are the three-step saga's, so that the partial indexes and an
    operator's `state IN ('freezing', 'pricing', 'reserving')` keep meaning "active"."""

    AWAITING = "freezing"  # FreezeCart(then) sent: neither CheckoutPriced nor the credit answer has come
    AWAITING_CREDIT = "reserving"  # CheckoutPriced has come; credit has not answered
    AWAITING_PRICES = "pricing"  # CreditReserved has come before CheckoutPriced was handled
    CONFIRMED = "confirmed"  # the order exists
    REJECTED = "rejected"  # credit refused: OverCreditLimit
    FAILED = "failed"  # a step refused: its Failure
    EXPIRED = "expired"  # missed its deadline and was compensated; the same key starts attempt n+1

    @property
    def active(self) -> bool:
        return self in ACTIVE

    @property
    def waits_for(self) -> str:
        """Who an active checkout waits on (for the log of a timeout)."""
        return _WAITS_FOR.get(self, "nobody")

    @property
    def final(self) -> bool:
        return self in FINAL


ACTIVE = frozenset({CheckoutState.AWAITING, CheckoutState.AWAITING_CREDIT, CheckoutState.AWAITING_PRICES})
FINAL = frozenset({CheckoutState.CONFIRMED, CheckoutState.REJECTED, CheckoutState.FAILED})
_WAITS_FOR = {CheckoutState.AWAITING: "the cart, pricing and credit", CheckoutState.AWAITING_CREDIT: "credit",
              CheckoutState.AWAITING_PRICES: "pricing"}


def correlation(checkout_id: str, attempt: int) -> str:
    """Replies name the attempt, so a late reply to an expired attempt is recognised and ignored."""
    return f"{checkout_id}:{attempt}"


def parse_correlation(value: str | None) -> tuple[str, int] | None:
    if not value or ":" not in value:
        return None
    checkout_id, _, attempt = value.rpartition(":")
    return (checkout_id, int(attempt)) if attempt.isdigit() else None


def assemble_lines(frozen: list[CartLine], priced: LinesPriced) -> list[dict]:
    """Each order line: what was asked (unit, quantity, factor) beside what was settled (price, tax)."""
    by_id = {p.line_id: p for p in priced.lines}
    lines = []
    for position, line in enumerate(frozen, start=1):
        p = by_id.get(line.line_id)
        if p is None or p.base_quantity != line.base_quantity or p.sku != line.sku:
            raise Rejection(ErrorCode.PARAMETER_INVALID, f"line {line.line_id} was not priced as frozen", "cart_id")
        lines.append(dict(
            position=position, line_id=line.line_id, sku=line.sku, order_uom=line.order_uom,
            order_quantity=line.order_quantity, factor=line.factor, base_uom=line.base_uom,
            base_quantity=line.base_quantity, unit_price=p.unit_price, price_source=p.price_source,
            subtotal=p.subtotal, tax_category=str(p.tax_category), tax_rate_bp=p.tax_rate_bp, tax=p.tax, total=p.total,
        ))
    if len(by_id) != len(frozen):
        raise Rejection(ErrorCode.PARAMETER_INVALID, "pricing returned lines the cart does not have", "cart_id")
    return lines


# ---- the state -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Customer:
    """Orders' copy of a customer (erp.customers.v1): who is billed, on what terms."""

    customer_id: str
    bill_to_id: str
    terms: str


def billing(customer: Customer | None, customer_id: str) -> tuple[str, str]:
    """(bill-to account, terms) for a checkout; a customer whose record has not arrived bills itself, on cod."""
    return (customer.bill_to_id, customer.terms) if customer is not None else (customer_id, "cod")


@dataclass(frozen=True)
class Asker:
    """Who waits for the checkout's answer: the latest PlaceOrder's reply topic, correlation and request id."""

    reply_to: str | None
    correlation_id: str | None
    request_id: str | None


@dataclass(frozen=True)
class Priced:
    """What CheckoutPriced brought: the lines as frozen and what pricing settled for them."""

    lines: tuple[CartLine, ...]
    priced: LinesPriced


@dataclass(frozen=True)
class Held:
    """What CreditReserved brought: the account credit charged (credit is the authority on billing), and how much."""

    bill_to_id: str
    amount: int


@dataclass(frozen=True)
class Checkout:
    """One checkout saga as stored. Checked once, when made or loaded: the parts it holds fit its state."""

    checkout_id: str
    cart_id: str
    customer_id: str
    idempotency_key: str | None
    notes: str | None
    po_number: str | None
    bill_to_id: str  # orders' copy of the customer: the account the reservation is asked on (and keyed by)
    terms: str
    state: CheckoutState
    attempt: int
    reservation_id: str  # this attempt's: a new attempt asks for a new one (the last was released)
    asker: Asker
    step_deadline: datetime
    priced: Priced | None = None
    credit: Held | None = None
    order_id: str | None = None
    result: Message | None = None  # the final answer, replayed to a later ask with the same key
    order_prefix: str | None = None  # the latest PlaceOrder's: the order's number is `<prefix>-NNNNNN`

    def __post_init__(self) -> None:
        if self.attempt < 1:
            raise ValueError(f"checkout {self.checkout_id}: attempt {self.attempt}")
        s = self.state
        if s.active:
            expected = (s is CheckoutState.AWAITING_CREDIT, s is CheckoutState.AWAITING_PRICES)
            if (self.priced is not None, self.credit is not None) != expected or self.result is not None:
                raise ValueError(f"checkout {self.checkout_id}: {s.name} does not hold what it holds")
        elif s is CheckoutState.EXPIRED:
            if self.result is not None:
                raise ValueError(f"checkout {self.checkout_id}: an expired attempt has no final answer")
        elif self.result is None or (s is CheckoutState.CONFIRMED and self.order_id is None):
            raise ValueError(f"checkout {self.checkout_id}: {s.name} without its answer")

    @property
    def correlation_id(self) -> str:
        return correlation(self.checkout_id, self.attempt)


@dataclass(frozen=True)
class Placing:
    """What a PlaceOrder finds, read at once: the checkout of its idempotency key, the order the cart became,
    whether an active checkout holds the cart, and orders' copy of the customer."""

    checkout: Checkout | None = None
    cart_order_id: str | None = None
    cart_held: bool = False
    customer: Customer | None = None


# ---- what a step does ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Send:
    """A message to emit. `replies`: a command answered on orders.replies.v1, naming this attempt; without it
    nobody answers (compensation and CompleteCart want no acknowledgement)."""

    topic: TopicSpec
    key: str
    payload: Message
    replies: bool = False
    aggregate_id: str | None = None
    aggregate_version: int | None = None


@dataclass(frozen=True)
class Step:
    """The saga's decision. `state` None: the checkout is deleted (a 404 keeps no saga). `changed` False: nothing
    to store (a late or duplicate reply). `answer` goes to the waiting asker; `final`: it is also the checkout's
    stored result. `order`: the order to create, as its view."""

    state: Checkout | None
    send: tuple[Send, ...] = ()
    answer: Message | None = None
    final: bool = False
    order: OrderView | None = None
    changed: bool = True


TIMED_OUT = "checkout did not complete in time; retry with the same Idempotency-Key"


class CheckoutSaga:
    """The saga's rules. `step_timeout`: how long each step may take; `mint`: new ids (`libs.contracts.ids`)."""

    def __init__(self, step_timeout: timedelta, mint: Callable[[str], str] = new_id):
        self.step_timeout = step_timeout
        self.mint = mint

    # -- PlaceOrder ---------------------------------------------------------------------------------------

    def place(self, cmd: PlaceOrder, asker: Asker, found: Placing, now: datetime) -> Step:
        """A new checkout; or, for an idempotency key seen before: the stored final answer, a new attempt of an
        expired one, or the active one with this ask as the one it answers."""
        co = found.checkout
        if co is not None:
            if co.state.final:
                return Step(co, answer=co.result, final=True, changed=False)
            co = replace(co, asker=asker)  # the latest ask is the one a gateway still waits on
            if co.state is not CheckoutState.EXPIRED:
                return Step(co)
            self._cart_is_free(found)
            bill_to_id, terms = billing(found.customer, co.customer_id)
            co = replace(co, state=CheckoutState.AWAITING, attempt=co.attempt + 1, bill_to_id=bill_to_id, terms=terms,
                         reservation_id=self.mint(RESERVATION), priced=None, credit=None,
                         step_deadline=now + self.step_timeout, order_prefix=cmd.order_prefix)
            return Step(co, send=(self._freeze(co),))
        self._cart_is_free(found)
        bill_to_id, terms = billing(found.customer, cmd.customer_id)
        co = Checkout(
            checkout_id=self.mint(CHECKOUT), cart_id=cmd.cart_id, customer_id=cmd.customer_id,
            idempotency_key=cmd.idempotency_key, notes=cmd.notes, po_number=cmd.po_number, bill_to_id=bill_to_id,
            terms=terms, state=CheckoutState.AWAITING, attempt=1, reservation_id=self.mint(RESERVATION), asker=asker,
            step_deadline=now + self.step_timeout, order_prefix=cmd.order_prefix,
        )
        return Step(co, send=(self._freeze(co),))

    @staticmethod
    def _cart_is_free(found: Placing) -> None:
        if found.cart_order_id is not None:
            raise Rejection(ErrorCode.CART_CHECKED_OUT, "this cart was already checked out", "cart_id",
                            order_id=found.cart_order_id)
        if found.cart_held:
            raise Rejection(ErrorCode.CART_FROZEN, "this cart is being checked out; try again shortly", "cart_id")

    # -- replies ------------------------------------------------------------------------------------------

    def on(self, co: Checkout, reply: Message, *, attempt: int, now: datetime) -> Step:
        """A reply on orders.replies.v1 for attempt `attempt` of `co`. Anything the state does not await — a
        reply to an attempt that ended, a second CheckoutPriced, an acknowledgement — changes nothing."""
        if attempt != co.attempt:
            return Step(co, changed=False)
        s = co.state
        if isinstance(reply, CheckoutPriced):
            priced = Priced(tuple(reply.lines), reply.priced)
            if s is CheckoutState.AWAITING:
                return Step(replace(co, state=CheckoutState.AWAITING_CREDIT, priced=priced,
                                    step_deadline=now + self.step_timeout))
            if s is CheckoutState.AWAITING_PRICES:
                return self._confirm(co, priced, co.credit, now)
        elif isinstance(reply, CreditReserved):
            held = Held(reply.bill_to_id, reply.amount)
            if s is CheckoutState.AWAITING:
                return Step(replace(co, state=CheckoutState.AWAITING_PRICES, credit=held,
                                    step_deadline=now + self.step_timeout))
            if s is CheckoutState.AWAITING_CREDIT:
                return self._confirm(co, co.priced, held, now)
            if s in (CheckoutState.FAILED, CheckoutState.EXPIRED):
                # this attempt gave up while credit was still deciding: never leave credit held
                return Step(co, send=(self._release_credit(co),), changed=False)
        elif isinstance(reply, CreditRejected):
            if s in (CheckoutState.AWAITING, CheckoutState.AWAITING_CREDIT):
                answer = OverCreditLimit(cart_id=co.cart_id, limit=reply.limit, exposure=reply.exposure,
                                         available=reply.available, order_total=reply.order_total,
                                         shortfall=reply.shortfall, currency=reply.currency,
                                         largest_order_total_that_fits=max(0, reply.available),
                                         open_invoices_to_pay=list(reply.open_invoices_to_pay))
                return Step(replace(co, state=CheckoutState.REJECTED, result=answer),
                            send=(self._release_cart(co),), answer=answer, final=True)
        elif isinstance(reply, Failure):
            if s is CheckoutState.AWAITING and reply.code == ErrorCode.RESOURCE_MISSING:
                # no such cart for this customer (another's, or none): a 404 keeps no saga. The releases are
                # no-ops then, and keep the saga's promise should any other step ever answer so.
                return Step(None, send=self._compensation(co), answer=reply)
            if s.active:
                return self._fail(co, reply)
        return Step(co, changed=False)

    def _confirm(self, co: Checkout, priced: Priced, credit: Held, now: datetime) -> Step:
        try:
            if credit.amount != priced.priced.total:
                # priced again (a resume) after a price changed: the order must be for what credit holds
                raise Rejection(ErrorCode.CART_VERSION_CONFLICT, "the cart's prices changed while it was checked "
                                "out; check out again", "cart_id")
            lines = assemble_lines(list(priced.lines), priced.priced)
        except Rejection as r:
            return self._fail(co, r.failure(), priced=priced, credit=credit)
        order_id = self.mint(ORDER)
        totals = priced.priced
        order = OrderView(
            order_id=order_id, cart_id=co.cart_id, customer_id=co.customer_id,
            bill_to_id=credit.bill_to_id,  # the account credit charged: the authority on billing
            status=OrderStatus.CONFIRMED, terms=co.terms, currency=totals.currency, subtotal=totals.subtotal,
            tax=totals.tax, total=totals.total, notes=co.notes, po_number=co.po_number,
            lines=[OrderLine(**x) for x in lines], created_at=now, reservation_id=co.reservation_id,
            status_transitions=[StatusTransition(status=OrderStatus.CONFIRMED, at=now)],
        )
        done = replace(co, state=CheckoutState.CONFIRMED, priced=priced, credit=credit, order_id=order_id,
                       result=order)
        send = (
            Send(topics.ORDERS_EVENTS, order_id, OrderConfirmed(order=order), aggregate_id=order_id,
                 aggregate_version=1),
            Send(topics.CART_COMMANDS, co.cart_id,
                 CompleteCart(cart_id=co.cart_id, checkout_id=co.checkout_id, order_id=order_id)),
        )
        return Step(done, send=send, answer=order, final=True, order=order)

    def _fail(self, co: Checkout, failure: Failure, **parts: Priced | Held) -> Step:
        return Step(replace(co, state=CheckoutState.FAILED, result=failure, **parts), send=self._compensation(co),
                    answer=failure, final=True)

    @staticmethod
    def numbered(step: Step, number: str) -> Step:
        """The confirming step with its order's number (taken with the order's insert): in the order stored, the
        event, the answer and the checkout's result."""
        assert step.order is not None and step.state is not None
        order = step.order.model_copy(update={"order_number": number})
        send = tuple(replace(m, payload=OrderConfirmed(order=order)) if isinstance(m.payload, OrderConfirmed) else m
                     for m in step.send)
        return replace(step, state=replace(step.state, result=order), send=send, answer=order, order=order)

    # -- deadlines and restarts ---------------------------------------------------------------------------

    def expire(self, co: Checkout, now: datetime) -> Step:
        """Past its deadline: compensate and tell the waiting client (504); the same key may start again."""
        if not co.state.active or now <= co.step_deadline:
            return Step(co, changed=False)
        return Step(replace(co, state=CheckoutState.EXPIRED), send=self._compensation(co),
                    answer=Failure(code=ErrorCode.UPSTREAM_TIMEOUT, message=TIMED_OUT))

    def resume(self, co: Checkout, now: datetime) -> Step:
        """After a restart: ask again for what has not come (every step is idempotent by business key)."""
        if not co.state.active:
            return Step(co, changed=False)
        co = replace(co, step_deadline=now + self.step_timeout)
        return Step(co, send=(self._freeze(co) if co.priced is None else self._reserve(co),))

    # -- the commands ---------------------------------------------------------------------------------------

    @staticmethod
    def _freeze(co: Checkout) -> Send:
        then = CheckoutContinuation(reservation_id=co.reservation_id, bill_to_id=co.bill_to_id)
        return Send(topics.CART_COMMANDS, co.cart_id, FreezeCart(cart_id=co.cart_id, customer_id=co.customer_id,
                                                                  checkout_id=co.checkout_id, then=then), replies=True)

    @staticmethod
    def _reserve(co: Checkout) -> Send:
        assert co.priced is not None
        total = co.priced.priced
        return Send(topics.CREDIT_COMMANDS, co.bill_to_id, ReserveCredit(
            reservation_id=co.reservation_id, checkout_id=co.checkout_id, customer_id=co.customer_id,
            bill_to_id=co.bill_to_id, amount=total.total, currency=total.currency), replies=True)

    @staticmethod
    def _release_cart(co: Checkout) -> Send:
        return Send(topics.CART_COMMANDS, co.cart_id, ReleaseCart(cart_id=co.cart_id, checkout_id=co.checkout_id))

    @staticmethod
    def _release_credit(co: Checkout) -> Send:
        # keyed by the bill-to the ReserveCredit was keyed by: the release is ordered after it, or before it
        # (credit then keeps a tombstone that refuses it)
        return Send(topics.CREDIT_COMMANDS, co.bill_to_id,
                    ReleaseCredit(reservation_id=co.reservation_id, bill_to_id=co.bill_to_id))

    def _compensation(self, co: Checkout) -> tuple[Send, ...]:
        """Give back whatever this attempt may hold; each release is harmless if its step never happened."""
        return (self._release_cart(co), self._release_credit(co))
