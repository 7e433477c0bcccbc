"""Credit's repositories: prepared statements on the unit of work's connection.

The transaction is scoped to the message's tenant and mode by row-level security (libs/runtime/database.py):
the SQL names business keys only, and tenant_id/livemode default to the scope on insert.

Locking (docs/credit.md, "Concurrency"): a transaction that changes a bill-to account's exposure locks the
account's row first (`lock_bill_to`, `lock`, `lock_for_reservation`), then reads or writes its reservations,
invoice copies and ledger; so its exposure, read after the lock, is the one its event's version stands for.
"""

from datetime import datetime

from libs.contracts.credit import ReservationStatus
from libs.contracts.money import DEFAULT_CURRENCY

from .domain import CreditAccount, Exposure, InvoiceCopy, Reservation

_ACCOUNT = "customer_id, bill_to_id, terms, credit_limit, currency, customer_known"


def _exposure_columns(bill_to: str) -> str:
    """The three parts of `bill_to`'s exposure (domain.Exposure), as columns of one statement; each reads a partial
    or narrow index: reservations still holding, open invoice copies, the account's ledger."""
    return f"""
        (SELECT coalesce(sum(amount - captured), 0) FROM reservations
          WHERE bill_to_id = {bill_to} AND status = 'reserved' AND captured < amount) AS held,
        (SELECT coalesce(sum(amount_due), 0) FROM invoice_copies
          WHERE bill_to_id = {bill_to} AND status = 'open') AS invoiced,
        (SELECT coalesce(sum(greatest(per_payment, 0)), 0) FROM (
            SELECT sum(amount) AS per_payment FROM unapplied_credit WHERE bill_to_id = {bill_to} GROUP BY payment_id
         ) payments) AS unapplied"""


def _exposure(row) -> Exposure:
    return Exposure(int(row["held"]), int(row["invoiced"]), int(row["unapplied"]))


def _account(row) -> CreditAccount | None:
    if row is None or row["customer_id"] is None:
        return None
    return CreditAccount(row["customer_id"], row["bill_to_id"], row["terms"], row["credit_limit"], row["currency"],
                         row["customer_known"])


def _reservation(row) -> Reservation | None:
    if row is None or row["reservation_id"] is None:
        return None
    return Reservation(row["reservation_id"], row["bill_to_id"], row["amount"], ReservationStatus(row["status"]),
                       row["currency"], row["customer_id"], row["checkout_id"], row["captured"])


def _copy(row) -> InvoiceCopy | None:
    if row is None:
        return None
    return InvoiceCopy(row["invoice_id"], row["bill_to_id"], row["status"], row["total"], row["amount_due"],
                       row["issued_at"], row["version"], row["invoice_number"], row["due_at"], row["overdue"],
                       row["reservation_id"], row["captured"])


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

    async def lock_for_reservation(self, reservation_id: str, fallback_bill_to: str) -> str:
        """Lock the account a reservation is on (`fallback_bill_to` for an id not reserved yet); returns its id."""
        return await self._conn.fetchval("""
            WITH target AS (
                SELECT coalesce((SELECT bill_to_id FROM reservations WHERE reservation_id = $1), $2) AS id)
            SELECT target.id FROM target
            LEFT JOIN LATERAL (SELECT 1 FROM accounts WHERE customer_id = target.id FOR UPDATE) a ON true""",
            reservation_id, fallback_bill_to)

    async def lock(self, bill_to_id: str, currency: str) -> CreditAccount:
        """Lock a bill-to account for an exposure change an event brings; an account with no row yet gets one (it
        bills itself, on cod, no limit, customer_known false) so the change has a version."""
        return _account(await self._conn.fetchrow(f"""
            INSERT INTO accounts (customer_id, bill_to_id, terms, currency, customer_known) VALUES ($1, $1, 'cod', $2, false)
            ON CONFLICT (tenant_id, livemode, customer_id) DO UPDATE SET version = accounts.version
            RETURNING {_ACCOUNT}""", bill_to_id, currency))

    async def touch(self, bill_to_id: str, currency: str) -> tuple[int, CreditAccount, Exposure]:
        """The account's exposure changed: its version + 1, returned with the account and the exposure after."""
        row = await self._conn.fetchrow(f"""
            INSERT INTO accounts (customer_id, bill_to_id, terms, currency, customer_known, version)
            VALUES ($1, $1, 'cod', $2, false, 1)
            ON CONFLICT (tenant_id, livemode, customer_id) DO UPDATE SET version = accounts.version + 1
            RETURNING version, {_ACCOUNT}, {_exposure_columns('$1')}""", bill_to_id, currency)
        return row["version"], _account(row), _exposure(row)

    async def get(self, customer_id: str) -> CreditAccount | None:
        return _account(await self._conn.fetchrow(f"SELECT {_ACCOUNT} FROM accounts WHERE customer_id = $1", customer_id))

    async def view(self, customer_id: str) -> tuple[CreditAccount, CreditAccount | None, Exposure] | None:
        """A customer, its bill-to account and that account's exposure, in one statement."""
        row = await self._conn.fetchrow(f"""
            SELECT c.customer_id, c.bill_to_id, c.terms, c.credit_limit, c.currency, c.customer_known,
                   b.customer_id AS b_customer_id, b.bill_to_id AS b_bill_to_id, b.terms AS b_terms,
                   b.credit_limit AS b_credit_limit, b.currency AS b_currency, b.customer_known AS b_customer_known,
                   {_exposure_columns('c.bill_to_id')}
            FROM accounts c LEFT JOIN accounts b ON b.customer_id = c.bill_to_id
            WHERE c.customer_id = $1""", customer_id)
        if row is None:
            return None
        bill_to = None if row["b_customer_id"] is None else CreditAccount(
            row["b_customer_id"], row["b_bill_to_id"], row["b_terms"], row["b_credit_limit"], row["b_currency"],
            row["b_customer_known"])
        return _account(row), bill_to, _exposure(row)

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

    async def exposure_and(self, bill_to_id: str, reservation_id: str) -> tuple[Exposure, Reservation | None]:
        """A bill-to account's exposure (held, invoiced, unapplied), and the reservation `reservation_id` if it
        exists already: one statement on the checkout path."""
        row = await self._conn.fetchrow(f"""
            SELECT {_exposure_columns('$1')}, r.*
            FROM (SELECT 1) one LEFT JOIN reservations r ON r.reservation_id = $2""", bill_to_id, reservation_id)
        return _exposure(row), _reservation(row)

    async def exposure(self, bill_to_id: str) -> Exposure:
        return _exposure(await self._conn.fetchrow(f"SELECT {_exposure_columns('$1')}", bill_to_id))

    async def add(self, r: Reservation, at: datetime) -> bool:
        """Insert a reservation row (a tombstone: nothing held, the account's version unchanged); False if its id
        is taken."""
        return await self._conn.fetchval("""
            INSERT INTO reservations (reservation_id, bill_to_id, customer_id, checkout_id, amount, currency, status,
                                      created_at, released_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT (reservation_id) DO NOTHING RETURNING true""",
            r.reservation_id, r.bill_to_id, r.customer_id, r.checkout_id, r.amount, r.currency, r.status.value, at,
            None if r.holds_credit else at,
        ) is not None

    async def reserve(self, r: Reservation, at: datetime) -> int | None:
        """Insert a held reservation and bump its account's version in one statement (an account with no row yet
        gets one); the version, or None if the id is taken (a concurrent release left a tombstone)."""
        return await self._conn.fetchval("""
            WITH ins AS (
                INSERT INTO reservations (reservation_id, bill_to_id, customer_id, checkout_id, amount, currency,
                                          status, created_at)
                VALUES ($1, $2, $3, $4, $5, $6, 'reserved', $7)
                ON CONFLICT (reservation_id) DO NOTHING RETURNING bill_to_id, currency)
            INSERT INTO accounts (customer_id, bill_to_id, terms, currency, customer_known, version)
            SELECT bill_to_id, bill_to_id, 'cod', currency, false, 1 FROM ins
            ON CONFLICT (tenant_id, livemode, customer_id) DO UPDATE SET version = accounts.version + 1
            RETURNING version""",
            r.reservation_id, r.bill_to_id, r.customer_id, r.checkout_id, r.amount, r.currency, at)

    async def get(self, reservation_id: str) -> Reservation | None:
        return _reservation(await self._conn.fetchrow(
            "SELECT * FROM reservations WHERE reservation_id = $1", reservation_id))

    async def get_for_update(self, reservation_id: str) -> Reservation | None:
        return _reservation(await self._conn.fetchrow(
            "SELECT * FROM reservations WHERE reservation_id = $1 FOR UPDATE", reservation_id))

    async def release(self, reservation_id: str, at: datetime) -> None:
        await self._conn.execute(
            "UPDATE reservations SET status = 'released', released_at = $2 WHERE reservation_id = $1",
            reservation_id, at)

    async def set_captured(self, reservation_id: str, captured: int) -> None:
        await self._conn.execute("UPDATE reservations SET captured = $2 WHERE reservation_id = $1",
                                 reservation_id, captured)


class InvoiceCopies:
    def __init__(self, conn):
        self._conn = conn

    async def get(self, invoice_id: str) -> InvoiceCopy | None:
        return _copy(await self._conn.fetchrow("SELECT * FROM invoice_copies WHERE invoice_id = $1", invoice_id))

    async def put(self, inv: InvoiceCopy) -> None:
        await self._conn.execute("""
            INSERT INTO invoice_copies (invoice_id, bill_to_id, invoice_number, status, total, amount_due, issued_at,
                                        due_at, overdue, version, reservation_id, captured)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
            ON CONFLICT (tenant_id, livemode, invoice_id) DO UPDATE
            SET invoice_number = excluded.invoice_number, status = excluded.status, total = excluded.total,
                amount_due = excluded.amount_due, issued_at = excluded.issued_at, due_at = excluded.due_at,
                overdue = excluded.overdue, version = excluded.version, reservation_id = excluded.reservation_id,
                captured = excluded.captured""",
            inv.invoice_id, inv.bill_to_id, inv.invoice_number, inv.status, inv.total, inv.amount_due, inv.issued_at,
            inv.due_at, inv.overdue, inv.version, inv.reservation_id, inv.captured)

    async def open_for(self, bill_to_id: str) -> list[InvoiceCopy]:
        """A bill-to account's open invoices, oldest due first (undated last, then by issue)."""
        rows = await self._conn.fetch("""
            SELECT * FROM invoice_copies WHERE bill_to_id = $1 AND status = 'open'
            ORDER BY due_at NULLS LAST, issued_at, invoice_id""", bill_to_id)
        return [_copy(r) for r in rows]


class UnappliedLedger:
    def __init__(self, conn):
        self._conn = conn

    async def add(self, payment_id: str, invoice_id: str, bill_to_id: str, amount: int, at: datetime) -> bool:
        """A payment's excess (+amount, invoice_id '') or its use by an invoice (−amount); False if recorded
        before."""
        return await self._conn.fetchval("""
            INSERT INTO unapplied_credit (payment_id, invoice_id, bill_to_id, amount, recorded_at)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (tenant_id, livemode, payment_id, invoice_id) DO NOTHING RETURNING true""",
            payment_id, invoice_id, bill_to_id, amount, at) is not None
