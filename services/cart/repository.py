"""Cart's repositories: prepared statements on the unit of work's connection, returning domain objects.

The transaction is scoped to the message's tenant and mode by row-level security (libs/runtime/database.py):
the SQL names business keys only, and tenant_id/livemode default to the scope on insert. Cart and line
ids are global (their primary keys): an id another tenant holds is invisible here and cannot be taken —
the inserts say so by returning False.
"""

import json

from libs.contracts.cart import CartStatus

from .domain import Cart, Line, Product

_CART = "c.id, c.customer_id, c.status, c.version, c.frozen_by, c.order_id, c.created_at, c.updated_at"
_LINE = ("l.id AS line_id, l.sku, l.order_uom, l.order_quantity, l.factor, l.base_uom, l.base_quantity, "
         "l.created_at AS line_created_at")
_LINES = "FROM carts c LEFT JOIN cart_lines l ON l.cart_id = c.id"
_ORDER = "ORDER BY l.created_at, l.id"

# A row locked FOR UPDATE after waiting for a concurrent writer is the writer's version, but the lines joined to
# it are still those of this statement's snapshot (READ COMMITTED re-checks only the locked row). The cart's
# version as the snapshot saw it tells: every write of a line bumps the version, so when the two differ the
# lines are read again — now, with the lock held, by a statement that sees the writer's commit.
_SEEN = "(SELECT s.version FROM carts s WHERE s.id = $1) AS seen_version"

_GET = f"SELECT {_CART}, {_LINE} {_LINES} WHERE c.id = $1 {_ORDER}"
_GET_FOR_UPDATE = f"SELECT {_CART}, {_SEEN}, {_LINE} {_LINES} WHERE c.id = $1 {_ORDER} FOR UPDATE OF c"
_GET_FOR_ADDING = f"""
    SELECT {_CART}, {_SEEN}, {_LINE}, p.sku AS p_sku, p.base_uom AS p_base_uom, p.units AS p_units,
           p.active AS p_active
    {_LINES} LEFT JOIN products p ON p.sku = $2
    WHERE c.id = $1 {_ORDER} FOR UPDATE OF c"""
_LINES_OF = ("SELECT id AS line_id, sku, order_uom, order_quantity, factor, base_uom, base_quantity, "
             "created_at AS line_created_at FROM cart_lines WHERE cart_id = $1 ORDER BY created_at, id")

# the cart row after a command: every write of a line stores it in the same statement
_SAVE = "UPDATE carts SET status = $2, version = $3, frozen_by = $4, order_id = $5, updated_at = $6 WHERE id = $1"
_SAVE_AFTER = "UPDATE carts SET status = $2, version = $3, frozen_by = $4, order_id = $5, updated_at = $6 " \
              "WHERE id = (SELECT cart_id FROM written)"


def _line(row) -> Line:
    return Line(row["line_id"], row["sku"], row["order_uom"], row["order_quantity"], row["factor"], row["base_uom"],
                row["base_quantity"], row["line_created_at"])


def _cart(rows, lines: list | None = None) -> Cart | None:
    if not rows:
        return None
    r = rows[0]
    if lines is None:
        lines = [row for row in rows if row["line_id"] is not None]
    return Cart(r["id"], r["customer_id"], r["created_at"], r["updated_at"], CartStatus(r["status"]), r["version"],
                tuple(_line(x) for x in lines), r["frozen_by"], r["order_id"])


def _product(sku, base_uom, units, active) -> Product | None:
    if sku is None:
        return None
    return Product(sku, base_uom, json.loads(units) if isinstance(units, str) else dict(units), active)


def _header(cart: Cart) -> tuple:
    return cart.cart_id, cart.status.value, cart.version, cart.frozen_by, cart.order_id, cart.updated_at


class Carts:
    def __init__(self, conn):
        self._conn = conn

    async def get(self, cart_id: str) -> Cart | None:
        """The cart with its lines, in one statement (a read: nothing locked)."""
        return _cart(await self._conn.fetch(_GET, cart_id))

    async def get_for_update(self, cart_id: str) -> Cart | None:
        """The cart with its lines, its row locked: commands on one cart are serialized, across instances too."""
        return await self._locked(await self._conn.fetch(_GET_FOR_UPDATE, cart_id))

    async def get_for_adding(self, cart_id: str, sku: str) -> tuple[Cart | None, Product | None]:
        """The cart locked with its lines, and the product a new line names (None: no such product), in one
        statement."""
        rows = await self._conn.fetch(_GET_FOR_ADDING, cart_id, sku)
        product = _product(rows[0]["p_sku"], rows[0]["p_base_uom"], rows[0]["p_units"], rows[0]["p_active"]) \
            if rows else None
        return await self._locked(rows), product

    async def _locked(self, rows) -> Cart | None:
        if rows and rows[0]["seen_version"] != rows[0]["version"]:  # we waited for a writer: see its lines
            return _cart(rows, list(await self._conn.fetch(_LINES_OF, rows[0]["id"])))
        return _cart(rows)

    async def add(self, cart: Cart) -> bool:
        """Insert a new cart; False if its id is taken (by another tenant's cart: this one found none)."""
        return await self._conn.fetchval("""
            INSERT INTO carts (id, customer_id, status, version, frozen_by, order_id, created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING RETURNING true""",
            cart.cart_id, cart.customer_id, cart.status.value, cart.version, cart.frozen_by, cart.order_id,
            cart.created_at, cart.updated_at) is not None

    async def add_line(self, cart: Cart, line: Line) -> bool:
        """Insert `line` and store the cart row after it, in one statement; False (nothing written) if the
        line id is taken by another cart."""
        return await self._conn.fetchval(f"""
            WITH written AS (
                INSERT INTO cart_lines (id, cart_id, sku, order_uom, order_quantity, factor, base_uom, base_quantity,
                                        created_at)
                VALUES ($7, $1, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT (id) DO NOTHING RETURNING cart_id
            ), saved AS ({_SAVE_AFTER} RETURNING 1)
            SELECT count(*) = 1 FROM written""",
            *_header(cart), line.line_id, line.sku, line.order_uom, line.order_quantity, line.factor, line.base_uom,
            line.base_quantity, line.created_at)

    async def change_line(self, cart: Cart, line: Line) -> None:
        """Store a line's new quantities and the cart row after it, in one statement."""
        await self._conn.execute(f"""
            WITH written AS (
                UPDATE cart_lines SET order_uom = $8, order_quantity = $9, factor = $10, base_quantity = $11
                WHERE id = $7 AND cart_id = $1 RETURNING cart_id
            ) {_SAVE_AFTER}""",
            *_header(cart), line.line_id, line.order_uom, line.order_quantity, line.factor, line.base_quantity)

    async def remove_line(self, cart: Cart, line_id: str) -> None:
        """Delete a line and store the cart row after it, in one statement."""
        await self._conn.execute(f"""
            WITH written AS (DELETE FROM cart_lines WHERE id = $7 AND cart_id = $1 RETURNING cart_id)
            {_SAVE_AFTER}""", *_header(cart), line_id)

    async def save(self, cart: Cart) -> None:
        """Store the cart row (status, version, frozen_by, order_id): a freeze, release or completion."""
        await self._conn.execute(_SAVE, *_header(cart))


class Products:
    def __init__(self, conn):
        self._conn = conn

    async def get(self, sku: str) -> Product | None:
        row = await self._conn.fetchrow("SELECT sku, base_uom, units, active FROM products WHERE sku = $1", sku)
        return None if row is None else _product(row["sku"], row["base_uom"], row["units"], row["active"])

    async def upsert(self, p: Product) -> None:
        await self._conn.execute("""
            INSERT INTO products (sku, base_uom, units, active) VALUES ($1, $2, $3::json, $4)
            ON CONFLICT (tenant_id, livemode, sku) DO UPDATE
            SET base_uom = excluded.base_uom, units = excluded.units, active = excluded.active""",
            p.sku, p.base_uom, json.dumps(dict(p.units)), p.active)
