"""What an orders handler is given: the message's transaction, with orders' repositories on it, and the saga."""

from datetime import timedelta
from functools import lru_cache

from libs.runtime.unit_of_work import UnitOfWork

from .domain import CheckoutSaga
from .repository import Checkouts, Counters, Customers, Invoices, Orders, Payments


class OrdersUnitOfWork(UnitOfWork):
    checkouts: Checkouts
    orders: Orders
    customers: Customers
    invoices: Invoices
    payments: Payments
    counters: Counters
    saga: CheckoutSaga  # the saga's rules, with the service's step deadline

    def __init__(self, conn, scope, incoming=None, **kw):
        super().__init__(conn, scope, incoming, **kw)
        timeout_s = getattr(self.settings, "step_timeout_s", 5.0)
        self.saga = _saga(timeout_s)
        if conn is not None:  # unit tests hand in-memory repositories instead
            self.checkouts = Checkouts(conn)
            self.orders = Orders(conn)
            self.customers = Customers(conn)
            self.invoices = Invoices(conn)
            self.payments = Payments(conn)
            self.counters = Counters(conn)


@lru_cache(maxsize=4)
def _saga(step_timeout_s: float) -> CheckoutSaga:
    return CheckoutSaga(step_timeout=timedelta(seconds=step_timeout_s))
