"""The notifier's repository: prepared statements on the unit of work's connection.

The transaction is scoped to the message's tenant and mode by row-level security (libs/runtime/database.py):
tenant_id/livemode default to the scope on insert.
"""

import json

from .domain import PublicEvent


class Events:
    def __init__(self, conn):
        self._conn = conn

    async def record(self, event: PublicEvent) -> bool:
        """Store an event once; False when that aggregate version was already recorded."""
        return await self._conn.fetchval("""
            INSERT INTO events (id, type, aggregate_id, aggregate_version, data, occurred_at, received_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT DO NOTHING RETURNING true""",
            event.id, event.type, event.aggregate_id, event.aggregate_version, json.dumps(dict(event.data)),
            event.occurred_at, event.received_at) is not None
