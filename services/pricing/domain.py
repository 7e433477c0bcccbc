"""Pricing rules, free of I/O: which contract price applies to a line, and its GCT."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from libs.contracts.base import Rejection
from libs.contracts.errors import ErrorCode
from libs.contracts.fields import MAX_AMOUNT
from libs.contracts.money import DEFAULT_CURRENCY, TaxCategory, tax_half_up
from libs.contracts.pricing import LinesPriced, LineToPrice, PricedLine, PriceSource

# docs/api.md ("Objects", pricing): the most specific level that has an applicable price wins.
PRECEDENCE: tuple[PriceSource, ...] = ("customer", "price_list", "list")


@dataclass(frozen=True)
class PriceCandidate:
    """One ERP price of a sku, per base unit, for `min_quantity` base units or more."""

    unit_amount: int
    currency: str = DEFAULT_CURRENCY
    customer_id: str | None = None
    price_list_id: str | None = None
    min_quantity: int = 1
    active: bool = True
    price_id: str = ""


class ResolvedPrice(NamedTuple):
    unit_amount: int
    source: PriceSource
    currency: str


def price_level(candidate: PriceCandidate, customer_id: str | None, price_list_id: str | None) -> PriceSource | None:
    """The level a price belongs to for this customer, or None if it is someone else's."""
    if candidate.customer_id is not None:
        return "customer" if candidate.customer_id == customer_id else None
    if candidate.price_list_id is not None:
        return "price_list" if price_list_id is not None and candidate.price_list_id == price_list_id else None
    return "list"


def resolve_unit_price(candidates: Iterable[PriceCandidate], customer_id: str | None, price_list_id: str | None,
                       base_quantity: int) -> ResolvedPrice | None:
    """The unit price for `base_quantity` base units: customer price → price list → list price.

    Within a level the active price with the highest `min_quantity` not above the quantity applies
    (quantity breaks); a level with none applicable falls through to the next. None: no price at all.
    """
    applicable: dict[PriceSource, list[PriceCandidate]] = {level: [] for level in PRECEDENCE}
    for c in candidates:
        if not c.active or c.min_quantity > base_quantity:
            continue
        level = price_level(c, customer_id, price_list_id)
        if level is not None:
            applicable[level].append(c)
    for level in PRECEDENCE:
        if applicable[level]:
            # two prices at one break should not happen; if the ERP sends them, the lower one, always the same one
            best = min(applicable[level], key=lambda c: (-c.min_quantity, c.unit_amount, c.price_id))
            return ResolvedPrice(best.unit_amount, level, best.currency)
    return None


def tax_rate_bp(category: TaxCategory, rates_bp: Mapping[str, int]) -> int:
    """The GCT rate of a tax category; exempt supplies carry none whatever is configured."""
    if category == TaxCategory.EXEMPT:
        return 0
    return rates_bp[category]


def _within_bound(total: int) -> None:
    """Money travels and is stored up to MAX_AMOUNT; a larger cart is refused, never half-placed."""
    if total > MAX_AMOUNT:
        raise Rejection(ErrorCode.AMOUNT_TOO_LARGE,
                        f"the cart's total would be over {MAX_AMOUNT:,} minor units; split it into smaller orders",
                        "cart_id")


def price_line(line_id: str, sku: str, base_quantity: int, price: ResolvedPrice, tax_category: TaxCategory,
               rates_bp: Mapping[str, int]) -> PricedLine:
    """One line's money: subtotal = unit price × base quantity; GCT on the line, rounded half-up to the cent."""
    rate = tax_rate_bp(tax_category, rates_bp)
    subtotal = price.unit_amount * base_quantity
    tax = tax_half_up(subtotal, rate)
    _within_bound(subtotal + tax)
    return PricedLine(
        line_id=line_id, sku=sku, base_quantity=base_quantity, unit_price=price.unit_amount,
        price_source=price.source, subtotal=subtotal, tax_category=tax_category, tax_rate_bp=rate,
        tax=tax, total=subtotal + tax,
    )


def price_cart(cart_id: str, lines: Sequence[LineToPrice], tax_categories: Mapping[str, TaxCategory],
               candidates: Mapping[str, Sequence[PriceCandidate]], customer_id: str | None,
               price_list_id: str | None, rates_bp: Mapping[str, int]) -> LinesPriced:
    """Price every line for this customer; totals are sums of the rounded lines (docs/api.md, "Objects", pricing).

    `tax_categories` names the active products; a sku missing there, or with no applicable
    price, is `sku_unknown`. Lines must all resolve to one currency.
    """
    priced: list[PricedLine] = []
    currencies: set[str] = set()
    for line in lines:
        category = tax_categories.get(line.sku)
        if category is None:
            raise Rejection(ErrorCode.SKU_UNKNOWN, f"no product with sku {line.sku!r}", "sku")
        price = resolve_unit_price(candidates.get(line.sku, ()), customer_id, price_list_id, line.base_quantity)
        if price is None:
            raise Rejection(ErrorCode.SKU_UNKNOWN, f"sku {line.sku!r} has no price for {line.base_quantity} base units",
                            "sku")
        currencies.add(price.currency)
        priced.append(price_line(line.line_id, line.sku, line.base_quantity, price, category, rates_bp))
    if len(currencies) > 1:
        raise Rejection(ErrorCode.PARAMETER_INVALID,
                        f"lines are priced in more than one currency ({', '.join(sorted(currencies))})", "lines")
    subtotal = sum(p.subtotal for p in priced)
    tax = sum(p.tax for p in priced)
    _within_bound(subtotal + tax)
    return LinesPriced(cart_id=cart_id, currency=currencies.pop() if currencies else DEFAULT_CURRENCY,
                       lines=priced, subtotal=subtotal, tax=tax, total=subtotal + tax)


@dataclass(frozen=True)
class Product:
    """An active product of the catalog (erp.products.v1), with those of its ERP prices that could apply to
    one customer (its own, its price list's, the list prices)."""

    sku: str
    name: str
    base_uom: str
    units: Mapping[str, int]
    tax_category: TaxCategory
    prices: tuple[PriceCandidate, ...] = ()


@dataclass(frozen=True)
class PriceBook:
    """What pricing knows for one customer about some skus: the active products among them (in sku order) and
    the customer's price list. A sku missing from `products` is unknown or inactive."""

    customer_id: str | None
    price_list_id: str | None
    products: Mapping[str, Product]

    def price(self, cart_id: str, lines: Sequence[LineToPrice], rates_bp: Mapping[str, int]) -> LinesPriced:
        """Every line priced for this customer, or a Rejection (price_cart)."""
        return price_cart(cart_id, lines, {sku: p.tax_category for sku, p in self.products.items()},
                          {sku: p.prices for sku, p in self.products.items()}, self.customer_id, self.price_list_id,
                          rates_bp)

    def unit_price(self, sku: str) -> ResolvedPrice | None:
        """The price of one base unit of `sku` for this customer (what the catalog shows); None: no price."""
        product = self.products.get(sku)
        if product is None:
            return None
        return resolve_unit_price(product.prices, self.customer_id, self.price_list_id, 1)
