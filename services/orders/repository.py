"""Orders' repositories: prepared statements on the unit of work's connection.

The transaction is scoped to the message's tenant and mode by row-level security (libs/runtime/database.py):
the SQL names business keys only, and tenant_id/livemode default to the scope on insert. The sweeper's
queries run unscoped (`Unscoped`) and read each row's tenant and mode, to address what it sends.

A checkout row is parsed into a `Checkout` once, here; the saga's steps work on that object.
"""

import json
from datetime import datetime

from pydantic import TypeAdapter

from libs.contracts.cart import CartLine
from libs.contracts.envelope import AnyMessage
from libs.contracts.ids import ORDER_LINE, new_id
from libs.contracts.orders import OrderView
from libs.contracts.pricing import LinesPriced
from libs.runtime.database import Scope

from .domain import ACTIVE, Asker, Checkout, CheckoutState, Customer, Held, Placing, Priced

_LINES = TypeAdapter(list[CartLine])
_RESULT = TypeAdapter(AnyMessage)
_ACTIVE = ", ".join(f"'{s.value}'" for s in sorted(ACTIVE))

_CHECKOUT = ("id, cart_id, customer_id, idempotency_key, notes, po_number, bill_to_id, terms, state, attempt, "
             "reservation_id, reply_to, reply_correlation_id, request_id, step_deadline, frozen_lines, priced, "
             "reserved_bill_to_id, reserved_amount, order_id, result")


def _checkout(row) -> Checkout | None:
    if row is None or row["id"] is None:
        return None
    priced = None
    if row["priced"] is not None:
        priced = Priced(tuple(_LINES.validate_json(row["frozen_lines"])),
                        LinesPriced.model_validate_json(row["priced"]))
    credit = Held(row["reserved_bill_to_id"], row["reserved_amount"]) if row["reserved_bill_to_id"] else None
    return Checkout(
        checkout_id=row["id"], cart_id=row["cart_id"], customer_id=row["customer_id"],
        idempotency_key=row["idempotency_key"], notes=row["notes"], po_number=row["po_number"],
        bill_to_id=row["bill_to_id"], terms=row["terms"], state=CheckoutState(row["state"]), attempt=row["attempt"],
        reservation_id=row["reservation_id"],
        asker=Asker(row["reply_to"], row["reply_correlation_id"], row["request_id"]),
        step_deadline=row["step_deadline"], priced=priced, credit=credit, order_id=row["order_id"],
        result=_RESULT.validate_json(row["result"]) if row["result"] is not None else None,
    )


def _parts(co: Checkout) -> tuple:
    """What the saga may change after placing, in `_SAVE`'s order (JSON as text)."""
    p, c = co.priced, co.credit
    return (
        co.bill_to_id, co.terms, co.state.value, co.attempt, co.reservation_id, co.asker.reply_to,
        co.asker.correlation_id, co.asker.request_id, co.step_deadline,
        _LINES.dump_json(list(p.lines)).decode() if p else None, p.priced.model_dump_json() if p else None,
        c.bill_to_id if c else None, c.amount if c else None, co.order_id,
        co.result.model_dump_json() if co.result is not None else None,
    )


_INSERT = f"""
    INSERT INTO checkouts ({_CHECKOUT}, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16::json, $17::json, $18, $19, $20,
            $21::json, $22, $22)"""

_SAVE = """
    UPDATE checkouts SET bill_to_id = $2, terms = $3, state = $4, attempt = $5, reservation_id = $6, reply_to = $7,
        reply_correlation_id = $8, request_id = $9, step_deadline = $10, frozen_lines = $11::json, priced = $12::json,
        reserved_bill_to_id = $13, reserved_amount = $14, order_id = $15, result = $16::json, updated_at = $17
    WHERE id = $1"""


class Checkouts:
    def __init__(self, conn):
        self._conn = conn

    async def for_placing(self, idempotency_key: str | None, cart_id: str, customer_id: str) -> Placing:
        """Everything a PlaceOrder decides on, in one statement; the key's checkout is locked."""
        row = await self._conn.fetchrow(f"""
            SELECT k.*,
                   (SELECT id FROM orders WHERE cart_id = $2) AS cart_order_id,
                   EXISTS (SELECT 1 FROM checkouts WHERE cart_id = $2 AND state IN ({_ACTIVE})) AS cart_held,
                   c.customer_id AS c_customer_id, c.bill_to_id AS c_bill_to_id, c.terms AS c_terms
            FROM (SELECT 1) one
            LEFT JOIN LATERAL (SELECT {_CHECKOUT} FROM checkouts WHERE idempotency_key = $1::text FOR UPDATE) k ON true
            LEFT JOIN customers c ON c.customer_id = $3""", idempotency_key, cart_id, customer_id)
        customer = None if row["c_customer_id"] is None else Customer(row["c_customer_id"], row["c_bill_to_id"],
                                                                       row["c_terms"])
        return Placing(_checkout(row), row["cart_order_id"], row["cart_held"], customer)

    async def add(self, co: Checkout, at: datetime) -> None:
        """A new checkout; a concurrent one with the same key or for the same cart makes this a unique violation
        (a lost race: retried, and the retry finds the winner)."""
        await self._conn.execute(_INSERT, co.checkout_id, co.cart_id, co.customer_id, co.idempotency_key, co.notes,
                                 co.po_number, *_parts(co), at)

    async def get_for_update(self, checkout_id: str) -> Checkout | None:
        return _checkout(await self._conn.fetchrow(
            f"SELECT {_CHECKOUT} FROM checkouts WHERE id = $1 FOR UPDATE", checkout_id))

    async def save(self, co: Checkout, at: datetime) -> None:
        await self._conn.execute(_SAVE, co.checkout_id, *_parts(co), at)

    async def save_all(self, checkouts: list[Checkout], at: datetime) -> None:
        if checkouts:
            await self._conn.executemany(_SAVE, [(co.checkout_id, *_parts(co), at) for co in checkouts])

    async def delete(self, checkout_id: str) -> None:
        await self._conn.execute("DELETE FROM checkouts WHERE id = $1", checkout_id)

    # cross-tenant, for the sweeper and the resume after a restart (an Unscoped transaction)

    async def overdue(self, now: datetime, limit: int) -> list[tuple[Scope, Checkout]]:
        """Active checkouts past their step deadline, oldest first, locked for this instance."""
        return _scoped(await self._conn.fetch(f"""
            SELECT tenant_id, livemode, {_CHECKOUT} FROM checkouts
            WHERE state IN ({_ACTIVE}) AND step_deadline < $1
            ORDER BY step_deadline LIMIT $2 FOR UPDATE SKIP LOCKED""", now, limit))

    async def active(self, after_id: str, limit: int) -> list[tuple[Scope, Checkout]]:
        """Active checkouts with ids after `after_id`, in id order (a page of them), locked for this instance."""
        return _scoped(await self._conn.fetch(f"""
            SELECT tenant_id, livemode, {_CHECKOUT} FROM checkouts
            WHERE state IN ({_ACTIVE}) AND id > $1
            ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED""", after_id, limit))


def _scoped(rows) -> list[tuple[Scope, Checkout]]:
    return [(Scope(r["tenant_id"], r["livemode"]), _checkout(r)) for r in rows]


_ORDER = """o.id AS order_id, o.cart_id, o.customer_id, o.bill_to_id, o.status, o.channel, o.terms, o.currency,
    o.subtotal, o.tax, o.total, o.notes, o.po_number, o.created_at,
    (SELECT json_agg(l ORDER BY l.position) FROM (
        SELECT position, line_id, sku, order_uom, order_quantity, factor, base_uom, base_quantity, unit_price,
               price_source, subtotal, tax_category, tax_rate_bp, tax, total
        FROM order_lines WHERE order_id = o.id) l) AS lines"""

_LINE_COLUMNS = ("line_id", "sku", "order_uom", "order_quantity", "factor", "base_uom", "base_quantity", "unit_price",
                 "price_source", "subtotal", "tax_category", "tax_rate_bp", "tax", "total")


def _order(row) -> OrderView | None:
    if row is None:
        return None
    fields = dict(row)
    fields["lines"] = json.loads(fields["lines"]) if fields["lines"] is not None else []
    return OrderView.model_validate(fields)


class Orders:
    def __init__(self, conn):
        self._conn = conn

    async def add(self, order: OrderView, checkout_id: str) -> None:
        """The order and its lines, in one statement."""
        lines = order.lines
        columns = [[getattr(x, name) for x in lines] for name in _LINE_COLUMNS]
        columns[_LINE_COLUMNS.index("tax_category")] = [str(x.tax_category) for x in lines]
        await self._conn.execute("""
            WITH o AS (
                INSERT INTO orders (id, cart_id, checkout_id, customer_id, bill_to_id, terms, status, channel, currency,
                                    subtotal, tax, total, notes, po_number, version, created_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 1, $15)
                RETURNING id)
            INSERT INTO order_lines (id, order_id, position, line_id, sku, order_uom, order_quantity, factor, base_uom,
                                     base_quantity, unit_price, price_source, subtotal, tax_category, tax_rate_bp,
                                     tax, total)
            SELECT l.id, o.id, l.position, l.line_id, l.sku, l.order_uom, l.order_quantity, l.factor, l.base_uom,
                   l.base_quantity, l.unit_price, l.price_source, l.subtotal, l.tax_category, l.tax_rate_bp, l.tax,
                   l.total
            FROM o, unnest($16::text[], $17::int[], $18::text[], $19::text[], $20::text[], $21::bigint[],
                           $22::bigint[], $23::text[], $24::bigint[], $25::bigint[], $26::text[], $27::bigint[],
                           $28::text[], $29::int[], $30::bigint[], $31::bigint[])
                 AS l(id, position, line_id, sku, order_uom, order_quantity, factor, base_uom, base_quantity,
                      unit_price, price_source, subtotal, tax_category, tax_rate_bp, tax, total)""",
            order.order_id, order.cart_id, checkout_id, order.customer_id, order.bill_to_id, order.terms,
            str(order.status), order.channel, order.currency, order.subtotal, order.tax, order.total, order.notes,
            order.po_number, order.created_at,
            [new_id(ORDER_LINE) for _ in lines], list(range(1, len(lines) + 1)), *columns)

    async def get(self, order_id: str) -> OrderView | None:
        return _order(await self._conn.fetchrow(f"SELECT {_ORDER} FROM orders o WHERE o.id = $1", order_id))

    async def page(self, customer_id: str, starting_after: str | None, limit: int) -> tuple[list[OrderView], bool]:
        """The customer's orders newest first (ids are ULIDs: they sort by time), after `starting_after`."""
        rows = await self._conn.fetch(f"""
            SELECT {_ORDER} FROM orders o
            WHERE o.customer_id = $1 AND ($2::text IS NULL OR o.id < $2)
            ORDER BY o.id DESC LIMIT $3""", customer_id, starting_after, limit + 1)
        return [_order(r) for r in rows[:limit]], len(rows) > limit


class Customers:
    def __init__(self, conn):
        self._conn = conn

    async def upsert(self, customer: Customer) -> None:
        await self._conn.execute("""
            INSERT INTO customers (customer_id, bill_to_id, terms) VALUES ($1, $2, $3)
            ON CONFLICT (tenant_id, livemode, customer_id) DO UPDATE
            SET bill_to_id = excluded.bill_to_id, terms = excluded.terms""",
            customer.customer_id, customer.bill_to_id, customer.terms)
