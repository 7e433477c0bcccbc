"""Pricing's repositories: prepared statements on the unit of work's connection.

The transaction is scoped to the message's tenant and mode by row-level security (libs/runtime/database.py):
the SQL names business keys only, and tenant_id/livemode default to the scope on insert.
"""

import json
from collections.abc import Iterable, Mapping

from libs.contracts.money import TaxCategory

from .domain import PriceBook, PriceCandidate, Product

# Everything pricing needs to price some products for one customer, in one statement: the products, the
# customer's price list, and the active prices that could apply to it (its own, its price list's, the list
# prices; other customers' and other lists' prices stay out). One row per (product, price), in sku order.
# The domain still decides which of them applies (quantity breaks, precedence).
_BOOK = """
SELECT p.sku, p.name, p.base_uom, p.units, p.tax_category, c.price_list_id AS customer_price_list_id,
       pr.price_id, pr.customer_id, pr.price_list_id, pr.unit_amount, pr.currency, pr.min_quantity
FROM {products} p
LEFT JOIN customers c ON c.customer_id = $2
LEFT JOIN prices pr ON pr.sku = p.sku AND pr.active
     AND (pr.customer_id = $2
          OR (pr.customer_id IS NULL AND (pr.price_list_id IS NULL OR pr.price_list_id = c.price_list_id)))
ORDER BY p.sku, pr.price_id"""

_BY_SKUS = _BOOK.format(products="(SELECT * FROM products WHERE sku = ANY($1::text[]) AND active)")
# a page of active products by sku, after $1 ('' for the first page), $3 of them
_PAGE = _BOOK.format(products="(SELECT * FROM products WHERE active AND sku > $1 ORDER BY sku LIMIT $3)")


def _book(rows, customer_id: str | None) -> PriceBook:
    heads: dict = {}  # sku → its first row (the product's columns)
    prices: dict[str, list[PriceCandidate]] = {}
    for row in rows:
        sku = row["sku"]
        if sku not in heads:
            heads[sku], prices[sku] = row, []
        if row["price_id"] is not None:
            prices[sku].append(PriceCandidate(
                unit_amount=row["unit_amount"], currency=row["currency"], customer_id=row["customer_id"],
                price_list_id=row["price_list_id"], min_quantity=row["min_quantity"], price_id=row["price_id"]))
    price_list_id = next(iter(heads.values()))["customer_price_list_id"] if heads else None
    return PriceBook(customer_id, price_list_id, {
        sku: Product(sku, h["name"], h["base_uom"], json.loads(h["units"]), TaxCategory(h["tax_category"]),
                     tuple(prices[sku]))
        for sku, h in heads.items()})


class Products:
    """The catalog with its prices, read for one customer; and the ERP's product records."""

    def __init__(self, conn):
        self._conn = conn

    async def price_book(self, skus: Iterable[str], customer_id: str | None) -> PriceBook:
        """The active products among `skus` with the prices that could apply to `customer_id`, in one statement.
        (The customer's price list is only read alongside a product: with none found, nothing is priced.)"""
        wanted = sorted(set(skus))
        if not wanted:
            return PriceBook(customer_id, None, {})
        return _book(await self._conn.fetch(_BY_SKUS, wanted, customer_id), customer_id)

    async def page(self, customer_id: str | None, starting_after: str | None, limit: int) -> tuple[PriceBook, bool]:
        """Active products by sku ascending, after `starting_after`, priced for `customer_id`; and whether more
        follow."""
        book = _book(await self._conn.fetch(_PAGE, starting_after or "", customer_id, limit + 1), customer_id)
        if len(book.products) <= limit:
            return book, False
        return PriceBook(customer_id, book.price_list_id, dict(list(book.products.items())[:limit])), True

    async def upsert(self, sku: str, name: str, base_uom: str, units: Mapping[str, int], tax_category: TaxCategory,
                     active: bool) -> None:
        await self._conn.execute("""
            INSERT INTO products (sku, name, base_uom, units, tax_category, active) VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (tenant_id, livemode, sku) DO UPDATE
            SET name = excluded.name, base_uom = excluded.base_uom, units = excluded.units,
                tax_category = excluded.tax_category, active = excluded.active""",
            sku, name, base_uom, json.dumps(dict(units)), tax_category.value, active)


class Prices:
    def __init__(self, conn):
        self._conn = conn

    async def upsert(self, price_id: str, sku: str, customer_id: str | None, price_list_id: str | None,
                     unit_amount: int, currency: str, min_quantity: int, active: bool) -> None:
        await self._conn.execute("""
            INSERT INTO prices (price_id, sku, customer_id, price_list_id, unit_amount, currency, min_quantity, active)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (tenant_id, livemode, price_id) DO UPDATE
            SET sku = excluded.sku, customer_id = excluded.customer_id, price_list_id = excluded.price_list_id,
                unit_amount = excluded.unit_amount, currency = excluded.currency,
                min_quantity = excluded.min_quantity, active = excluded.active""",
            price_id, sku, customer_id, price_list_id, unit_amount, currency, min_quantity, active)


class Customers:
    def __init__(self, conn):
        self._conn = conn

    async def upsert(self, customer_id: str, price_list_id: str | None) -> None:
        """Which price list applies to a customer (None: list prices and its own prices only)."""
        await self._conn.execute("""
            INSERT INTO customers (customer_id, price_list_id) VALUES ($1, $2)
            ON CONFLICT (tenant_id, livemode, customer_id) DO UPDATE SET price_list_id = excluded.price_list_id""",
            customer_id, price_list_id)
