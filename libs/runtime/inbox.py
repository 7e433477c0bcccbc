"""The inbox: ids of messages already processed, so a redelivered message changes nothing.

A batch's claims and the outbox rows its handlers queued are written by one statement at the end of
its transaction (`record`): each round trip to PostgreSQL costs more here than the SQL it carries.
A claim that finds its id already there (a redelivery after a crash, a replay) makes `record`
report fewer claims than asked; the dispatcher then rolls the batch back and handles its messages
one by one, each duplicate skipped alone (dispatch.py).
"""

from dataclasses import dataclass

from .unit_of_work import OutgoingMessage


@dataclass(frozen=True)
class Claim:
    message_id: str
    tenant_id: str
    livemode: bool
    message_type: str


# Data-modifying CTEs run once and to completion whether or not the final SELECT reads them.
_RECORD = """
WITH claimed AS (
    INSERT INTO inbox (message_id, tenant_id, livemode, message_type)
    SELECT * FROM unnest($1::text[], $2::text[], $3::boolean[], $4::text[])
    ON CONFLICT DO NOTHING
    RETURNING 1
), queued AS (
    INSERT INTO outbox (message_id, tenant_id, livemode, topic, key, value)
    SELECT * FROM unnest($5::text[], $6::text[], $7::boolean[], $8::text[], $9::text[], $10::bytea[])
    RETURNING 1
)
SELECT count(*) FROM claimed"""

_SEEN = "SELECT message_id FROM inbox WHERE message_id = ANY($1::text[])"


async def record(conn, claims: list[Claim], messages: list[OutgoingMessage]) -> int:
    """Claim `claims` and queue `messages` in the caller's transaction; returns how many claims were new."""
    if not claims and not messages:
        return 0
    return await conn.fetchval(
        _RECORD,
        [c.message_id for c in claims], [c.tenant_id for c in claims], [c.livemode for c in claims],
        [c.message_type for c in claims],
        [m.message_id for m in messages], [m.tenant_id for m in messages], [m.livemode for m in messages],
        [m.topic for m in messages], [m.key for m in messages], [m.value for m in messages],
    )


async def seen(conn, message_ids: list[str]) -> set[str]:
    """Which of these ids were processed before (a redelivered batch is skipped without running its handlers)."""
    return {r["message_id"] for r in await conn.fetch(_SEEN, message_ids)}
