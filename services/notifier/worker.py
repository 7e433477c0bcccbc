"""The webhook delivery worker (a background job of notifier; docs/api.md, "Webhooks", "Retries").

Each round claims endpoints that have a due delivery and no attempt in flight: a lease on the endpoint row
(`leased_until`, `lease_owner`) taken with FOR UPDATE SKIP LOCKED and committed, so two instances never make
the same attempt and each endpoint has at most one attempt in flight. Each attempt is its own task (at most
`webhook_concurrency` per instance): one slow endpoint never delays another. The POST is made outside any
transaction; its result (an attempt row, the delivery's next step, the disable rule) is one transaction in
the endpoint's tenant and mode. A crashed instance's leases expire; pending deliveries live in the database.
"""

import asyncio
import json
import logging
import random
import secrets as _secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import aiohttp
from aiohttp.abc import AbstractResolver

from harmon_webhooks import sign
from libs.contracts.base import Rejection
from libs.contracts.ids import WEBHOOK_DELIVERY, new_id
from libs.runtime.database import Database, Scope, Unscoped

from . import domain, handlers
from .config import Settings
from .domain import Attempt, Delivery
from .unit_of_work import NotifierUnitOfWork, resolve

log = logging.getLogger("harmon.notifier.webhooks")

USER_AGENT = "Harmon-Webhooks/1"
BODY_LIMIT = 1024
CLAIM = Unscoped("the delivery worker claims due deliveries of every tenant and mode")


class PinnedResolver(AbstractResolver):
    """Answers with the addresses the URL rule just checked: the connection goes where the check looked, even
    if DNS answers differently a moment later (TLS still verifies the URL's hostname)."""

    def __init__(self, addresses: Sequence[str]):
        self._addresses = list(addresses)

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict]:
        return [{"hostname": host, "host": a, "port": port,
                 "family": socket.AF_INET6 if ":" in a else socket.AF_INET, "proto": 0,
                 "flags": socket.AI_NUMERICHOST} for a in self._addresses]

    async def close(self) -> None:
        return None


def error_class(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return "timeout"
    if isinstance(exc, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)):
        return "tls"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection_refused" if isinstance(exc.os_error, ConnectionRefusedError) else "connection_error"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return "connection_closed"
    return "network_error"


class DeliveryWorker:
    def __init__(self, db: Database, settings: Settings, *, resolver: domain.Resolver = resolve,
                 rng: random.Random | None = None, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.db, self.settings, self.resolver, self.rng, self.clock = db, settings, resolver, rng, clock
        self.owner = f"{settings.instance_id}-{_secrets.token_hex(4)}"
        self.inflight: dict[str, asyncio.Task] = {}

    async def run(self) -> None:
        """Until cancelled: claim, start an attempt per claimed endpoint, wait a poll interval."""
        try:
            while True:
                try:
                    await self.round()
                except (OSError, asyncio.TimeoutError) as exc:  # the database away: try again next round
                    log.warning("webhook claim failed: %s", type(exc).__name__)
                await asyncio.sleep(self.settings.webhook_poll_interval_s)
        finally:
            tasks = list(self.inflight.values())
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.shield(self._release(list(self.inflight)))

    async def round(self) -> list[asyncio.Task]:
        room = self.settings.webhook_concurrency - len(self.inflight)
        if room <= 0:
            return []
        started = []
        for endpoint_id, tenant_id, livemode in await self.claim(room):
            task = asyncio.create_task(self.attempt(endpoint_id, Scope(tenant_id, livemode)))
            self.inflight[endpoint_id] = task
            task.add_done_callback(lambda _t, e=endpoint_id: self.inflight.pop(e, None))
            started.append(task)
        return started

    async def claim(self, limit: int) -> list[tuple[str, str, bool]]:
        now = self.clock()
        async with self.db.transaction(CLAIM) as tx:
            rows = await tx.conn.fetch("""
                UPDATE webhook_endpoints SET leased_until = $3 + make_interval(secs => $4), lease_owner = $5
                WHERE id IN (
                    SELECT e.id FROM webhook_endpoints e
                    WHERE e.status = 'enabled' AND (e.leased_until IS NULL OR e.leased_until < $3)
                      AND NOT (e.id = ANY($1::text[]))
                      AND EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.endpoint_id = e.id
                                  AND d.status = 'pending' AND d.next_attempt_at <= $3)
                    ORDER BY e.leased_until NULLS FIRST LIMIT $2
                    FOR UPDATE OF e SKIP LOCKED)
                RETURNING id, tenant_id, livemode""",
                list(self.inflight), limit, now, self.settings.webhook_lease_s, self.owner)
        return [(r["id"], r["tenant_id"], r["livemode"]) for r in rows]

    async def _release(self, endpoint_ids: list[str]) -> None:
        if not endpoint_ids:
            return
        try:
            async with self.db.transaction(CLAIM) as tx:
                await tx.conn.execute("""UPDATE webhook_endpoints SET leased_until = NULL, lease_owner = NULL
                                         WHERE id = ANY($1::text[]) AND lease_owner = $2""", endpoint_ids, self.owner)
        except Exception as exc:  # the leases expire on their own
            log.warning("releasing webhook leases failed: %s", type(exc).__name__)

    async def _load(self, endpoint_id: str, scope: Scope):
        now = self.clock()
        async with self.db.transaction(scope) as tx:
            uow = NotifierUnitOfWork(tx.conn, tx.scope, settings=self.settings, now=now)
            endpoint = await uow.endpoints.get(endpoint_id)
            row = await tx.conn.fetchrow("""
                SELECT * FROM webhook_deliveries WHERE endpoint_id = $1 AND status = 'pending'
                  AND next_attempt_at <= $2 ORDER BY next_attempt_at, id LIMIT 1""", endpoint_id, now)
            if endpoint is None or endpoint.status != "enabled" or row is None:
                return None
            event = await uow.events.get(row["event_id"])
        delivery = Delivery(row["id"], row["endpoint_id"], row["event_id"], row["event_type"], row["attempts"],
                            row["created_at"], row["status"], row["next_attempt_at"])
        return endpoint, delivery, event

    async def attempt(self, endpoint_id: str, scope: Scope) -> None:
        try:
            loaded = await self._load(endpoint_id, scope)
            if loaded is None:
                return
            endpoint, delivery, event = loaded
            now = self.clock()
            body = json.dumps(event.body(scope.livemode), separators=(",", ":")).encode()
            status, error, text, latency_ms = await self.post(endpoint.url, scope.livemode, body, event.id,
                                                              endpoint.signing_secrets(now))
            await self.finish(scope, endpoint_id, delivery, status, error, text, latency_ms)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhook attempt to %s failed unexpectedly", endpoint_id)
        finally:
            await self._release([endpoint_id])

    async def post(self, url: str, livemode: bool, body: bytes, event_id: str,
                   secrets: list[str]) -> tuple[int | None, str | None, str, int]:
        """(status code or None, error class or None, first 1 KiB of the answer, latency in ms)."""
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            _, host, _ = domain.split_url(url)
            try:
                looked_up = list(await self.resolver(host))
            except OSError:
                looked_up = None
            if looked_up is None and not _is_literal(host):
                return None, "dns", "", took()

            async def same(_host: str) -> Sequence[str]:
                return looked_up or []

            addresses = await domain.checked_addresses(url, livemode, same)
        except Rejection:
            return None, "url_invalid", "", took()
        headers = {"Content-Type": "application/json", "Harmon-Event-Id": event_id, "User-Agent": USER_AGENT,
                   "Harmon-Signature": sign(body, secrets, int(time.time()))}
        connector = aiohttp.TCPConnector(resolver=PinnedResolver(addresses), use_dns_cache=False, force_close=True)
        try:
            async with aiohttp.ClientSession(connector=connector,
                                             timeout=aiohttp.ClientTimeout(total=self.settings.webhook_timeout_s),
                                             auto_decompress=False) as http:
                async with http.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                    raw = await resp.content.read(BODY_LIMIT)
                    return resp.status, None, raw.decode("utf-8", "replace")[:BODY_LIMIT], took()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return None, error_class(exc), "", took()

    async def finish(self, scope: Scope, endpoint_id: str, delivery: Delivery, status: int | None,
                     error: str | None, text: str, latency_ms: int) -> None:
        now = self.clock()
        s = self.settings
        number = delivery.attempts + 1
        outcome = domain.outcome_of(status, number, delivery.created_at, now, s.retry_schedule,
                                    s.max_age_s(scope.livemode), self.rng)
        async with self.db.transaction(scope) as tx:
            uow = NotifierUnitOfWork(tx.conn, tx.scope, settings=s, now=now)
            attempt = Attempt(new_id(WEBHOOK_DELIVERY), endpoint_id, delivery.event_id, delivery.event_type, number,
                              now, outcome.outcome, latency_ms, status, error, text, outcome.next_attempt_at)
            await tx.conn.execute("""
                INSERT INTO webhook_attempts (id, delivery_id, endpoint_id, event_id, event_type, attempt,
                    attempted_at, outcome, status_code, error, latency_ms, response_body, next_attempt_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)""",
                attempt.id, delivery.id, endpoint_id, attempt.event_id, attempt.event_type, number, now,
                attempt.outcome, status, error, latency_ms, text, attempt.next_attempt_at)
            # a delivery cancelled meanwhile (the endpoint deleted) stays cancelled
            await tx.conn.execute("""
                UPDATE webhook_deliveries SET attempts = $2, next_attempt_at = $3,
                       status = CASE $4 WHEN 'retrying' THEN 'pending' ELSE $4 END
                WHERE id = $1 AND status = 'pending'""",
                delivery.id, number, outcome.next_attempt_at, outcome.outcome)
            endpoint = await uow.endpoints.get(endpoint_id, for_update=True)
            if endpoint is None:
                return
            after = endpoint.after_attempt(outcome.outcome == "delivered", now, s.webhook_disable_after_s)
            if after != endpoint:
                await uow.endpoints.save(after)
            if after.status == "disabled" and endpoint.status == "enabled":
                log.warning("webhook endpoint %s disabled: every attempt failed for %.0f s", endpoint_id,
                            s.webhook_disable_after_s)
                await handlers.record_event(domain.disabled_event(after, scope.livemode, now), uow)
        log.info("webhook %s attempt %d to %s: %s (%s)", delivery.event_id, number, endpoint_id, outcome.outcome,
                 status if status is not None else error)


def _is_literal(host: str) -> bool:
    import ipaddress
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def background(ctx) -> Awaitable[None]:
    """ServiceSpec.background: the worker on the service's database."""
    return DeliveryWorker(ctx.db, ctx.settings).run()
