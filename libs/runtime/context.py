"""A running service's parts, and which handler each message type of each topic goes to."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from libs.contracts.base import Message
from libs.contracts.topics import TopicSpec

from .broker import BrokerLink
from .consumer import Consumer
from .database import Database
from .metrics import Metrics
from .outbox import Outbox
from .parking import Parking
from .settings import ServiceSettings
from .unit_of_work import UnitOfWork

# `async def verb_noun(cmd, uow) -> reply | None`: the reply goes to the command's reply_to.
Handler = Callable[[Any, Any], Awaitable[Message | None]]


@dataclass(frozen=True)
class Route:
    handler: Handler
    # a query changes nothing: no inbox claim, and its reply (or what it hands on, `uow.outbox.add`) is published
    # without an outbox row: a lost one leaves the caller to time out and ask again
    query: bool = False


@dataclass
class ServiceContext:
    name: str
    settings: ServiceSettings
    link: BrokerLink
    db: Database
    outbox: Outbox
    metrics: Metrics
    unit_of_work: type[UnitOfWork] = UnitOfWork
    consumers: list[Consumer] = field(default_factory=list)
    routes: dict[str, dict[str, Route]] = field(default_factory=dict)  # topic → message type → route
    extras: dict = field(default_factory=dict)
    parking: Parking | None = None


def _type_of(cls: type[Message]) -> str:
    return cls.model_fields["type"].default


def subscribe(ctx: ServiceContext, topic: TopicSpec | str, handlers: dict[type[Message], Handler] | None = None, *,
              queries: dict[type[Message], Handler] | None = None) -> None:
    """Route `topic`'s messages to handlers by type: `handlers` change state (each message claimed once in
    the inbox), `queries` only read. `open_subscriptions` then reads every routed topic."""
    name = topic.name if isinstance(topic, TopicSpec) else topic
    routes = ctx.routes.setdefault(name, {})
    routes.update({_type_of(cls): Route(h) for cls, h in (handlers or {}).items()})
    routes.update({_type_of(cls): Route(h, query=True) for cls, h in (queries or {}).items()})
