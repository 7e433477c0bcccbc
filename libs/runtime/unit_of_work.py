"""What a handler is given: one transaction bound to one message's tenant and mode, its repositories, its outbox.

A handler reads like the sequence diagram (docs/architecture.md, "A handler"):

    async def reserve_credit(cmd: ReserveCredit, uow: CreditUnitOfWork) -> CreditReserved | CreditRejected:
        account = await uow.accounts.get_for_update(...)   # load
        decision = account.reserve(...)                      # the domain decides (or raises a Rejection)
        await uow.reservations.add(...)                      # store
        uow.outbox.add(topics.CREDIT_EVENTS, key, event)     # emit, in the same transaction
        return reserved                                      # the reply to the command's reply_to

The dispatcher (dispatch.py) owns the inbox claim, the transaction, the commit, the reply and
dead-lettering. Each service subclasses `UnitOfWork` to add its repositories, built on `conn`; the
tenant is in the transaction's scope (database.py), so no repository takes it. Unit tests build
the same subclass over in-memory repositories (`conn=None`).
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from libs.contracts.base import Message
from libs.contracts.envelope import Envelope
from libs.contracts.topics import TopicSpec

from .database import Scope, Unscoped
from .tracing import current_traceparent

if TYPE_CHECKING:
    from .metrics import Metrics


@dataclass(frozen=True)
class OutgoingMessage:
    message_id: str
    tenant_id: str
    livemode: bool
    topic: str
    key: str | None
    value: bytes
    traceparent: str | None = None  # also sent as the Kafka header (tracing.py)


def derive(incoming: Envelope | None, payload: Message, **fields: Any) -> Envelope:
    """An envelope caused by `incoming`: same tenant, mode, request and (by default) correlation."""
    base: dict = {}
    if incoming is not None:
        base = dict(tenant_id=incoming.tenant_id, livemode=incoming.livemode, request_id=incoming.request_id,
                    correlation_id=incoming.correlation_id, causation_id=incoming.message_id)
    base.update({k: v for k, v in fields.items() if v is not None})
    if "traceparent" not in base and (traceparent := current_traceparent()):
        base["traceparent"] = traceparent  # the span that causes it: the handler's
    return Envelope(payload=payload, **base)


class Outbox:
    """Messages the handler emits; committed with its state change, published after the commit."""

    def __init__(self, incoming: Envelope | None):
        self._incoming = incoming
        self.pending: list[OutgoingMessage] = []

    def add(self, topic: TopicSpec | str, key: str | None, payload: Message, **fields: Any) -> Envelope:
        """Queue `payload` on `topic`; envelope fields (tenant, request, correlation) follow the incoming message
        unless given (a saga answering its caller, a sweeper with no incoming message)."""
        env = derive(self._incoming, payload, **fields)
        name = topic.name if isinstance(topic, TopicSpec) else topic
        self.pending.append(OutgoingMessage(env.message_id, env.tenant_id, env.livemode, name, key, env.to_bytes(),
                                            env.traceparent))
        return env

    @property
    def envelopes(self) -> list[tuple[str, str | None, Envelope]]:
        """(topic, key, envelope) of each queued message — for tests."""
        return [(m.topic, m.key, Envelope.from_bytes(m.value)) for m in self.pending]


class UnitOfWork:
    def __init__(self, conn: Any, scope: Scope | Unscoped, incoming: Envelope | None = None, *,
                 now: datetime | None = None, settings: Any = None):
        self.conn = conn
        self.scope = scope
        self.message = incoming  # the envelope handled: ids, request id, reply_to, correlation
        self.outbox = Outbox(incoming)
        self.now = now or datetime.now(UTC)  # one clock reading per message
        self.settings = settings  # the service's settings (rates, timeouts a rule needs)
        self.observations: list[Callable[["Metrics"], None]] = []

    def observe(self, record: Callable[["Metrics"], None]) -> None:
        """`record(metrics)` runs once this unit's transaction has committed, so an attempt rolled back (a batch
        handled again one by one, a quick retry) counts nothing. In memory only: no statement."""
        self.observations.append(record)
