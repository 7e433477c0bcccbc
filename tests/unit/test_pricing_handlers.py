"""Pricing's handlers over an in-memory unit of work: no broker, no database.

The in-memory repositories have the real ones' methods (services/pricing/repository.py) and keep the same
rows; what a handler answers, emits and stores is checked for every path, refusals and repeats included.
"""

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from dataclasses import dataclass, field

from types import SimpleNamespace

import pytest

from libs.contracts import topics
from libs.contracts.base import Rejection
from libs.contracts.cart import CartLine, CartView, CheckoutContinuation
from libs.contracts.credit import ReserveCredit
from libs.contracts.envelope import Envelope
from libs.contracts.erp import CustomerUpsert, PriceUpsert, ProductUpsert
from libs.contracts.fields import MAX_AMOUNT
from libs.contracts.money import DEFAULT_GCT_RATES_BP, TaxCategory
from libs.contracts.pricing import (CartPriced, CheckoutPriced, PriceCart, GetProduct, LinesPriced, LineToPrice, ListProducts, PriceCheckout,
                                    PriceLines)
from libs.runtime.database import Scope
from services.pricing import handlers
from services.pricing.domain import PriceBook, PriceCandidate, Product
from services.pricing.unit_of_work import PricingUnitOfWork

TENANT, CUSTOMER, OTHER = "ten_A", "cus_A", "cus_B"
RATES = {str(k): v for k, v in DEFAULT_GCT_RATES_BP.items()}


# --- in-memory repositories: the real ones' methods, the same rows ------------------------------------------


@dataclass
class Rows:
    products: dict[str, dict] = field(default_factory=dict)  # sku → columns
    prices: dict[str, dict] = field(default_factory=dict)  # price id → columns
    customers: dict[str, str | None] = field(default_factory=dict)  # customer id → price list id


class InMemoryProducts:
    def __init__(self, rows: Rows):
        self.rows = rows

    def _book(self, skus: list[str], customer_id: str | None) -> PriceBook:
        price_list_id = self.rows.customers.get(customer_id) if customer_id else None
        products = {}
        for sku in sorted(skus):
            p = self.rows.products.get(sku)
            if p is None or not p["active"]:
                continue
            prices = tuple(
                PriceCandidate(unit_amount=x["unit_amount"], currency=x["currency"], customer_id=x["customer_id"],
                               price_list_id=x["price_list_id"], min_quantity=x["min_quantity"], price_id=pid)
                for pid, x in sorted(self.rows.prices.items())
                if x["sku"] == sku and x["active"] and (
                    (customer_id is not None and x["customer_id"] == customer_id)
                    or (x["customer_id"] is None and x["price_list_id"] in (None, price_list_id))))
            products[sku] = Product(sku, p["name"], p["base_uom"], dict(p["units"]), p["tax_category"], prices)
        return PriceBook(customer_id, price_list_id if products else None, products)

    async def price_book(self, skus: Iterable[str], customer_id: str | None) -> PriceBook:
        return self._book(list(set(skus)), customer_id)

    async def page(self, customer_id: str | None, starting_after: str | None, limit: int) -> tuple[PriceBook, bool]:
        after = sorted(s for s, p in self.rows.products.items() if p["active"] and s > (starting_after or ""))
        return self._book(after[:limit], customer_id), len(after) > limit

    async def upsert(self, sku: str, name: str, base_uom: str, units: Mapping[str, int], tax_category: TaxCategory,
                     active: bool) -> None:
        self.rows.products[sku] = dict(name=name, base_uom=base_uom, units=dict(units), tax_category=tax_category,
                                       active=active)


class InMemoryPrices:
    def __init__(self, rows: Rows):
        self.rows = rows

    async def upsert(self, price_id: str, sku: str, customer_id: str | None, price_list_id: str | None,
                     unit_amount: int, currency: str, min_quantity: int, active: bool) -> None:
        self.rows.prices[price_id] = dict(sku=sku, customer_id=customer_id, price_list_id=price_list_id,
                                          unit_amount=unit_amount, currency=currency, min_quantity=min_quantity,
                                          active=active)


class InMemoryCustomers:
    def __init__(self, rows: Rows):
        self.rows = rows

    async def upsert(self, customer_id: str, price_list_id: str | None) -> None:
        self.rows.customers[customer_id] = price_list_id


def uow_for(rows: Rows, payload, *, rates: Mapping[str, int] | None = None, **envelope) -> PricingUnitOfWork:
    env = Envelope(tenant_id=TENANT, livemode=False, payload=payload, **envelope)
    settings = None if rates is None else SimpleNamespace(gct_rates_bp=rates)
    uow = PricingUnitOfWork(None, Scope(TENANT, False), env, settings=settings)
    uow.products, uow.prices, uow.customers = InMemoryProducts(rows), InMemoryPrices(rows), InMemoryCustomers(rows)
    return uow


async def run(rows: Rows, handler, payload, **kw):
    """The handler's reply and what it queued in the outbox."""
    uow = uow_for(rows, payload, **kw)
    reply = await handler(payload, uow)
    return reply, uow.outbox.envelopes


async def load(rows: Rows, *records) -> None:
    """ERP records through their handlers, as the ERP topics deliver them."""
    by_type = {ProductUpsert: handlers.upsert_product, PriceUpsert: handlers.upsert_price,
               CustomerUpsert: handlers.upsert_customer}
    for rec in records:
        reply, emitted = await run(rows, by_type[type(rec)], rec)
        assert (reply, emitted) == (None, [])


def catalog() -> list:
    """RICE (zero-rated): list 12.50, wholesale 11.80, 11.00 for cus_A from 24; SOAP (standard): list 10.03 and a
    retail list price that is nobody's here; MEDS (exempt): list 49.99; OLD: inactive."""
    return [
        ProductUpsert(sku="RICE", name="Rice 1 kg", base_uom="EA", units={"CS": 24},
                      tax_category=TaxCategory.ZERO_RATED),
        ProductUpsert(sku="SOAP", name="Soap", base_uom="EA", tax_category=TaxCategory.STANDARD),
        ProductUpsert(sku="MEDS", name="Medicine", base_uom="EA", tax_category=TaxCategory.EXEMPT),
        ProductUpsert(sku="OLD", name="Discontinued", base_uom="EA", active=False),
        PriceUpsert(price_id="rice-list", sku="RICE", unit_amount=1_250),
        PriceUpsert(price_id="rice-wholesale", sku="RICE", unit_amount=1_180, price_list_id="wholesale"),
        PriceUpsert(price_id="rice-cus-a-24", sku="RICE", unit_amount=1_100, customer_id=CUSTOMER, min_quantity=24),
        PriceUpsert(price_id="rice-cus-b", sku="RICE", unit_amount=1, customer_id=OTHER),
        PriceUpsert(price_id="soap-list", sku="SOAP", unit_amount=1_003),
        PriceUpsert(price_id="soap-retail", sku="SOAP", unit_amount=2, price_list_id="retail"),
        PriceUpsert(price_id="meds-list", sku="MEDS", unit_amount=4_999),
        PriceUpsert(price_id="old-list", sku="OLD", unit_amount=100),
        CustomerUpsert(customer_id=CUSTOMER, name="A", price_list_id="wholesale"),
        CustomerUpsert(customer_id=OTHER, name="B"),
    ]


@pytest.fixture
async def rows() -> Rows:
    r = Rows()
    await load(r, *catalog())
    return r


LINES = [LineToPrice(line_id="cli_1", sku="RICE", base_quantity=24),
         LineToPrice(line_id="cli_2", sku="SOAP", base_quantity=3),
         LineToPrice(line_id="cli_3", sku="MEDS", base_quantity=2)]


def cart_line(line_id: str, sku: str, base_quantity: int) -> CartLine:
    return CartLine(line_id=line_id, sku=sku, order_uom="EA", order_quantity=base_quantity, factor=1, base_uom="EA",
                    base_quantity=base_quantity)


CART_LINES = [cart_line(x.line_id, x.sku, x.base_quantity) for x in LINES]


def price_checkout(lines: list[CartLine] = CART_LINES) -> PriceCheckout:
    return PriceCheckout(cart_id="cart_1", customer_id=CUSTOMER, checkout_id="chk_1", cart_version=7, lines=lines,
                         then=CheckoutContinuation(reservation_id="res_1", bill_to_id="cus_P"))


# --- PriceLines ---------------------------------------------------------------------------------------------


async def test_price_lines_prices_each_line_for_the_customer_hand_computed(rows):
    q = PriceLines(cart_id="cart_1", customer_id=CUSTOMER, lines=LINES)
    reply, emitted = await run(rows, handlers.price_lines, q)
    assert emitted == []  # a query: nothing queued
    assert isinstance(reply, LinesPriced) and reply.cart_id == "cart_1"
    assert [(x.line_id, x.unit_price, x.price_source, x.subtotal, x.tax, x.total) for x in reply.lines] == [
        ("cli_1", 1_100, "customer", 26_400, 0, 26_400),  # its own price from 24, zero-rated
        ("cli_2", 1_003, "list", 3_009, 451, 3_460),  # 15 % of 30.09 = 4.5135 → 4.51; retail is not its list
        ("cli_3", 4_999, "list", 9_998, 0, 9_998),  # exempt
    ]
    assert (reply.currency, reply.subtotal, reply.tax, reply.total) == ("JMD", 39_407, 451, 39_858)


async def test_price_lines_below_the_customer_break_falls_to_its_price_list_and_others_get_the_list(rows):
    line = [LineToPrice(line_id="cli_1", sku="RICE", base_quantity=23)]
    mine, _ = await run(rows, handlers.price_lines, PriceLines(cart_id="cart_1", customer_id=CUSTOMER, lines=line))
    theirs, _ = await run(rows, handlers.price_lines, PriceLines(cart_id="cart_1", customer_id=OTHER, lines=line))
    stranger, _ = await run(rows, handlers.price_lines, PriceLines(cart_id="cart_1", customer_id="cus_C", lines=line))
    assert (mine.lines[0].unit_price, mine.lines[0].price_source) == (1_180, "price_list")
    assert (theirs.lines[0].unit_price, theirs.lines[0].price_source) == (1, "customer")
    assert (stranger.lines[0].unit_price, stranger.lines[0].price_source) == (1_250, "list")


async def test_price_lines_uses_the_deployments_gct_rates(rows):
    line = [LineToPrice(line_id="cli_1", sku="SOAP", base_quantity=3)]
    reply, _ = await run(rows, handlers.price_lines, PriceLines(cart_id="cart_1", customer_id=CUSTOMER, lines=line),
                         rates={**RATES, "standard": 1_000})
    assert (reply.lines[0].tax_rate_bp, reply.lines[0].tax, reply.total) == (1_000, 301, 3_310)


@pytest.mark.parametrize("sku", ["NOPE", "OLD"])
async def test_price_lines_refuses_an_unknown_or_inactive_sku(rows, sku):
    lines = [LINES[0], LineToPrice(line_id="cli_9", sku=sku, base_quantity=1)]
    with pytest.raises(Rejection) as refused:
        await handlers.price_lines(PriceLines(cart_id="cart_1", customer_id=CUSTOMER, lines=lines),
                                   uow_for(rows, PriceLines(cart_id="cart_1", customer_id=CUSTOMER, lines=lines)))
    assert (refused.value.code, refused.value.param) == ("sku_unknown", "sku")


async def test_price_lines_refuses_a_sku_with_no_price(rows):
    await load(rows, ProductUpsert(sku="NEW", name="New", base_uom="EA"))
    q = PriceLines(cart_id="cart_1", customer_id=CUSTOMER,
                   lines=[LineToPrice(line_id="cli_1", sku="NEW", base_quantity=1)])
    with pytest.raises(Rejection) as refused:
        await handlers.price_lines(q, uow_for(rows, q))
    assert refused.value.code == "sku_unknown"


async def test_price_lines_of_no_lines_is_zero(rows):
    reply, _ = await run(rows, handlers.price_lines, PriceLines(cart_id="cart_1", customer_id=CUSTOMER, lines=[]))
    assert (reply.lines, reply.subtotal, reply.tax, reply.total) == ([], 0, 0, 0)


# --- PriceCheckout ------------------------------------------------------------------------------------------


async def test_price_checkout_answers_the_saga_and_hands_the_checkout_on_to_credit(rows):
    cmd = price_checkout()
    uow = uow_for(rows, cmd, reply_to="orders.replies.v1", correlation_id="chk_1:1", request_id="req_1")
    reply = await handlers.price_checkout(cmd, uow)
    priced, _ = await run(rows, handlers.price_lines, PriceLines(cart_id="cart_1", customer_id=CUSTOMER, lines=LINES))
    assert reply == CheckoutPriced(cart_id="cart_1", checkout_id="chk_1", cart_version=7, lines=CART_LINES,
                                   priced=priced)  # exactly as PriceLines prices the same lines
    [(topic, key, env)] = uow.outbox.envelopes
    assert (topic, key) == (topics.CREDIT_COMMANDS.name, "cus_P")  # keyed by the bill-to account
    assert env.payload == ReserveCredit(reservation_id="res_1", checkout_id="chk_1", customer_id=CUSTOMER,
                                        bill_to_id="cus_P", amount=39_858, currency="JMD")
    # credit answers the saga directly, on the saga's correlation; same tenant, request, and caused by this message
    assert (env.reply_to, env.correlation_id) == ("orders.replies.v1", "chk_1:1")
    assert (env.tenant_id, env.livemode, env.request_id, env.causation_id) == (TENANT, False, "req_1",
                                                                                uow.message.message_id)


async def test_price_cart_answers_the_cart_with_its_lines_priced_as_price_lines_does(rows):
    cmd = price_checkout()
    cart = CartView(cart_id="cart_1", customer_id=CUSTOMER, status="open", version=7, lines=CART_LINES,
                    created_at=datetime(2026, 12, 1, tzinfo=UTC), updated_at=datetime(2026, 12, 1, tzinfo=UTC))
    answer, emitted = await run(rows, handlers.price_cart, PriceCart(cart=cart))
    priced, _ = await run(rows, handlers.price_lines, PriceLines(cart_id="cart_1", customer_id=CUSTOMER, lines=LINES))
    assert answer == CartPriced(cart=cart, priced=priced) and emitted == []
    assert cmd.lines == cart.lines


async def test_price_checkout_uses_each_lines_base_quantity(rows):
    # 1 case of 24: the base quantity decides the price break, not the order quantity
    line = CartLine(line_id="cli_1", sku="RICE", order_uom="CS", order_quantity=1, factor=24, base_uom="EA",
                    base_quantity=24)
    reply, [(_, _, env)] = await run(rows, handlers.price_checkout, price_checkout([line]))
    assert [(x.line_id, x.base_quantity, x.unit_price) for x in reply.priced.lines] == [("cli_1", 24, 1_100)]
    assert reply.lines == [line] and env.payload.amount == 26_400


@pytest.mark.parametrize("lines, code", [
    ([cart_line("cli_1", "RICE", 1), cart_line("cli_2", "NOPE", 1)], "sku_unknown"),
    ([cart_line("cli_1", "RICE", 1), cart_line("cli_2", "GOLD", 2)], "amount_too_large"),
])
async def test_a_checkout_that_cannot_be_priced_is_refused_and_credit_is_not_asked(rows, lines, code):
    await load(rows, ProductUpsert(sku="GOLD", name="Gold", base_uom="EA", tax_category=TaxCategory.ZERO_RATED),
               PriceUpsert(price_id="gold-list", sku="GOLD", unit_amount=MAX_AMOUNT))
    cmd = price_checkout(lines)
    uow = uow_for(rows, cmd, reply_to="orders.replies.v1", correlation_id="chk_1:1")
    with pytest.raises(Rejection) as refused:
        await handlers.price_checkout(cmd, uow)
    assert refused.value.code == code
    assert uow.outbox.envelopes == []


async def test_a_checkout_in_two_currencies_is_refused(rows):
    await load(rows, PriceUpsert(price_id="meds-usd", sku="MEDS", unit_amount=10, currency="USD", customer_id=CUSTOMER))
    cmd = price_checkout()
    uow = uow_for(rows, cmd)
    with pytest.raises(Rejection) as refused:
        await handlers.price_checkout(cmd, uow)
    assert (refused.value.code, refused.value.param) == ("parameter_invalid", "lines")
    assert uow.outbox.envelopes == []


async def test_price_checkout_sent_again_gives_the_same_answer_and_the_same_reservation(rows):
    """The saga re-sends its current command after a restart: the same prices, the same ReserveCredit (credit is
    idempotent per reservation id); a redelivery of one message is the inbox's to skip."""
    first, [(_, _, one)] = await run(rows, handlers.price_checkout, price_checkout(), correlation_id="chk_1:1")
    again, [(_, _, two)] = await run(rows, handlers.price_checkout, price_checkout(), correlation_id="chk_1:1")
    assert first == again and one.payload == two.payload
    assert one.message_id != two.message_id  # each send is its own message


# --- the catalog --------------------------------------------------------------------------------------------


async def test_get_product_shows_the_customers_price_of_one_base_unit(rows):
    mine, emitted = await run(rows, handlers.get_product, GetProduct(sku="RICE", customer_id=CUSTOMER))
    anyone, _ = await run(rows, handlers.get_product, GetProduct(sku="RICE"))
    assert emitted == []
    assert (mine.sku, mine.name, mine.base_uom, mine.units, mine.tax_category) == (
        "RICE", "Rice 1 kg", "EA", {"CS": 24}, TaxCategory.ZERO_RATED)
    assert (mine.unit_price, mine.price_source, mine.currency) == (1_180, "price_list", "JMD")  # its break is at 24
    assert (anyone.unit_price, anyone.price_source) == (1_250, "list")


async def test_get_product_of_a_product_without_a_price_shows_none(rows):
    await load(rows, ProductUpsert(sku="NEW", name="New", base_uom="EA"))
    view, _ = await run(rows, handlers.get_product, GetProduct(sku="NEW", customer_id=CUSTOMER))
    assert (view.unit_price, view.price_source, view.currency) == (None, None, "JMD")


@pytest.mark.parametrize("sku", ["NOPE", "OLD"])
async def test_get_product_of_an_unknown_or_inactive_sku_is_resource_missing(rows, sku):
    q = GetProduct(sku=sku, customer_id=CUSTOMER)
    with pytest.raises(Rejection) as refused:
        await handlers.get_product(q, uow_for(rows, q))
    assert (refused.value.code, refused.value.param) == ("resource_missing", "sku")


async def test_list_products_pages_the_active_catalog_by_sku(rows):
    first, emitted = await run(rows, handlers.list_products, ListProducts(customer_id=CUSTOMER, limit=2))
    assert emitted == []
    assert ([x.sku for x in first.products], first.has_more) == (["MEDS", "RICE"], True)
    assert [(x.unit_price, x.price_source) for x in first.products] == [(4_999, "list"), (1_180, "price_list")]
    rest, _ = await run(rows, handlers.list_products,
                        ListProducts(customer_id=CUSTOMER, limit=2, starting_after="RICE"))
    assert ([x.sku for x in rest.products], rest.has_more) == (["SOAP"], False)  # OLD is inactive
    exact, _ = await run(rows, handlers.list_products, ListProducts(limit=3))
    assert ([x.sku for x in exact.products], exact.has_more) == (["MEDS", "RICE", "SOAP"], False)
    assert [x.price_source for x in exact.products] == ["list", "list", "list"]
    past, _ = await run(rows, handlers.list_products, ListProducts(starting_after="SOAP"))
    assert (past.products, past.has_more) == ([], False)


# --- ERP master data ----------------------------------------------------------------------------------------


async def test_erp_records_replace_what_was_there_and_a_repeat_changes_nothing(rows):
    q = PriceLines(cart_id="cart_1", customer_id=CUSTOMER,
                   lines=[LineToPrice(line_id="cli_1", sku="RICE", base_quantity=1)])
    changed = [
        ProductUpsert(sku="RICE", name="Rice 2 kg", base_uom="EA", tax_category=TaxCategory.STANDARD),
        PriceUpsert(price_id="rice-list", sku="RICE", unit_amount=1_300),
        CustomerUpsert(customer_id=CUSTOMER, name="A"),  # no price list any more
    ]
    await load(rows, *changed)
    state = (dict(rows.products), dict(rows.prices), dict(rows.customers))
    await load(rows, *changed)  # the same records again (a replay, or the ERP re-publishing)
    assert (rows.products, rows.prices, rows.customers) == state
    reply, _ = await run(rows, handlers.price_lines, q)
    assert (reply.lines[0].unit_price, reply.lines[0].price_source, reply.lines[0].tax) == (1_300, "list", 195)
    view, _ = await run(rows, handlers.get_product, GetProduct(sku="RICE"))
    assert (view.name, view.units) == ("Rice 2 kg", {})


async def test_an_inactive_price_or_product_stops_applying(rows):
    await load(rows, PriceUpsert(price_id="rice-wholesale", sku="RICE", unit_amount=1_180, price_list_id="wholesale",
                                 active=False))
    view, _ = await run(rows, handlers.get_product, GetProduct(sku="RICE", customer_id=CUSTOMER))
    assert (view.unit_price, view.price_source) == (1_250, "list")
    await load(rows, ProductUpsert(sku="RICE", name="Rice 1 kg", base_uom="EA", active=False))
    q = GetProduct(sku="RICE", customer_id=CUSTOMER)
    with pytest.raises(Rejection):
        await handlers.get_product(q, uow_for(rows, q))
