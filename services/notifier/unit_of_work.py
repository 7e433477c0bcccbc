"""What a notifier handler is given: the message's transaction, with the notifier's repository on it."""

from libs.runtime.unit_of_work import UnitOfWork

from .repository import Events


class NotifierUnitOfWork(UnitOfWork):
    events: Events

    def __init__(self, conn, scope, incoming=None, **kw):
        super().__init__(conn, scope, incoming, **kw)
        if conn is not None:  # unit tests hand an in-memory repository instead
            self.events = Events(conn)
