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
from libs.contracts.invoices import InvoiceLine, InvoiceView
from libs.contracts.orders import FulfilmentView, OrderView, StatusTransition
from libs.contracts.pricing import LinesPriced
from libs.runtime.database import Scope

from .domain import ACTIVE, Asker, Checkout, CheckoutState, Customer, Held, Placing, Priced
from .invoicing import Invoice, Invoiced, Payment
from .lifecycle import DEFAULT_PREFIX, Order

_LINES = TypeAdapter(list[CartLine])
_RESULT = TypeAdapter(AnyMessage)
_ACTIVE = ", ".join(f"'{s.value}'" for s in sorted(ACTIVE))

_CHECKOUT = ("id, cart_id, customer_id, idempotency_key, notes, po_number, bill_to_id, terms, state, attempt, "
             "reservation_id, reply_to, reply_correlation_id, request_id, step_deadline, frozen_lines, priced, "
             "reserved_bill_to_id, reserved_amount, order_id, result, order_prefix")


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
        order_prefix=row["order_prefix"],
    )


def _parts(co: Checkout) -> tuple:
    """What the saga may change after placing, in `_SAVE`'s order (JSON as text)."""
    p, c = co.priced, co.credit
    return (
        co.bill_to_id, co.terms, co.state.value, co.attempt, co.reservation_id, co.asker.reply_to,
        co.asker.correlation_id, co.asker.request_id, co.step_deadline,
        _LINES.dump_json(list(p.lines)).decode() if p else None, p.priced.model_dump_json() if p else None,
        c.bill_to_id if c else None, c.amount if c else None, co.order_id,
        co.result.model_dump_json() if co.result is not None else None, co.order_prefix,
    )


_INSERT = f"""
    INSERT INTO checkouts ({_CHECKOUT}, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16::json, $17::json, $18, $19, $20,
            $21::json, $22, $23, $23)"""

_SAVE = """
    UPDATE checkouts SET bill_to_id = $2, terms = $3, state = $4, attempt = $5, reservation_id = $6, reply_to = $7,
        reply_correlation_id = $8, request_id = $9, step_deadline = $10, frozen_lines = $11::json, priced = $12::json,
        reserved_bill_to_id = $13, reserved_amount = $14, order_id = $15, result = $16::json, order_prefix = $17,
        updated_at = $18
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
    o.subtotal, o.tax, o.total, o.notes, o.po_number, o.created_at, o.order_number, o.reservation_id,
    o.status_transitions, o.fulfilments, o.cancellation_reason, o.cancelled_by, o.version, o.order_prefix,
    (SELECT json_agg(l ORDER BY l.position) FROM (
        SELECT position, line_id, sku, order_uom, order_quantity, factor, base_uom, base_quantity, unit_price,
               price_source, subtotal, tax_category, tax_rate_bp, tax, total, quantity_fulfilled, invoiced_subtotal,
               invoiced_tax
        FROM order_lines WHERE order_id = o.id) l) AS lines"""

_LINE_COLUMNS = ("line_id", "sku", "order_uom", "order_quantity", "factor", "base_uom", "base_quantity", "unit_price",
                 "price_source", "subtotal", "tax_category", "tax_rate_bp", "tax", "total")

_FULFILMENTS = TypeAdapter(list[FulfilmentView])
_TRANSITIONS = TypeAdapter(list[StatusTransition])


def _aggregate(row) -> Order | None:
    """The order row as the aggregate (lifecycle.Order): its view, version, prefix, what its invoices bill per line
    and the digest of each fulfilment's record."""
    if row is None:
        return None
    fields = dict(row)
    lines = json.loads(fields.pop("lines")) if fields["lines"] is not None else []
    fulfilments = json.loads(fields.pop("fulfilments")) if fields["fulfilments"] is not None else []
    transitions = fields.pop("status_transitions")
    version, prefix = fields.pop("version"), fields.pop("order_prefix")
    view = OrderView.model_validate(dict(
        fields, lines=lines, fulfilments=fulfilments,
        status_transitions=json.loads(transitions) if transitions is not None else []))
    return Order(view, version, prefix or DEFAULT_PREFIX,
                 invoiced={x["line_id"]: Invoiced(x["invoiced_subtotal"], x["invoiced_tax"]) for x in lines},
                 digests={f["fulfilment_id"]: f.get("digest") for f in fulfilments})


def _order(row) -> OrderView | None:
    order = _aggregate(row)
    return order.view if order is not None else None


_ADD_ORDER = """
    WITH n AS (
        INSERT INTO counters (kind, next) VALUES ('order', 2)
        ON CONFLICT (tenant_id, livemode, kind) DO UPDATE SET next = counters.next + 1
        RETURNING next - 1 AS n),
    o AS (
        INSERT INTO orders (id, cart_id, checkout_id, customer_id, bill_to_id, terms, status, channel, currency,
                            subtotal, tax, total, notes, po_number, version, created_at, order_prefix, reservation_id,
                            status_transitions, order_number)
        SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 1, $15, $32::text, $33, $34::json,
               $32::text || '-' || CASE WHEN n.n < 1000000 THEN lpad(n.n::text, 6, '0') ELSE n.n::text END
        FROM n
        RETURNING id, order_number),
    l AS (
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
                  unit_price, price_source, subtotal, tax_category, tax_rate_bp, tax, total))
    SELECT order_number FROM o"""

_SAVE_ORDER = """
    WITH o AS (
        UPDATE orders SET status = $2, version = $3, status_transitions = $4::json, fulfilments = $5::json,
                          cancellation_reason = $6, cancelled_by = $7
        WHERE id = $1)
    UPDATE order_lines ol SET quantity_fulfilled = u.q, invoiced_subtotal = u.s, invoiced_tax = u.t
    FROM unnest($8::text[], $9::bigint[], $10::bigint[], $11::bigint[]) AS u(line_id, q, s, t)
    WHERE ol.order_id = $1 AND ol.line_id = u.line_id"""


class Orders:
    def __init__(self, conn):
        self._conn = conn

    async def add(self, order: OrderView, checkout_id: str, prefix: str | None) -> str:
        """The order and its lines, numbered from the tenant's counter, in one statement; returns its number."""
        lines = order.lines
        columns = [[getattr(x, name) for x in lines] for name in _LINE_COLUMNS]
        columns[_LINE_COLUMNS.index("tax_category")] = [str(x.tax_category) for x in lines]
        return await self._conn.fetchval(
            _ADD_ORDER,
            order.order_id, order.cart_id, checkout_id, order.customer_id, order.bill_to_id, order.terms,
            str(order.status), order.channel, order.currency, order.subtotal, order.tax, order.total, order.notes,
            order.po_number, order.created_at,
            [new_id(ORDER_LINE) for _ in lines], list(range(1, len(lines) + 1)), *columns,
            prefix or DEFAULT_PREFIX, order.reservation_id, _TRANSITIONS.dump_json(order.status_transitions).decode())

    async def get(self, order_id: str) -> OrderView | None:
        return _order(await self._conn.fetchrow(f"SELECT {_ORDER} FROM orders o WHERE o.id = $1", order_id))

    async def get_for_update(self, order_id: str) -> Order | None:
        """The aggregate, its row locked until the transaction ends."""
        return _aggregate(await self._conn.fetchrow(
            f"SELECT {_ORDER} FROM orders o WHERE o.id = $1 FOR UPDATE", order_id))

    async def save(self, order: Order) -> None:
        """What a lifecycle change may change: status, version, transitions, fulfilments, the cancellation, and each
        line's shipped quantity and invoiced sums (one statement)."""
        v = order.view
        fulfilments = [dict(f.model_dump(mode="json"), digest=order.digests.get(f.fulfilment_id))
                       for f in v.fulfilments]
        lines = v.lines
        invoiced = [order.invoiced.get(x.line_id, Invoiced()) for x in lines]
        await self._conn.execute(
            _SAVE_ORDER, v.order_id, v.status, order.version, _TRANSITIONS.dump_json(v.status_transitions).decode(),
            json.dumps(fulfilments), v.cancellation_reason, v.cancelled_by, [x.line_id for x in lines],
            [x.quantity_fulfilled for x in lines], [i.subtotal for i in invoiced], [i.tax for i in invoiced])

    async def page(self, customer_id: str, starting_after: str | None, limit: int,
                   order_number: str | None = None) -> tuple[list[OrderView], bool]:
        """The customer's orders newest first (ids are ULIDs: they sort by time), after `starting_after`; only the
        one numbered `order_number` when given."""
        rows = await self._conn.fetch(f"""
            SELECT {_ORDER} FROM orders o
            WHERE o.customer_id = $1 AND ($2::text IS NULL OR o.id < $2)
              AND ($4::text IS NULL OR o.order_number = $4)
            ORDER BY o.id DESC LIMIT $3""", customer_id, starting_after, limit + 1, order_number)
        return [_order(r) for r in rows[:limit]], len(rows) > limit


# ---- invoices, payments, counters ------------------------------------------------------------------------

_INVOICE = ("id AS invoice_id, invoice_number, order_id, order_number, customer_id, bill_to_id, fulfilment_id, "
            "status, terms, currency, subtotal, tax, total, amount_paid, amount_due, overdue, lines, issued_at, "
            "due_at, paid_at, voided_at, version, reservation_id")


def _invoice(row) -> Invoice | None:
    if row is None:
        return None
    fields = dict(row)
    version, reservation_id = fields.pop("version"), fields.pop("reservation_id")
    fields.pop("tenant_id", None), fields.pop("livemode", None)
    fields["lines"] = json.loads(fields["lines"])
    return Invoice(InvoiceView.model_validate(fields), version, reservation_id)


_SAVE_INVOICE = """
    UPDATE invoices SET status = $2, amount_paid = $3, amount_due = $4, overdue = $5, due_at = $6, paid_at = $7,
                        voided_at = $8, version = $9
    WHERE id = $1"""


def _invoice_parts(inv: Invoice) -> tuple:
    v = inv.view
    return (v.invoice_id, v.status, v.amount_paid, v.amount_due, v.overdue, v.due_at, v.paid_at, v.voided_at,
            inv.version)


class Invoices:
    def __init__(self, conn):
        self._conn = conn

    async def add(self, inv: Invoice) -> None:
        v = inv.view
        await self._conn.execute("""
            INSERT INTO invoices (id, invoice_number, order_id, order_number, customer_id, bill_to_id, fulfilment_id,
                                  reservation_id, status, terms, currency, subtotal, tax, total, amount_paid,
                                  amount_due, overdue, lines, issued_at, due_at, paid_at, voided_at, version)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18::json, $19, $20,
                    $21, $22, $23)""",
            v.invoice_id, v.invoice_number, v.order_id, v.order_number, v.customer_id, v.bill_to_id, v.fulfilment_id,
            inv.reservation_id, v.status, v.terms, v.currency, v.subtotal, v.tax, v.total, v.amount_paid,
            v.amount_due, v.overdue, _INVOICE_LINES.dump_json(v.lines).decode(), v.issued_at, v.due_at, v.paid_at,
            v.voided_at, inv.version)

    async def save_all(self, invoices: list[Invoice]) -> None:
        if invoices:
            await self._conn.executemany(_SAVE_INVOICE, [_invoice_parts(i) for i in invoices])

    async def get(self, invoice_id: str) -> Invoice | None:
        return _invoice(await self._conn.fetchrow(f"SELECT {_INVOICE} FROM invoices WHERE id = $1", invoice_id))

    async def of_order_for_update(self, order_id: str) -> list[Invoice]:
        """The order's invoices, oldest first, locked."""
        rows = await self._conn.fetch(
            f"SELECT {_INVOICE} FROM invoices WHERE order_id = $1 ORDER BY id FOR UPDATE", order_id)
        return [_invoice(r) for r in rows]

    async def for_payment(self, bill_to_id: str, invoice_id: str | None) -> list[Invoice]:
        """What a payment may pay, locked: the invoice it names (if it is this account's), else the account's open
        invoices, oldest due first."""
        rows = await self._conn.fetch(f"""
            SELECT {_INVOICE} FROM invoices
            WHERE bill_to_id = $1 AND (CASE WHEN $2::text IS NULL THEN status = 'open' ELSE id = $2 END)
            ORDER BY due_at NULLS LAST, issued_at, id FOR UPDATE""", bill_to_id, invoice_id)
        return [_invoice(r) for r in rows]

    async def page(self, customer_id: str, starting_after: str | None, limit: int, status: str | None = None,
                   order_id: str | None = None) -> tuple[list[Invoice], bool]:
        """The customer's invoices (of its own orders) newest first, after `starting_after`."""
        rows = await self._conn.fetch(f"""
            SELECT {_INVOICE} FROM invoices
            WHERE customer_id = $1 AND ($2::text IS NULL OR id < $2) AND ($4::text IS NULL OR status = $4)
              AND ($5::text IS NULL OR order_id = $5)
            ORDER BY id DESC LIMIT $3""", customer_id, starting_after, limit + 1, status, order_id)
        return [_invoice(r) for r in rows[:limit]], len(rows) > limit

    # cross-tenant, for the overdue sweep (an Unscoped transaction)

    async def overdue(self, now: datetime, limit: int) -> list[tuple[Scope, Invoice]]:
        """Open invoices past due and not yet marked, oldest due first, locked for this instance."""
        rows = await self._conn.fetch(f"""
            SELECT tenant_id, livemode, {_INVOICE} FROM invoices
            WHERE status = 'open' AND NOT overdue AND due_at < $1
            ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED""", now, limit)
        return [(Scope(r["tenant_id"], r["livemode"]), _invoice(r)) for r in rows]


_INVOICE_LINES = TypeAdapter(list[InvoiceLine])

_PAYMENT = ("payment_id, bill_to_id, amount, currency, received_at, remaining, digest, invoice_id, method, "
            "reference")


def _payment(row) -> Payment | None:
    return None if row is None else Payment(**dict(row))


class Payments:
    def __init__(self, conn):
        self._conn = conn

    async def get(self, payment_id: str) -> Payment | None:
        return _payment(await self._conn.fetchrow(f"SELECT {_PAYMENT} FROM payments WHERE payment_id = $1",
                                                  payment_id))

    async def add(self, p: Payment, at: datetime) -> None:
        """A new payment; a concurrent one with the same id makes this a unique violation (retried: the retry finds
        it)."""
        await self._conn.execute(f"""
            INSERT INTO payments ({_PAYMENT}, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
            p.payment_id, p.bill_to_id, p.amount, p.currency, p.received_at, p.remaining, p.digest, p.invoice_id,
            p.method, p.reference, at)

    async def unapplied_for_update(self, bill_to_id: str) -> list[Payment]:
        """The account's payments with credit left, oldest received first, locked."""
        rows = await self._conn.fetch(f"""
            SELECT {_PAYMENT} FROM payments WHERE bill_to_id = $1 AND remaining > 0
            ORDER BY received_at, payment_id FOR UPDATE""", bill_to_id)
        return [_payment(r) for r in rows]

    async def save_remaining(self, payments: list[Payment]) -> None:
        if payments:
            await self._conn.execute("""
                UPDATE payments p SET remaining = u.remaining
                FROM unnest($1::text[], $2::bigint[]) AS u(payment_id, remaining) WHERE p.payment_id = u.payment_id""",
                [p.payment_id for p in payments], [p.remaining for p in payments])


class Counters:
    def __init__(self, conn):
        self._conn = conn

    async def take(self, kind: str) -> int:
        """The next number of `kind` ('order' | 'invoice') in this tenant and mode, from 1; the row is locked until
        the transaction ends (a rolled-back number is not reused: gaps are allowed)."""
        return await self._conn.fetchval("""
            INSERT INTO counters (kind, next) VALUES ($1, 2)
            ON CONFLICT (tenant_id, livemode, kind) DO UPDATE SET next = counters.next + 1
            RETURNING next - 1""", kind)


class Customers:
    def __init__(self, conn):
        self._conn = conn

    async def upsert(self, customer: Customer) -> None:
        await self._conn.execute("""
            INSERT INTO customers (customer_id, bill_to_id, terms) VALUES ($1, $2, $3)
            ON CONFLICT (tenant_id, livemode, customer_id) DO UPDATE
            SET bill_to_id = excluded.bill_to_id, terms = excluded.terms""",
            customer.customer_id, customer.bill_to_id, customer.terms)
