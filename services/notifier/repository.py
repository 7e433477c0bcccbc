"""The notifier's repository: prepared statements on the unit of work's connection.

The transaction is scoped to the message's tenant and mode by row-level security (libs/runtime/database.py):
tenant_id/livemode default to the scope on insert, and another tenant's or mode's row is simply not there.
Listings are newest first by id (ids are time-ordered ULIDs, libs/contracts/ids.py).
"""

import json
import secrets as _secrets
from datetime import datetime

from .domain import Attempt, Endpoint, PublicEvent, Secret
from .sealing import Sealer


def _event(row) -> PublicEvent:
    data = row["data"]
    return PublicEvent(row["id"], row["type"], row["aggregate_id"], row["aggregate_version"],
                       json.loads(data) if isinstance(data, str) else data, row["occurred_at"], row["received_at"])


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

    async def get(self, event_id: str) -> PublicEvent | None:
        row = await self._conn.fetchrow("SELECT * FROM events WHERE id = $1", event_id)
        return None if row is None else _event(row)

    async def page(self, limit: int, starting_after: str | None, event_type: str | None) -> list[PublicEvent]:
        rows = await self._conn.fetch("""
            SELECT * FROM events WHERE ($1::text IS NULL OR id < $1) AND ($2::text IS NULL OR type = $2)
            ORDER BY id DESC LIMIT $3""", starting_after, event_type, limit)
        return [_event(r) for r in rows]


class Endpoints:
    """Endpoints with their secrets, sealed at rest (sealing.py)."""

    def __init__(self, conn, sealer: Sealer):
        self._conn, self._sealer = conn, sealer

    async def add(self, endpoint: Endpoint) -> bool:
        """False when the id is taken (a command seen again, or — invisible under RLS — another tenant's)."""
        added = await self._conn.fetchval("""
            INSERT INTO webhook_endpoints (id, url, enabled_events, description, status, version, created_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING RETURNING true""",
            endpoint.id, endpoint.url, list(endpoint.enabled_events), endpoint.description, endpoint.status,
            endpoint.version, endpoint.created_at) is not None
        if added:
            await self._add_secrets(endpoint.id, endpoint.secrets)
        return added

    async def _add_secrets(self, endpoint_id: str, secrets: tuple[Secret, ...]) -> None:
        await self._conn.executemany("""
            INSERT INTO webhook_secrets (id, endpoint_id, sealed, created_at, expires_at)
            VALUES ($1, $2, $3, $4, $5)""",
            [(f"whs_{_secrets.token_hex(12)}", endpoint_id, self._sealer.seal(s.value, endpoint_id), s.created_at,
              s.expires_at) for s in secrets])

    async def get(self, endpoint_id: str, *, for_update: bool = False) -> Endpoint | None:
        row = await self._conn.fetchrow(
            "SELECT * FROM webhook_endpoints WHERE id = $1" + (" FOR UPDATE" if for_update else ""), endpoint_id)
        if row is None:
            return None
        [endpoint] = await self._with_secrets([row])
        return endpoint

    async def _with_secrets(self, rows) -> list[Endpoint]:
        ids = [r["id"] for r in rows]
        sealed = await self._conn.fetch(
            "SELECT endpoint_id, sealed, created_at, expires_at FROM webhook_secrets WHERE endpoint_id = ANY($1)",
            ids)
        by_endpoint: dict[str, list[Secret]] = {}
        for s in sealed:
            by_endpoint.setdefault(s["endpoint_id"], []).append(
                Secret(self._sealer.open(s["sealed"], s["endpoint_id"]), s["created_at"], s["expires_at"]))
        return [Endpoint(r["id"], r["url"], tuple(r["enabled_events"]), r["description"], r["status"],
                         r["created_at"], tuple(sorted(by_endpoint.get(r["id"], []), key=lambda s: s.created_at,
                                                       reverse=True)),
                         r["version"], r["failing_since"]) for r in rows]

    async def save(self, endpoint: Endpoint, *, secrets_changed: bool = False) -> None:
        await self._conn.execute("""
            UPDATE webhook_endpoints SET url = $2, enabled_events = $3, description = $4, status = $5, version = $6,
                   failing_since = $7
            WHERE id = $1""", endpoint.id, endpoint.url, list(endpoint.enabled_events), endpoint.description,
            endpoint.status, endpoint.version, endpoint.failing_since)
        if secrets_changed:  # a rotation: the secrets are replaced (expired ones dropped)
            await self._conn.execute("DELETE FROM webhook_secrets WHERE endpoint_id = $1", endpoint.id)
            await self._add_secrets(endpoint.id, endpoint.secrets)

    async def delete(self, endpoint_id: str) -> bool:
        await self._conn.execute("DELETE FROM webhook_secrets WHERE endpoint_id = $1", endpoint_id)
        return await self._conn.fetchval(
            "DELETE FROM webhook_endpoints WHERE id = $1 RETURNING true", endpoint_id) is not None

    async def page(self, limit: int, starting_after: str | None) -> list[Endpoint]:
        rows = await self._conn.fetch("""
            SELECT * FROM webhook_endpoints WHERE ($1::text IS NULL OR id < $1) ORDER BY id DESC LIMIT $2""",
            starting_after, limit)
        return await self._with_secrets(rows)

    async def subscribed(self, event_type: str) -> list[str]:
        """Ids of the enabled endpoints (this tenant and mode) that take `event_type`."""
        rows = await self._conn.fetch("""
            SELECT id FROM webhook_endpoints
            WHERE status = 'enabled' AND ($1 = ANY(enabled_events) OR '*' = ANY(enabled_events)) ORDER BY id""",
            event_type)
        return [r["id"] for r in rows]


def _attempt(r) -> Attempt:
    return Attempt(r["id"], r["endpoint_id"], r["event_id"], r["event_type"], r["attempt"], r["attempted_at"],
                   r["outcome"], r["latency_ms"], r["status_code"], r["error"], r["response_body"],
                   r["next_attempt_at"])


class Deliveries:
    def __init__(self, conn):
        self._conn = conn

    async def enqueue(self, event: PublicEvent, endpoint_ids: list[str], now: datetime) -> int:
        """One pending delivery per endpoint, due now; an event already owed to an endpoint is not owed twice."""
        if not endpoint_ids:
            return 0
        rows = await self._conn.fetch("""
            INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, status, attempts, created_at,
                                            next_attempt_at)
            SELECT e, $2, $3, 'pending', 0, $4, $4 FROM unnest($1::text[]) AS e
            ON CONFLICT (tenant_id, livemode, endpoint_id, event_id) DO NOTHING RETURNING id""",
            endpoint_ids, event.id, event.type, now)
        return len(rows)

    async def cancel_for(self, endpoint_id: str) -> int:
        done = await self._conn.execute("""
            UPDATE webhook_deliveries SET status = 'cancelled', next_attempt_at = NULL
            WHERE endpoint_id = $1 AND status = 'pending'""", endpoint_id)
        return int(done.split()[-1])

    async def attempts(self, endpoint_id: str, limit: int, starting_after: str | None) -> list[Attempt]:
        rows = await self._conn.fetch("""
            SELECT * FROM webhook_attempts WHERE endpoint_id = $1 AND ($2::text IS NULL OR id < $2)
            ORDER BY id DESC LIMIT $3""", endpoint_id, starting_after, limit)
        return [_attempt(r) for r in rows]
