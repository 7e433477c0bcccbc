"""Orders' handlers over an in-memory unit of work (no broker, no database): every handler's paths, rejections and
idempotent repeats, the saga driven through its replies as cart, pricing and credit would send them, the
sweeper and the resume across tenants, and the statement budget (one repository call is one statement)."""

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from libs.contracts import topics
from libs.contracts.base import Failure, Rejection
from libs.contracts.cart import CartReleased, CompleteCart, FreezeCart, ReleaseCart
from libs.contracts.credit import CreditRejected, CreditReserved, ReleaseCredit, ReserveCredit
from libs.contracts.envelope import Envelope
from libs.contracts.erp import CustomerUpsert
from libs.contracts.errors import ErrorCode
from libs.contracts.orders import GetOrder, ListOrders, OrderConfirmed, OrderView, OverCreditLimit, PlaceOrder
from libs.contracts.pricing import CheckoutPriced
from libs.runtime.database import Scope, Unscoped
from services.orders import handlers
from services.orders.domain import Checkout, CheckoutSaga, CheckoutState, Customer, Placing
from services.orders.invoicing import Invoice, Payment
from services.orders.lifecycle import Order, order_number
from services.orders.unit_of_work import OrdersUnitOfWork

from .test_checkout_saga import FROZEN, TIMEOUT, TOTALS, Mint

S = CheckoutState
A, B = Scope("ten_a", False), Scope("ten_b", False)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CART, CUSTOMER, PARENT = "cart_1", "cus_1", "cus_parent"
GATEWAY = "gateway.replies.1"


# ---- in-memory repositories: the same methods as services/orders/repository.py, scoped like row-level security --

class Store:
    def __init__(self):
        self.checkouts: dict[str, tuple[Scope, Checkout]] = {}
        self.orders: dict[str, tuple[Scope, OrderView, str]] = {}
        self.customers: dict[tuple[Scope, str], Customer] = {}
        # the lifecycle's state of each order beside its view: version, prefix, invoiced per line, digests
        self.order_state: dict[str, tuple[int, str, dict, dict]] = {}
        self.invoices: dict[str, tuple[Scope, Invoice]] = {}
        self.payments: dict[tuple[Scope, str], Payment] = {}
        self.counters: dict[tuple[Scope, str], int] = {}
        self.statements: list[str] = []


class _Repo:
    def __init__(self, store: Store, scope: Scope | Unscoped):
        self.store, self.scope = store, scope

    def sees(self, owner: Scope) -> bool:
        return isinstance(self.scope, Unscoped) or owner == self.scope

    def ran(self, name: str) -> None:
        self.store.statements.append(name)


class MemCheckouts(_Repo):
    async def for_placing(self, idempotency_key, cart_id, customer_id) -> Placing:
        self.ran("for_placing")
        mine = [co for owner, co in self.store.checkouts.values() if self.sees(owner)]
        return Placing(
            checkout=next((co for co in mine if idempotency_key and co.idempotency_key == idempotency_key), None),
            cart_order_id=next((o.order_id for owner, o, _ in self.store.orders.values()
                                if self.sees(owner) and o.cart_id == cart_id), None),
            cart_held=any(co.cart_id == cart_id and co.state.active for co in mine),
            customer=self.store.customers.get((self.scope, customer_id)))

    async def add(self, co: Checkout, at) -> None:
        self.ran("add")
        for owner, other in self.store.checkouts.values():
            if owner == self.scope and ((co.idempotency_key and other.idempotency_key == co.idempotency_key)
                                        or (other.cart_id == co.cart_id and other.state.active)):
                raise asyncpg.UniqueViolationError("duplicate key value violates unique constraint")
        self.store.checkouts[co.checkout_id] = (self.scope, co)

    async def get_for_update(self, checkout_id):
        self.ran("get_for_update")
        owner, co = self.store.checkouts.get(checkout_id, (None, None))
        return co if co is not None and self.sees(owner) else None

    async def save(self, co: Checkout, at) -> None:
        self.ran("save")
        owner, _ = self.store.checkouts[co.checkout_id]
        assert self.sees(owner)
        self.store.checkouts[co.checkout_id] = (owner, co)

    async def save_all(self, checkouts, at) -> None:
        self.ran("save_all")
        for co in checkouts:
            owner, _ = self.store.checkouts[co.checkout_id]
            self.store.checkouts[co.checkout_id] = (owner, co)

    async def delete(self, checkout_id) -> None:
        self.ran("delete")
        owner, _ = self.store.checkouts[checkout_id]
        assert self.sees(owner)
        del self.store.checkouts[checkout_id]

    async def overdue(self, now, limit):
        self.ran("overdue")
        rows = sorted(((o, c) for o, c in self.store.checkouts.values() if c.state.active and c.step_deadline < now),
                      key=lambda r: r[1].step_deadline)
        return rows[:limit]

    async def active(self, after_id, limit):
        self.ran("active")
        rows = sorted(((o, c) for o, c in self.store.checkouts.values() if c.state.active and c.checkout_id > after_id),
                      key=lambda r: r[1].checkout_id)
        return rows[:limit]


def _take(store: Store, scope: Scope, kind: str) -> int:
    n = store.counters.get((scope, kind), 1)
    store.counters[(scope, kind)] = n + 1
    return n


class MemOrders(_Repo):
    async def add(self, order: OrderView, checkout_id: str, prefix: str | None) -> str:
        self.ran("add_order")  # numbered in the same statement
        assert not any(o == self.scope and v.cart_id == order.cart_id for o, v, _ in self.store.orders.values())
        prefix = prefix or "ORD"
        number = order_number(prefix, _take(self.store, self.scope, "order"))
        self.store.orders[order.order_id] = (self.scope, order.model_copy(update={"order_number": number}),
                                             checkout_id)
        self.store.order_state[order.order_id] = (1, prefix, {}, {})
        return number

    async def get_for_update(self, order_id):
        self.ran("get_order_for_update")
        owner, view, _ = self.store.orders.get(order_id, (None, None, None))
        if view is None or not self.sees(owner):
            return None
        version, prefix, invoiced, digests = self.store.order_state[order_id]
        return Order(view, version, prefix, dict(invoiced), dict(digests))

    async def save(self, order: Order) -> None:
        self.ran("save_order")
        owner, _, checkout_id = self.store.orders[order.order_id]
        assert self.sees(owner)
        self.store.orders[order.order_id] = (owner, order.view, checkout_id)
        self.store.order_state[order.order_id] = (order.version, order.prefix, dict(order.invoiced),
                                                  dict(order.digests))

    async def get(self, order_id):
        self.ran("get_order")
        owner, order, _ = self.store.orders.get(order_id, (None, None, None))
        return order if order is not None and self.sees(owner) else None

    async def page(self, customer_id, starting_after, limit, order_number=None):
        self.ran("page")
        mine = sorted((v for o, v, _ in self.store.orders.values() if self.sees(o) and v.customer_id == customer_id
                       and (starting_after is None or v.order_id < starting_after)
                       and (order_number is None or v.order_number == order_number)),
                      key=lambda v: v.order_id, reverse=True)
        return mine[:limit], len(mine) > limit


def _due_first(inv: Invoice):
    v = inv.view
    return (v.due_at is None, v.due_at or v.issued_at, v.issued_at, v.invoice_id)


class MemInvoices(_Repo):
    def _mine(self):
        return [inv for o, inv in self.store.invoices.values() if self.sees(o)]

    async def add(self, inv: Invoice) -> None:
        self.ran("add_invoice")
        assert not any(i.view.invoice_number == inv.view.invoice_number for i in self._mine())  # unique per tenant
        self.store.invoices[inv.invoice_id] = (self.scope, inv)

    async def save_all(self, invoices) -> None:
        if invoices:
            self.ran("save_invoices")
        for inv in invoices:
            owner, _ = self.store.invoices[inv.invoice_id]
            assert self.sees(owner)
            self.store.invoices[inv.invoice_id] = (owner, inv)

    async def get(self, invoice_id):
        self.ran("get_invoice")
        owner, inv = self.store.invoices.get(invoice_id, (None, None))
        return inv if inv is not None and self.sees(owner) else None

    async def of_order_for_update(self, order_id):
        self.ran("invoices_of_order")
        return sorted((i for i in self._mine() if i.view.order_id == order_id), key=lambda i: i.invoice_id)

    async def for_payment(self, bill_to_id, invoice_id):
        self.ran("invoices_for_payment")
        return sorted((i for i in self._mine() if i.view.bill_to_id == bill_to_id and (
            i.invoice_id == invoice_id if invoice_id else i.view.status == "open")), key=_due_first)

    async def page(self, customer_id, starting_after, limit, status=None, order_id=None):
        self.ran("invoice_page")
        mine = sorted((i for i in self._mine() if i.view.customer_id == customer_id
                       and (starting_after is None or i.invoice_id < starting_after)
                       and (status is None or i.view.status == status)
                       and (order_id is None or i.view.order_id == order_id)),
                      key=lambda i: i.invoice_id, reverse=True)
        return mine[:limit], len(mine) > limit

    async def overdue(self, now, limit):
        self.ran("overdue_invoices")
        rows = sorted(((o, i) for o, i in self.store.invoices.values() if i.view.status == "open"
                       and not i.view.overdue and i.view.due_at is not None and i.view.due_at < now),
                      key=lambda r: r[1].view.due_at)
        return rows[:limit]


class MemPayments(_Repo):
    async def get(self, payment_id):
        self.ran("get_payment")
        return self.store.payments.get((self.scope, payment_id))

    async def add(self, p: Payment, at) -> None:
        self.ran("add_payment")
        if (self.scope, p.payment_id) in self.store.payments:
            raise asyncpg.UniqueViolationError("duplicate key value violates unique constraint")
        self.store.payments[(self.scope, p.payment_id)] = p

    async def unapplied_for_update(self, bill_to_id):
        self.ran("unapplied")
        return sorted((p for (o, _), p in self.store.payments.items() if o == self.scope
                       and p.bill_to_id == bill_to_id and p.remaining > 0),
                      key=lambda p: (p.received_at, p.payment_id))

    async def save_remaining(self, payments) -> None:
        if payments:
            self.ran("save_remaining")
        for p in payments:
            self.store.payments[(self.scope, p.payment_id)] = p


class MemCounters(_Repo):
    async def take(self, kind: str) -> int:
        self.ran(f"take_{kind}")
        return _take(self.store, self.scope, kind)


class MemCustomers(_Repo):
    async def upsert(self, customer: Customer) -> None:
        self.ran("upsert_customer")
        self.store.customers[(self.scope, customer.customer_id)] = customer


class World:
    """One orders database in memory, and the messages each handled message left in its outbox."""

    def __init__(self):
        self.store = Store()
        self.mint = Mint()
        self.now = NOW
        self.sent: list[tuple[str, str | None, Envelope]] = []

    def uow(self, env: Envelope | None, scope: Scope | Unscoped | None = None) -> OrdersUnitOfWork:
        scope = scope or Scope(env.tenant_id, env.livemode)
        u = OrdersUnitOfWork(None, scope, env, now=self.now)
        u.checkouts, u.orders, u.customers = (MemCheckouts(self.store, scope), MemOrders(self.store, scope),
                                              MemCustomers(self.store, scope))
        u.invoices, u.payments, u.counters = (MemInvoices(self.store, scope), MemPayments(self.store, scope),
                                              MemCounters(self.store, scope))
        u.saga = CheckoutSaga(TIMEOUT, self.mint)
        return u

    async def handle(self, handler, env: Envelope, scope=None):
        """Run one handler as the dispatcher would; returns (its reply, what it queued)."""
        self.store.statements.clear()
        uow = self.uow(env, scope)
        reply = await handler(env.payload, uow)
        out = uow.outbox.envelopes
        self.sent += out
        return reply, out

    def checkout(self, checkout_id: str = "chk_1") -> Checkout | None:
        return self.store.checkouts.get(checkout_id, (None, None))[1]


def ask(payload, scope: Scope = A, correlation: str = "corr_1", reply_to: str | None = GATEWAY,
        request_id: str = "req_1") -> Envelope:
    return Envelope(tenant_id=scope.tenant_id, livemode=scope.livemode, payload=payload, correlation_id=correlation,
                    reply_to=reply_to, request_id=request_id)


def answer_to(command: Envelope, payload) -> Envelope:
    """The reply cart, pricing or credit sends: on the command's reply_to, with its correlation."""
    assert command.reply_to == topics.ORDERS_REPLIES.name
    return Envelope(tenant_id=command.tenant_id, livemode=command.livemode, payload=payload,
                    correlation_id=command.correlation_id, request_id=command.request_id)


def place(key: str | None = "key_1", cart_id: str = CART) -> PlaceOrder:
    return PlaceOrder(cart_id=cart_id, customer_id=CUSTOMER, idempotency_key=key, po_number="PO-7")


def priced_reply(checkout_id="chk_1") -> CheckoutPriced:
    return CheckoutPriced(cart_id=CART, checkout_id=checkout_id, cart_version=2, lines=list(FROZEN), priced=TOTALS)


def reserved_reply(reservation_id="res_1") -> CreditReserved:
    return CreditReserved(reservation_id=reservation_id, bill_to_id=PARENT, amount=TOTALS.total, limit=100_000,
                          exposure=TOTALS.total, available=100_000 - TOTALS.total, currency="JMD")


async def placed(world: World, scope: Scope = A, key: str | None = "key_1") -> Envelope:
    """PlaceOrder handled: the FreezeCart envelope it sent."""
    reply, out = await world.handle(handlers.place_order, ask(place(key), scope))
    assert reply is None
    [(topic, key_, freeze)] = out
    assert (topic, key_) == (topics.CART_COMMANDS.name, CART)
    return freeze


# ---- PlaceOrder ------------------------------------------------------------------------------------------------

async def test_place_order_stores_an_awaiting_checkout_and_hands_the_cart_what_the_next_steps_need():
    world = World()
    await world.handle(handlers.upsert_customer, ask(CustomerUpsert(customer_id=CUSTOMER, name="Buyer",
                                                                    bill_to_id=PARENT, terms="net_30")))
    freeze = await placed(world)
    assert world.store.statements == ["for_placing", "add"]  # PlaceOrder: two statements and the bookkeeping
    co = world.checkout()
    assert (co.state, co.attempt, co.bill_to_id, co.terms, co.reservation_id) == (S.AWAITING, 1, PARENT, "net_30",
                                                                                   "res_1")
    assert (co.asker.reply_to, co.asker.correlation_id, co.asker.request_id) == (GATEWAY, "corr_1", "req_1")
    assert co.step_deadline == NOW + TIMEOUT
    assert isinstance(freeze.payload, FreezeCart)
    assert (freeze.payload.checkout_id, freeze.payload.then.reservation_id, freeze.payload.then.bill_to_id) == (
        "chk_1", "res_1", PARENT)
    assert (freeze.reply_to, freeze.correlation_id, freeze.request_id, freeze.tenant_id) == (
        "orders.replies.v1", "chk_1:1", "req_1", A.tenant_id)


async def test_a_customer_orders_has_no_record_of_bills_itself_on_cod():
    world = World()
    freeze = await placed(world)
    assert freeze.payload.then.bill_to_id == CUSTOMER
    assert (world.checkout().bill_to_id, world.checkout().terms) == (CUSTOMER, "cod")


async def test_a_cart_with_an_order_or_an_active_checkout_is_refused():
    world = World()
    freeze = await placed(world, key="key_1")
    with pytest.raises(Rejection) as busy:
        await world.handle(handlers.place_order, ask(place("key_2")))
    assert busy.value.code is ErrorCode.CART_FROZEN
    await world.handle(handlers.advance_checkout, answer_to(freeze, priced_reply()))
    await world.handle(handlers.advance_checkout, answer_to(freeze, reserved_reply()))
    with pytest.raises(Rejection) as done:
        await world.handle(handlers.place_order, ask(place("key_3")))
    assert (done.value.code, done.value.order_id) == (ErrorCode.CART_CHECKED_OUT, "ord_1")
    assert len(world.store.checkouts) == 1


async def test_another_tenant_may_check_out_a_cart_of_the_same_id():
    world = World()
    await placed(world, A)
    freeze_b = await placed(world, B)
    assert freeze_b.tenant_id == B.tenant_id and len(world.store.checkouts) == 2


async def test_a_race_lost_to_a_concurrent_place_order_is_a_unique_violation_retried():
    world = World()
    uow = world.uow(ask(place("key_1")))
    await placed(world)  # the winner committed while the loser decided on what it had read
    uow.checkouts.for_placing = lambda *a: _nothing_found()
    with pytest.raises(asyncpg.UniqueViolationError):  # 23505: transient, the retry finds the winner
        await handlers.place_order(place("key_1"), uow)


async def _nothing_found() -> Placing:
    return Placing()


# ---- the saga through its replies ------------------------------------------------------------------------------

@pytest.mark.parametrize("first", ["priced", "reserved"])
async def test_the_checkout_completes_on_both_parts_in_either_order(first):
    world = World()
    freeze = await placed(world)
    replies = {"priced": priced_reply(), "reserved": reserved_reply()}
    second = "reserved" if first == "priced" else "priced"
    _, out = await world.handle(handlers.advance_checkout, answer_to(freeze, replies[first]))
    assert out == [] and world.store.statements == ["get_for_update", "save"]
    assert world.checkout().state is (S.AWAITING_CREDIT if first == "priced" else S.AWAITING_PRICES)

    world.now = NOW + timedelta(milliseconds=30)
    _, out = await world.handle(handlers.advance_checkout, answer_to(freeze, replies[second]))
    # a step: lock+load, the order with its lines, the update
    assert world.store.statements == ["get_for_update", "add_order", "save"]
    co = world.checkout()
    assert (co.state, co.order_id) == (S.CONFIRMED, "ord_1")
    _, order, checkout_id = world.store.orders["ord_1"]
    assert checkout_id == "chk_1"
    assert (order.bill_to_id, order.total, order.po_number, order.status, order.created_at) == (
        PARENT, TOTALS.total, "PO-7", "confirmed", world.now)
    assert co.result == order

    [(t1, k1, event), (t2, k2, complete), (t3, k3, answer)] = out
    assert (t1, k1, event.payload, event.aggregate_id, event.aggregate_version) == (
        "orders.events.v1", "ord_1", OrderConfirmed(order=order), "ord_1", 1)
    assert (t2, k2, complete.payload) == ("cart.commands.v1", CART, CompleteCart(cart_id=CART, checkout_id="chk_1",
                                                                                 order_id="ord_1"))
    assert complete.reply_to is None  # no acknowledgement wanted
    assert (t3, k3, answer.payload, answer.correlation_id, answer.request_id) == (GATEWAY, "corr_1", order, "corr_1",
                                                                                  "req_1")
    assert {e.tenant_id for _, _, e in out} == {A.tenant_id}


async def test_get_order_and_list_orders_answer_the_view_checkout_answered():
    world = World()
    freeze = await placed(world)
    await world.handle(handlers.advance_checkout, answer_to(freeze, priced_reply()))
    _, out = await world.handle(handlers.advance_checkout, answer_to(freeze, reserved_reply()))
    answered = out[-1][2].payload
    got, _ = await world.handle(handlers.get_order, ask(GetOrder(order_id="ord_1", customer_id=CUSTOMER)))
    assert got == answered
    listed, _ = await world.handle(handlers.list_orders, ask(ListOrders(customer_id=CUSTOMER, limit=1)))
    assert (listed.orders, listed.has_more) == ([answered], False)
    for query in (GetOrder(order_id="ord_1", customer_id="cus_other"), GetOrder(order_id="ord_9")):
        with pytest.raises(Rejection) as missing:
            await world.handle(handlers.get_order, ask(query))
        assert (missing.value.code, missing.value.param) == (ErrorCode.RESOURCE_MISSING, "id")
    with pytest.raises(Rejection):  # another tenant's order is not there
        await world.handle(handlers.get_order, ask(GetOrder(order_id="ord_1"), B))


async def test_credit_rejected_releases_the_cart_and_answers_over_the_credit_limit():
    world = World()
    freeze = await placed(world)
    await world.handle(handlers.advance_checkout, answer_to(freeze, priced_reply()))
    no = CreditRejected(reservation_id="res_1", bill_to_id=CUSTOMER, limit=1_000, exposure=0, available=1_000,
                        order_total=TOTALS.total, shortfall=TOTALS.total - 1_000, currency="JMD")
    _, out = await world.handle(handlers.advance_checkout, answer_to(freeze, no))
    assert world.checkout().state is S.REJECTED
    [(t1, _, release), (t2, _, answer)] = out
    assert (t1, release.payload, release.reply_to) == ("cart.commands.v1", ReleaseCart(cart_id=CART,
                                                                                       checkout_id="chk_1"), None)
    assert (t2, answer.payload) == (GATEWAY, OverCreditLimit(
        cart_id=CART, limit=1_000, exposure=0, available=1_000, order_total=TOTALS.total,
        shortfall=TOTALS.total - 1_000, currency="JMD", largest_order_total_that_fits=1_000))
    assert world.store.orders == {}


async def test_a_failure_compensates_both_steps_and_is_the_final_answer():
    world = World()
    freeze = await placed(world)
    await world.handle(handlers.advance_checkout, answer_to(freeze, reserved_reply()))
    refused = Failure(code="amount_too_large", message="the cart's total is past the bound", param="cart_id")
    _, out = await world.handle(handlers.advance_checkout, answer_to(freeze, refused))
    assert (world.checkout().state, world.checkout().result) == (S.FAILED, refused)
    assert [(t, k, e.payload, e.reply_to) for t, k, e in out] == [
        ("cart.commands.v1", CART, ReleaseCart(cart_id=CART, checkout_id="chk_1"), None),
        ("credit.commands.v1", CUSTOMER, ReleaseCredit(reservation_id="res_1", bill_to_id=CUSTOMER), None),
        (GATEWAY, "corr_1", refused, None),
    ]
    # the same key again: the stored failure, nothing run again
    reply, out = await world.handle(handlers.place_order, ask(place("key_1"), correlation="corr_2"))
    assert (reply, out, world.store.statements) == (refused, [], ["for_placing"])


async def test_a_404_from_the_cart_keeps_no_saga():
    world = World()
    freeze = await placed(world)
    missing = Failure(code="resource_missing", message="no cart cart_1", param="cart_id")
    _, out = await world.handle(handlers.advance_checkout, answer_to(freeze, missing))
    assert world.store.checkouts == {} and world.store.statements == ["get_for_update", "delete"]
    assert [type(e.payload) for _, _, e in out] == [ReleaseCart, ReleaseCredit, Failure]
    assert out[-1][:2] == (GATEWAY, "corr_1")


async def test_late_duplicate_and_foreign_replies_change_nothing():
    world = World()
    freeze = await placed(world)
    await world.handle(handlers.advance_checkout, answer_to(freeze, priced_reply()))
    before = dict(world.store.checkouts)
    cases = [
        answer_to(freeze, priced_reply()),  # a second CheckoutPriced
        answer_to(freeze, CartReleased(cart_id=CART, checkout_id="chk_1")),  # an acknowledgement
        answer_to(freeze, reserved_reply()).model_copy(update={"correlation_id": "chk_1:7"}),  # another attempt's
        answer_to(freeze, reserved_reply()).model_copy(update={"correlation_id": "chk_1"}),  # not the saga's
        answer_to(freeze, reserved_reply()).model_copy(update={"correlation_id": "chk_9:1"}),  # no such checkout
        answer_to(freeze, reserved_reply()).model_copy(update={"tenant_id": B.tenant_id}),  # another tenant's
    ]
    for env in cases:
        _, out = await world.handle(handlers.advance_checkout, env)
        assert out == [] and "save" not in world.store.statements, env
    assert world.store.checkouts == before


async def test_credit_reserved_for_a_saga_that_failed_meanwhile_is_released():
    world = World()
    freeze = await placed(world)
    await world.handle(handlers.advance_checkout, answer_to(freeze, Failure(code="sku_unknown", message="no sku")))
    _, out = await world.handle(handlers.advance_checkout, answer_to(freeze, reserved_reply()))
    assert [(t, e.payload) for t, _, e in out] == [
        ("credit.commands.v1", ReleaseCredit(reservation_id="res_1", bill_to_id=CUSTOMER))]
    assert world.store.statements == ["get_for_update"] and world.checkout().state is S.FAILED


# ---- the same key again ------------------------------------------------------------------------------------

async def test_the_same_key_while_active_is_answered_to_the_latest_ask():
    world = World()
    freeze = await placed(world)
    reply, out = await world.handle(handlers.place_order, ask(place("key_1"), correlation="corr_2",
                                                              reply_to="gateway.replies.2", request_id="req_2"))
    assert (reply, out) == (None, [])
    assert world.store.statements == ["for_placing", "save"]
    await world.handle(handlers.advance_checkout, answer_to(freeze, priced_reply()))
    _, out = await world.handle(handlers.advance_checkout, answer_to(freeze, reserved_reply()))
    assert out[-1][:2] == ("gateway.replies.2", "corr_2") and out[-1][2].request_id == "req_2"


async def test_the_same_key_after_expiry_starts_attempt_two_and_ignores_attempt_one():
    world = World()
    first = await placed(world)
    world.now = NOW + TIMEOUT + timedelta(seconds=1)
    sweeper = world.uow(None, Unscoped("test: the sweeper"))
    assert await handlers.expire_overdue(sweeper) == 1
    assert world.checkout().state is S.EXPIRED
    assert [(t, e.payload, e.tenant_id) for t, _, e in sweeper.outbox.envelopes] == [
        ("cart.commands.v1", ReleaseCart(cart_id=CART, checkout_id="chk_1"), A.tenant_id),
        ("credit.commands.v1", ReleaseCredit(reservation_id="res_1", bill_to_id=CUSTOMER), A.tenant_id),
        (GATEWAY, Failure(code="upstream_timeout", message="checkout did not complete in time; retry with the same "
                          "Idempotency-Key"), A.tenant_id),
    ]

    reply, out = await world.handle(handlers.place_order, ask(place("key_1"), correlation="corr_2"))
    assert reply is None
    [(_, _, second)] = out
    assert (second.correlation_id, second.payload.then.reservation_id) == ("chk_1:2", "res_2")
    co = world.checkout()
    assert (co.state, co.attempt, co.reservation_id) == (S.AWAITING, 2, "res_2")

    # attempt 1's late replies change nothing; its late reservation was released by the expiry
    for late in (priced_reply(), reserved_reply("res_1")):
        _, out = await world.handle(handlers.advance_checkout, answer_to(first, late))
        assert out == [] and world.checkout() == co
    await world.handle(handlers.advance_checkout, answer_to(second, priced_reply()))
    _, out = await world.handle(handlers.advance_checkout, answer_to(second, reserved_reply("res_2")))
    assert world.checkout().state is S.CONFIRMED and out[-1][:2] == (GATEWAY, "corr_2")


# ---- the sweeper and the resume, across tenants --------------------------------------------------------------

async def test_the_sweeper_expires_every_tenants_overdue_checkouts_in_batches():
    world = World()
    await placed(world, A)
    await placed(world, B)
    world.now = NOW + TIMEOUT + timedelta(seconds=1)
    sweeper = world.uow(None, Unscoped("test: the sweeper"))
    assert await handlers.expire_overdue(sweeper, limit=1) == 1  # one batch of one
    assert await handlers.expire_overdue(world.uow(None, Unscoped("test")), limit=5) == 1
    assert await handlers.expire_overdue(world.uow(None, Unscoped("test")), limit=5) == 0
    assert {co.state for _, co in world.store.checkouts.values()} == {S.EXPIRED}
    assert sweeper.outbox.envelopes[0][2].tenant_id == A.tenant_id  # the oldest first, addressed to its tenant


async def test_resume_asks_again_for_what_each_unfinished_saga_awaits():
    world = World()
    freeze_a = await placed(world, A)
    freeze_b = await placed(world, B)
    await world.handle(handlers.advance_checkout, answer_to(freeze_b, priced_reply("chk_2")))
    world.now = NOW + timedelta(seconds=3)
    uow = world.uow(None, Unscoped("test: resume"))
    assert await handlers.resume_checkouts(uow, "", 1) == (1, "chk_1")
    uow2 = world.uow(None, Unscoped("test: resume"))
    assert await handlers.resume_checkouts(uow2, "chk_1", 1) == (1, "chk_2")
    assert await handlers.resume_checkouts(world.uow(None, Unscoped("test")), "chk_2", 1) == (0, "chk_2")
    [(t1, k1, again_a)] = uow.outbox.envelopes
    [(t2, k2, again_b)] = uow2.outbox.envelopes
    assert (t1, k1, again_a.payload, again_a.correlation_id, again_a.reply_to, again_a.tenant_id) == (
        "cart.commands.v1", CART, freeze_a.payload, "chk_1:1", "orders.replies.v1", A.tenant_id)
    assert (t2, k2, again_b.payload, again_b.tenant_id) == ("credit.commands.v1", CUSTOMER, ReserveCredit(
        reservation_id="res_2", checkout_id="chk_2", customer_id=CUSTOMER, bill_to_id=CUSTOMER, amount=TOTALS.total,
        currency="JMD"), B.tenant_id)
    assert {co.step_deadline for _, co in world.store.checkouts.values()} == {world.now + TIMEOUT}


async def test_the_erp_customer_upsert_is_stored_for_the_next_checkout():
    world = World()
    for terms in ("net_30", "net_60"):  # the newest record wins
        await world.handle(handlers.upsert_customer, ask(CustomerUpsert(customer_id=CUSTOMER, name="Buyer",
                                                                        bill_to_id=PARENT, terms=terms)))
    assert world.store.customers[(A, CUSTOMER)] == Customer(CUSTOMER, PARENT, "net_60")
    await world.handle(handlers.upsert_customer, ask(CustomerUpsert(customer_id="cus_2", name="Self")))
    assert world.store.customers[(A, "cus_2")] == Customer("cus_2", "cus_2", "cod")
