"""Checkout saga rules, free of I/O: which reply a step waits for, and how an order is assembled."""

from libs.contracts.base import Rejection
from libs.contracts.cart import CartLine
from libs.contracts.pricing import LinesPriced

FREEZING, PRICING, RESERVING = "freezing", "pricing", "reserving"
CONFIRMED, REJECTED, FAILED, EXPIRED = "confirmed", "rejected", "failed", "expired"
ACTIVE = (FREEZING, PRICING, RESERVING)
FINAL = (CONFIRMED, REJECTED, FAILED)


def correlation(checkout_id: str, attempt: int) -> str:
    """Replies name the attempt, so a late reply to an expired attempt is recognised and ignored."""
    return f"{checkout_id}:{attempt}"


def parse_correlation(value: str | None) -> tuple[str, int] | None:
    if not value or ":" not in value:
        return None
    checkout_id, _, attempt = value.rpartition(":")
    return (checkout_id, int(attempt)) if attempt.isdigit() else None


def assemble_lines(frozen: list[CartLine], priced: LinesPriced) -> list[dict]:
    """Each order line: what was asked (unit, quantity, factor) beside what was settled (price, tax)."""
    by_id = {p.line_id: p for p in priced.lines}
    lines = []
    for position, line in enumerate(frozen, start=1):
        p = by_id.get(line.line_id)
        if p is None or p.base_quantity != line.base_quantity or p.sku != line.sku:
            raise Rejection("parameter_invalid", f"line {line.line_id} was not priced as frozen", "cart_id")
        lines.append(dict(
            position=position, line_id=line.line_id, sku=line.sku, order_uom=line.order_uom,
            order_quantity=line.order_quantity, factor=line.factor, base_uom=line.base_uom,
            base_quantity=line.base_quantity, unit_price=p.unit_price, price_source=p.price_source,
            subtotal=p.subtotal, tax_category=str(p.tax_category), tax_rate_bp=p.tax_rate_bp, tax=p.tax, total=p.total,
        ))
    if len(by_id) != len(frozen):
        raise Rejection("parameter_invalid", "pricing returned lines the cart does not have", "cart_id")
    return lines
