"""What a pricing handler is given: the message's transaction, with pricing's repositories on it, and the GCT rates."""

from collections.abc import Mapping

from libs.contracts.money import DEFAULT_GCT_RATES_BP
from libs.runtime.unit_of_work import UnitOfWork

from .repository import Customers, Prices, Products


class PricingUnitOfWork(UnitOfWork):
    products: Products
    prices: Prices
    customers: Customers
    def __init__(self, conn, scope, incoming=None, **kw):
        super().__init__(conn, scope, incoming, **kw)
        if conn is not None:  # unit tests hand in-memory repositories instead
            self.products = Products(conn)
            self.prices = Prices(conn)
            self.customers = Customers(conn)

    @property
    def rates_bp(self) -> Mapping[str, int]:
        """GCT in basis points by tax category: the deployment's (Settings.gct_rates_bp), else the defaults."""
        rates = getattr(self.settings, "gct_rates_bp", None) or DEFAULT_GCT_RATES_BP
        return {str(k): v for k, v in rates.items()}
