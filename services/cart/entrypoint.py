"""Subscriptions of the cart service: which message on which topic goes to which handler."""

from libs.contracts import cart as c
from libs.contracts import topics
from libs.contracts.erp import ProductUpsert
from libs.runtime.context import ServiceContext, subscribe

from . import handlers


def register(ctx: ServiceContext) -> None:
    subscribe(ctx, topics.CART_COMMANDS, {
        c.CreateCart: handlers.create_cart,
        c.AddLine: handlers.add_line,
        c.ChangeLine: handlers.change_line,
        c.RemoveLine: handlers.remove_line,
        c.FreezeCart: handlers.freeze_cart,
        c.CompleteCart: handlers.complete_cart,
        c.ReleaseCart: handlers.release_cart,
    }, queries={c.GetCart: handlers.get_cart})
    subscribe(ctx, topics.ERP_PRODUCTS, {ProductUpsert: handlers.upsert_product})
