"""What a credit handler is given: the message's transaction, with credit's repositories on it."""

from libs.runtime.unit_of_work import UnitOfWork

from .repository import Accounts, InvoiceCopies, Reservations, UnappliedLedger


class CreditUnitOfWork(UnitOfWork):
    accounts: Accounts
    reservations: Reservations
    invoices: InvoiceCopies
    unapplied: UnappliedLedger

    def __init__(self, conn, scope, incoming=None, **kw):
        super().__init__(conn, scope, incoming, **kw)
        if conn is not None:  # unit tests hand in-memory repositories instead
            self.accounts = Accounts(conn)
            self.reservations = Reservations(conn)
            self.invoices = InvoiceCopies(conn)
            self.unapplied = UnappliedLedger(conn)
