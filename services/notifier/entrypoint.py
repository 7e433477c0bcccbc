"""Subscriptions of the notifier."""

from libs.contracts import topics
from libs.contracts.orders import OrderConfirmed
from libs.runtime.context import ServiceContext, subscribe

from . import handlers


def register(ctx: ServiceContext) -> None:
    subscribe(ctx, topics.ORDERS_EVENTS, {OrderConfirmed: handlers.record_order_confirmed})
