"""What a notifier handler is given: the message's transaction, with the notifier's repository on it, the
sealer of endpoint secrets, and the resolver the URL rule checks hosts with."""

import asyncio
import socket
from collections.abc import Sequence
from functools import lru_cache

from libs.runtime.unit_of_work import UnitOfWork

from .domain import Resolver
from .repository import Deliveries, Endpoints, Events
from .sealing import Sealer


async def resolve(host: str) -> Sequence[str]:
    """Every address `host` resolves to (both families): the URL rule wants all of them public."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


@lru_cache(maxsize=4)
def sealer_for(key: bytes) -> Sealer:
    return Sealer(key)


class NotifierUnitOfWork(UnitOfWork):
    events: Events
    endpoints: Endpoints
    deliveries: Deliveries
    resolve: Resolver = staticmethod(resolve)

    def __init__(self, conn, scope, incoming=None, **kw):
        super().__init__(conn, scope, incoming, **kw)
        if conn is not None:  # unit tests hand in-memory repositories instead
            self.events = Events(conn)
            self.deliveries = Deliveries(conn)
            if self.settings is not None:  # the secrets key is a setting
                self.endpoints = Endpoints(conn, sealer_for(self.settings.key_bytes))
