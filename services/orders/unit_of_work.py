"""What an orders handler is given: the message's transaction, with orders' repositories on it, and the saga."""

from datetime import timedelta

from libs.runtime.unit_of_work import UnitOfWork

from .domain import CheckoutSaga
from .repository import Checkouts, Customers, Orders


class OrdersUnitOfWork(UnitOfWork):
    checkouts: Checkouts
    orders: Orders
    customers: Customers
    # the saga's rules with the service's step deadline: main.py binds the configured one (`with_saga`)
    saga: CheckoutSaga = CheckoutSaga(step_timeout=timedelta(seconds=5))

    def __init__(self, conn, scope, incoming=None, **kw):
        super().__init__(conn, scope, incoming, **kw)
        if conn is not None:  # unit tests hand in-memory repositories instead
            self.checkouts = Checkouts(conn)
            self.orders = Orders(conn)
            self.customers = Customers(conn)

    @classmethod
    def with_saga(cls, saga: CheckoutSaga) -> type["OrdersUnitOfWork"]:
        """This unit of work with `saga` as every handler's `uow.saga`."""
        return type(cls.__name__, (cls,), {"saga": saga, "__doc__": cls.__doc__})
