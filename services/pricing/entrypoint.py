"""Subscriptions of the pricing service: which message on which topic goes to which handler."""

from libs.contracts import pricing as p
from libs.contracts import topics
from libs.contracts.erp import CustomerUpsert, PriceUpsert, ProductUpsert
from libs.runtime.context import ServiceContext, subscribe

from . import handlers


def register(ctx: ServiceContext) -> None:
    subscribe(ctx, topics.PRICING_COMMANDS, {
        p.PriceCheckout: handlers.price_checkout,  # claimed: it sends ReserveCredit
    }, queries={
        p.ListProducts: handlers.list_products,
        p.GetProduct: handlers.get_product,
        p.PriceLines: handlers.price_lines,
        p.PriceCart: handlers.price_cart,
    })
    subscribe(ctx, topics.ERP_PRODUCTS, {ProductUpsert: handlers.upsert_product})
    subscribe(ctx, topics.ERP_PRICES, {PriceUpsert: handlers.upsert_price})
    subscribe(ctx, topics.ERP_CUSTOMERS, {CustomerUpsert: handlers.upsert_customer})
