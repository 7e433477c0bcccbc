"""Credit's repositories: prepared statements on the unit of work's connection.

The transaction is scoped to the message's tenant and mode by row-level security (libs/runtime/database.py):
the SQL names business keys only, and tenant_id/livemode default to the scope on insert.
"""

from datetime import datetime

from libs.contracts.credit import ReservationStatus
from libs.contracts.money import DEFAULT_CURRENCY

from .domain import CreditAccount, Reservation

_ACCOUNT = "customer_id, bill_to_id, terms, credit_limit, currency, customer_known"


def _account(row) -> CreditAccount | None:
    if row is None or row["customer_id"] is None:
        return None
    return CreditAccount(row["customer_id"], row["bill_to_id"], row["terms"], row["credit_limit"], row["currency"],
                         row["customer_known"])


def _reservation(row) -> Reservation | None:
    if row is None or row["reservation_id"] is None:
        return None
    return Reservation(row["reservation_id"], row["bill_to_id"], row["amount"], ReservationStatus(row["status"]),
                       row["currency"], row["customer_id"], row["checkout_id"])


class Accounts:
    def __init__(self, conn):
        self._conn = conn

    async def lock_bill_to(self, customer_id: str, fallback_bill_to: str) -> tuple[str, CreditAccount | None]:
        """The bill-to account that pays for `customer_id`, locked: every reservation on it is serialized, across
        instances, so the exposure read after this sees every reservation committed before."""
        row = await self._conn.fetchrow(f"""
            WITH target AS (
                SELECT coalesce((SELECT bill_to_id FROM accounts WHERE customer_id = $1 AND customer_known), $2) AS id)
            SELECT target.id AS target, a.* FROM target
            LEFT JOIN LATERAL (SELECT {_ACCOUNT} FROM accounts WHERE customer_id = target.id FOR UPDATE) a ON true""",
            customer_id, fallback_bill_to)
        return row["target"], _account(row)

    async def get(self, customer_id: str) -> CreditAccount | None:
        return _account(await self._conn.fetchrow(f"SELECT {_ACCOUNT} FROM accounts WHERE customer_id = $1", customer_id))

    async def view(self, customer_id: str) -> tuple[CreditAccount, CreditAccount | None, int] | None:
        """A customer, its bill-to account and that account's exposure, in one statement."""
        row = await self._conn.fetchrow("""
            SELECT c.customer_id, c.bill_to_id, c.terms, c.credit_limit, c.currency, c.customer_known,
                   b.customer_id AS b_customer_id, b.bill_to_id AS b_bill_to_id, b.terms AS b_terms,
                   b.credit_limit AS b_credit_limit, b.currency AS b_currency, b.customer_known AS b_customer_known,
                   (SELECT coalesce(sum(amount), 0) FROM reservations r
                     WHERE r.bill_to_id = c.bill_to_id AND r.status = 'reserved') AS exposure
            FROM accounts c LEFT JOIN accounts b ON b.customer_id = c.bill_to_id
            WHERE c.customer_id = $1""", customer_id)
        if row is None:
            return None
        bill_to = None if row["b_customer_id"] is None else CreditAccount(
            row["b_customer_id"], row["b_bill_to_id"], row["b_terms"], row["b_credit_limit"], row["b_currency"],
            row["b_customer_known"])
        return _account(row), bill_to, int(row["exposure"])

    async def upsert_customer(self, customer_id: str, bill_to_id: str, terms: str) -> None:
        """Customer fields only: a limit that arrived first is kept."""
        await self._conn.execute("""
            INSERT INTO accounts (customer_id, bill_to_id, terms, currency, customer_known) VALUES ($1, $2, $3, $4, true)
            ON CONFLICT (tenant_id, livemode, customer_id) DO UPDATE
            SET bill_to_id = excluded.bill_to_id, terms = excluded.terms, customer_known = true""",
            customer_id, bill_to_id, terms, DEFAULT_CURRENCY)

    async def upsert_credit_limit(self, customer_id: str, limit: int, currency: str) -> None:
        """Limit fields only; an account not seen as a customer yet bills itself on cod until its record arrives."""
        await self._conn.execute("""
            INSERT INTO accounts (customer_id, bill_to_id, terms, credit_limit, currency, customer_known)
            VALUES ($1, $1, 'cod', $2, $3, false)
            ON CONFLICT (tenant_id, livemode, customer_id) DO UPDATE
            SET credit_limit = excluded.credit_limit, currency = excluded.currency""",
            customer_id, limit, currency)


class Reservations:
    def __init__(self, conn):
        self._conn = conn

    async def exposure_and(self, bill_to_id: str, reservation_id: str) -> tuple[int, Reservation | None]:
        """Open reservations on a bill-to account (unpaid invoices join this sum once invoicing exists), and the
        reservation `reservation_id` if it exists already."""
        row = await self._conn.fetchrow("""
            SELECT (SELECT coalesce(sum(amount), 0) FROM reservations WHERE bill_to_id = $1 AND status = 'reserved')
                   AS exposure, r.*
            FROM (SELECT 1) one LEFT JOIN reservations r ON r.reservation_id = $2""", bill_to_id, reservation_id)
        return int(row["exposure"]), _reservation(row)

    async def exposure(self, bill_to_id: str) -> int:
        return int(await self._conn.fetchval(
            "SELECT coalesce(sum(amount), 0) FROM reservations WHERE bill_to_id = $1 AND status = 'reserved'",
            bill_to_id))

    async def add(self, r: Reservation, at: datetime) -> bool:
        """Insert a reservation row; False if its id is taken (a concurrent release left a tombstone)."""
        return await self._conn.fetchval("""
            INSERT INTO reservations (reservation_id, bill_to_id, customer_id, checkout_id, amount, currency, status,
                                      created_at, released_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT (reservation_id) DO NOTHING RETURNING true""",
            r.reservation_id, r.bill_to_id, r.customer_id, r.checkout_id, r.amount, r.currency, r.status.value, at,
            None if r.holds_credit else at,
        ) is not None

    async def get_for_update(self, reservation_id: str) -> Reservation | None:
        return _reservation(await self._conn.fetchrow(
            "SELECT * FROM reservations WHERE reservation_id = $1 FOR UPDATE", reservation_id))

    async def release(self, reservation_id: str, at: datetime) -> None:
        await self._conn.execute(
            "UPDATE reservations SET status = 'released', released_at = $2 WHERE reservation_id = $1",
            reservation_id, at)
