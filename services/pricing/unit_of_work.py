"""What a pricing handler is given: the message's transaction, with pricing's repositories on it, and the GCT rates."""

from collections.abc import Mapping

from libs.contracts.money import DEFAULT_GCT_RATES_BP
from libs.runtime.unit_of_work import UnitOfWork

from .repository import Customers, Prices, Products


class PricingUnitOfWork(UnitOfWork):
    products: Products
    prices: Prices
    customers: Customers
    # GCT in basis points by tax category: the deployment's (Settings.gct_rates_bp), bound by `with_rates`
    # since the runtime builds a unit of work from (conn, scope, envelope) only
    rates_bp: Mapping[str, int] = {str(k): v for k, v in DEFAULT_GCT_RATES_BP.items()}

    def __init__(self, conn, scope, incoming=None, **kw):
        super().__init__(conn, scope, incoming, **kw)
        if conn is not None:  # unit tests hand in-memory repositories instead
            self.products = Products(conn)
            self.prices = Prices(conn)
            self.customers = Customers(conn)

    @classmethod
    def with_rates(cls, rates_bp: Mapping[str, int]) -> type["PricingUnitOfWork"]:
        """This unit of work with the deployment's GCT rates (main.py passes it to the runtime)."""
        return type(cls.__name__, (cls,), {"rates_bp": dict(rates_bp), "__module__": cls.__module__})
