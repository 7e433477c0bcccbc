"""Pricing handlers: catalog and price queries answered at once; ERP master data stored once per message."""

from libs.contracts import pricing as p
from libs.contracts.base import Rejection
from libs.contracts.envelope import Envelope
from libs.contracts.erp import CustomerUpsert, PriceUpsert, ProductUpsert
from libs.contracts.money import DEFAULT_CURRENCY, TaxCategory
from libs.runtime.messaging import ServiceContext

from . import domain
from .repository import PricingRepository
from .tables import Product


def product_view(product: Product, price: domain.ResolvedPrice | None) -> p.ProductView:
    return p.ProductView(
        sku=product.sku, name=product.name, base_uom=product.base_uom, units=product.units,
        tax_category=TaxCategory(product.tax_category),
        unit_price=price.unit_amount if price else None,
        currency=price.currency if price else DEFAULT_CURRENCY,
        price_source=price.source if price else None,
    )


async def _views(repo: PricingRepository, products: list[Product], customer_id: str | None) -> list[p.ProductView]:
    """Each product with the price of one base unit: the customer's contract price, else the list price."""
    price_list_id = await repo.price_list_of(customer_id)
    candidates = await repo.price_candidates([x.sku for x in products], customer_id) if products else {}
    return [
        product_view(x, domain.resolve_unit_price(candidates.get(x.sku, ()), customer_id, price_list_id, 1))
        for x in products
    ]


async def list_products(cmd: p.ListProducts, env: Envelope, ctx: ServiceContext) -> None:
    async with ctx.uow(env) as uow:
        repo = PricingRepository(uow.session, env)
        products, has_more = await repo.page_of_products(cmd.starting_after, cmd.limit)
        reply = p.ProductList(products=await _views(repo, products, cmd.customer_id), has_more=has_more)
    await ctx.reply_now(env, reply)


async def get_product(cmd: p.GetProduct, env: Envelope, ctx: ServiceContext) -> None:
    async with ctx.uow(env) as uow:
        repo = PricingRepository(uow.session, env)
        product = await repo.get_product(cmd.sku)
        if product is None:
            reply = Rejection("resource_missing", f"no product with sku {cmd.sku!r}", "sku").failure()
        else:
            [reply] = await _views(repo, [product], cmd.customer_id)
    await ctx.reply_now(env, reply)


async def price_lines(cmd: p.PriceLines, env: Envelope, ctx: ServiceContext) -> None:
    """A pure query: the same lines priced twice give the same answer, so nothing is stored."""
    rates: dict[str, int] = ctx.settings.gct_rates_bp  # type: ignore[attr-defined]  # pricing's own Settings
    async with ctx.uow(env) as uow:
        repo = PricingRepository(uow.session, env)
        skus = {line.sku for line in cmd.lines}
        products = await repo.products(skus) if skus else {}
        candidates = await repo.price_candidates(skus, cmd.customer_id) if skus else {}
        price_list_id = await repo.price_list_of(cmd.customer_id)
    try:
        reply = domain.price_cart(
            cmd.cart_id, cmd.lines, {sku: TaxCategory(x.tax_category) for sku, x in products.items()},
            candidates, cmd.customer_id, price_list_id, rates,
        )
    except Rejection as r:
        reply = r.failure()
    await ctx.reply_now(env, reply)


async def upsert_product(rec: ProductUpsert, env: Envelope, ctx: ServiceContext) -> None:
    async with ctx.uow(env) as uow:
        await uow.claim()
        await PricingRepository(uow.session, env).upsert_product(
            sku=rec.sku, name=rec.name, base_uom=rec.base_uom, units=dict(rec.units),
            tax_category=rec.tax_category.value, active=rec.active,
        )
        await uow.commit()


async def upsert_price(rec: PriceUpsert, env: Envelope, ctx: ServiceContext) -> None:
    async with ctx.uow(env) as uow:
        await uow.claim()
        await PricingRepository(uow.session, env).upsert_price(
            price_id=rec.price_id, sku=rec.sku, customer_id=rec.customer_id, price_list_id=rec.price_list_id,
            unit_amount=rec.unit_amount, currency=rec.currency, min_quantity=rec.min_quantity, active=rec.active,
        )
        await uow.commit()


async def upsert_customer(rec: CustomerUpsert, env: Envelope, ctx: ServiceContext) -> None:
    async with ctx.uow(env) as uow:
        await uow.claim()
        await PricingRepository(uow.session, env).upsert_customer(
            customer_id=rec.customer_id, price_list_id=rec.price_list_id,
        )
        await uow.commit()
