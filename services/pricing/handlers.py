"""Pricing's handlers: load the price book, let the domain price, answer; ERP master data stored once per message.

ListProducts, GetProduct and PriceLines are queries (nothing stored, nothing claimed). PriceCheckout is a command:
it hands the checkout on to credit (ReserveCredit) and answers the saga with CheckoutPriced.
"""

from libs.contracts import pricing as p
from libs.contracts import topics
from libs.contracts.base import Rejection
from libs.contracts.credit import ReserveCredit
from libs.contracts.erp import CustomerUpsert, PriceUpsert, ProductUpsert
from libs.contracts.errors import ErrorCode
from libs.contracts.money import DEFAULT_CURRENCY

from .domain import PriceBook, Product
from .unit_of_work import PricingUnitOfWork


def _view(product: Product, book: PriceBook) -> p.ProductView:
    price = book.unit_price(product.sku)
    return p.ProductView(
        sku=product.sku, name=product.name, base_uom=product.base_uom, units=dict(product.units),
        tax_category=product.tax_category,
        unit_price=price.unit_amount if price else None,
        currency=price.currency if price else DEFAULT_CURRENCY,
        price_source=price.source if price else None,
    )


async def list_products(q: p.ListProducts, uow: PricingUnitOfWork) -> p.ProductList:
    """A page of the catalog, each product with the price of one base unit for the customer (if one is named)."""
    book, has_more = await uow.products.page(q.customer_id, q.starting_after, q.limit)
    return p.ProductList(products=[_view(x, book) for x in book.products.values()], has_more=has_more)


async def get_product(q: p.GetProduct, uow: PricingUnitOfWork) -> p.ProductView:
    book = await uow.products.price_book([q.sku], q.customer_id)
    product = book.products.get(q.sku)
    if product is None:
        raise Rejection(ErrorCode.RESOURCE_MISSING, f"no product with sku {q.sku!r}", "sku")
    return _view(product, book)


async def _price(uow: PricingUnitOfWork, cart_id: str, customer_id: str, lines: list[p.LineToPrice]) -> p.LinesPriced:
    """All the lines' products and prices in one statement, then the domain prices them (or refuses)."""
    book = await uow.products.price_book([line.sku for line in lines], customer_id)
    return book.price(cart_id, lines, uow.rates_bp)


async def price_lines(q: p.PriceLines, uow: PricingUnitOfWork) -> p.LinesPriced:
    """A pure query: the same lines priced twice give the same answer, so nothing is stored."""
    return await _price(uow, q.cart_id, q.customer_id, q.lines)


async def price_cart(q: p.PriceCart, uow: PricingUnitOfWork) -> p.CartPriced:
    """A cart the cart service handed on (GetCart with `then_price`): its lines priced, answered with the cart."""
    lines = [p.LineToPrice(line_id=x.line_id, sku=x.sku, base_quantity=x.base_quantity) for x in q.cart.lines]
    return p.CartPriced(cart=q.cart, priced=await _price(uow, q.cart.cart_id, q.cart.customer_id, lines))


async def price_checkout(cmd: p.PriceCheckout, uow: PricingUnitOfWork) -> p.CheckoutPriced:
    """Price a frozen cart as PriceLines does, hand the checkout on to credit (ReserveCredit for the total, on the
    saga's reply_to and correlation) and answer the saga with the priced lines. A pricing refusal is answered to
    the saga as a Failure, and nothing is sent to credit."""
    lines = [p.LineToPrice(line_id=x.line_id, sku=x.sku, base_quantity=x.base_quantity) for x in cmd.lines]
    priced = await _price(uow, cmd.cart_id, cmd.customer_id, lines)
    reserve = ReserveCredit(reservation_id=cmd.then.reservation_id, checkout_id=cmd.checkout_id,
                            customer_id=cmd.customer_id, bill_to_id=cmd.then.bill_to_id, amount=priced.total,
                            currency=priced.currency)
    uow.outbox.add(topics.CREDIT_COMMANDS, cmd.then.bill_to_id, reserve,
                   reply_to=uow.message.reply_to, correlation_id=uow.message.correlation_id)
    return p.CheckoutPriced(cart_id=cmd.cart_id, checkout_id=cmd.checkout_id, cart_version=cmd.cart_version,
                            lines=cmd.lines, priced=priced)


async def upsert_product(rec: ProductUpsert, uow: PricingUnitOfWork) -> None:
    await uow.products.upsert(rec.sku, rec.name, rec.base_uom, dict(rec.units), rec.tax_category, rec.active)


async def upsert_price(rec: PriceUpsert, uow: PricingUnitOfWork) -> None:
    await uow.prices.upsert(rec.price_id, rec.sku, rec.customer_id, rec.price_list_id, rec.unit_amount, rec.currency,
                            rec.min_quantity, rec.active)


async def upsert_customer(rec: CustomerUpsert, uow: PricingUnitOfWork) -> None:
    await uow.customers.upsert(rec.customer_id, rec.price_list_id)
