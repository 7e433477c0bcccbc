"""What a credit handler is given: the message's transaction, with credit's repositories on it."""

from libs.runtime.unit_of_work import UnitOfWork

from .repository import Accounts, Reservations


class CreditUnitOfWork(UnitOfWork):
    accounts: Accounts
    reservations: Reservations

    def __init__(self, conn, scope, incoming=None, **kw):
        super().__init__(conn, scope, incoming, **kw)
        if conn is not None:  # unit tests hand in-memory repositories instead
            self.accounts = Accounts(conn)
            self.reservations = Reservations(conn)
