"""What a cart handler is given: the message's transaction, with cart's repositories on it."""

from libs.runtime.unit_of_work import UnitOfWork

from .repository import Carts, Products


class CartUnitOfWork(UnitOfWork):
    carts: Carts
    products: Products

    def __init__(self, conn, scope, incoming=None, **kw):
        super().__init__(conn, scope, incoming, **kw)
        if conn is not None:  # unit tests hand in-memory repositories instead
            self.carts = Carts(conn)
            self.products = Products(conn)
