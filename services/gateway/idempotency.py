"""`Idempotency-Key` on POST (docs/api.md, "Idempotency"): the first final answer is stored and replayed; 5xx never is.

A record is claimed with INSERT … ON CONFLICT under a lease. The same key with another request is
409 idempotency_key_mismatch; while the lease is live a second request is 409 idempotency_key_in_use;
once it has lapsed (a gateway died, a reply timed out and the lease was released) a retry takes the
record over and executes again — downstream commands are themselves idempotent. A lease names the
gateway instance that holds it: one restarted with the same HARMON_INSTANCE_ID releases its previous
run's leases at once (instance ids must be unique among running gateways, as their reply topics are).
"""

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from libs.contracts.ids import new_id
from libs.runtime.database import Database, Scope, Unscoped
from libs.runtime.logs import request_id_var

from .errors import IDEMPOTENCY, ApiError, invalid
from .state import CALLER, IDEMPOTENCY_KEY_HEADER, JSON_BODY, MINTED_ID, REPLAYED_HEADER, endpoint_of

log = logging.getLogger("harmon.gateway.idempotency")

KEY_HEADER = IDEMPOTENCY_KEY_HEADER
MAX_KEY_CHARS = 255
_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")  # printable ASCII: it travels in headers and logs


def request_hash(method: str, path: str, body: dict, if_match: str | None = None) -> str:
    """sha256 of the method, path, `If-Match` and the body as canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method}\n{path}\n{if_match or ''}\n{canonical}".encode()).hexdigest()


def validate_key(raw: str) -> str:
    key = raw.strip()
    if not _KEY.match(key):
        raise invalid("parameter_invalid", f"{KEY_HEADER} must be 1 to {MAX_KEY_CHARS} printable ASCII characters",
                      KEY_HEADER)
    return key


@dataclass(frozen=True)
class Execute:
    """Run the operation: this request holds the lease (until `lease_until`)."""

    lease_until: datetime
    minted_id: str | None


@dataclass(frozen=True)
class Replay:
    status: int
    body: dict


class IdempotencyStore:
    """`holder` is this gateway's instance id, written on the leases it takes.

    On plain asyncpg, each call one short transaction scoped to the caller's tenant and mode by row-level
    security (libs/runtime/database.py): the SQL names the key only."""

    def __init__(self, db: Database, lease_s: float, holder: str, registry: CollectorRegistry | None = None):
        self._db = db
        # requests of this gateway executing under a lease it took (claim → finish or release)
        self.leases_in_flight = Gauge("harmon_idempotency_leases_in_flight", "idempotency-key leases this gateway "
                                      "holds for requests executing now", registry=registry)
        self._lease_s = float(lease_s)
        self._holder = holder

    async def claim(self, tenant_id: str, livemode: bool, key: str, rhash: str, method: str, path: str,
                    mint_prefix: str | None) -> Execute | Replay:
        async with self._db.transaction(Scope(tenant_id, livemode)) as tx:
            inserted = await tx.conn.fetchrow(_CLAIM, key, rhash, method, path, self._lease_s, self._holder,
                                              new_id(mint_prefix) if mint_prefix else None)
            if inserted is not None:
                return Execute(inserted["locked_until"], inserted["minted_id"])
            row = await tx.conn.fetchrow(_READ, key)
            if row is None:  # pruned between the two statements: a key this old is free again
                raise ApiError(409, IDEMPOTENCY, "idempotency_key_in_use",
                               "this Idempotency-Key is being processed; retry shortly")
            if row["request_hash"] != rhash:
                raise ApiError(409, IDEMPOTENCY, "idempotency_key_mismatch",
                               "this Idempotency-Key was used with a different request; use a new key",
                               KEY_HEADER)
            if row["status"] == "done":
                return Replay(row["response_status"], json.loads(row["response_body"]))
            taken = await tx.conn.fetchrow(_TAKE_OVER, key, self._lease_s, self._holder)
            if taken is None:
                raise ApiError(409, IDEMPOTENCY, "idempotency_key_in_use",
                               "a request with this Idempotency-Key is in progress; retry shortly", KEY_HEADER)
            log.info("idempotency key lease lapsed; executing again")
            return Execute(taken["locked_until"], taken["minted_id"])

    async def finish(self, tenant_id: str, livemode: bool, key: str, status: int, body: dict) -> Replay | None:
        """Store the final answer; if another execution stored one first, return that one instead."""
        async with self._db.transaction(Scope(tenant_id, livemode)) as tx:
            if await tx.conn.fetchval(_FINISH, key, status, json.dumps(body)) is not None:
                return None
            row = await tx.conn.fetchrow(_READ, key)
        if row is not None and row["status"] == "done":
            return Replay(row["response_status"], json.loads(row["response_body"]))
        return None

    async def release(self, tenant_id: str, livemode: bool, key: str, lease_until: datetime) -> None:
        """Give up our lease (5xx, timeout) so a retry executes at once; a lease someone took over is not ours."""
        async with self._db.transaction(Scope(tenant_id, livemode)) as tx:
            await tx.conn.execute("UPDATE idempotency_records SET locked_until = now() "
                                  "WHERE key = $1 AND status = 'in_progress' AND locked_until = $2", key, lease_until)

    async def release_leases_of_previous_run(self) -> int:
        """At start: the leases this instance id still holds were taken by its previous process, which died
        (a drained one finished its requests): release them, so a retry executes at once, not after the lease."""
        async with self._db.transaction(RESTART) as tx:
            done = await tx.conn.execute(
                "UPDATE idempotency_records SET locked_until = now() WHERE holder = $1 AND status = 'in_progress' "
                "AND locked_until > now()", self._holder)
        return int(done.split()[-1])

    async def prune(self, retention_h: float) -> int:
        """Forget keys older than the retention (at least 24 h), unless still under a live lease."""
        async with self._db.transaction(PRUNING) as tx:
            done = await tx.conn.execute(
                "DELETE FROM idempotency_records WHERE created_at < now() - make_interval(secs => $1) "
                "AND (status = 'done' OR locked_until < now())", retention_h * 3600.0)
        return int(done.split()[-1])


IDEMPOTENCY_STORE = web.AppKey("idempotency", IdempotencyStore)
RESTART = Unscoped("restart: the leases this gateway instance held, in every tenant and mode")
PRUNING = Unscoped("pruning: expired keys of every tenant and mode")
_CLAIM = """
    INSERT INTO idempotency_records (key, request_hash, method, path, status, locked_until, holder, minted_id, created_at)
    VALUES ($1, $2, $3, $4, 'in_progress', now() + make_interval(secs => $5), $6, $7, now())
    ON CONFLICT DO NOTHING RETURNING locked_until, minted_id"""
_READ = "SELECT request_hash, status, response_status, response_body FROM idempotency_records WHERE key = $1"
_TAKE_OVER = """
    UPDATE idempotency_records SET locked_until = now() + make_interval(secs => $2), holder = $3
    WHERE key = $1 AND status = 'in_progress' AND locked_until < now() RETURNING locked_until, minted_id"""
_FINISH = """
    UPDATE idempotency_records SET status = 'done', response_status = $2, response_body = $3::json,
        locked_until = NULL, holder = NULL
    WHERE key = $1 AND status = 'in_progress' RETURNING key"""


def replay_response(replay: Replay) -> web.Response:
    return web.json_response(replay.body, status=replay.status, headers={REPLAYED_HEADER: "true"})


def idempotency_middleware() -> web.middleware:
    """Runs after authentication and body validation, so neither failure is ever stored."""

    @web.middleware
    async def idempotency(request: web.Request, handler) -> web.StreamResponse:
        endpoint = endpoint_of(request)
        raw_key = request.headers.get(KEY_HEADER)
        if endpoint is None:
            return await handler(request)
        if request.method != "POST" or raw_key is None or not endpoint.replay:
            if raw_key is not None and request.method == "POST":
                validate_key(raw_key)
            if endpoint.mints:
                request[MINTED_ID] = new_id(endpoint.mints)
            return await handler(request)

        key = validate_key(raw_key)
        caller = request[CALLER]
        store = request.app[IDEMPOTENCY_STORE]
        rhash = request_hash(request.method, request.path, request.get(JSON_BODY, {}), request.headers.get("If-Match"))
        claim = await store.claim(caller.tenant_id, caller.livemode, key, rhash, request.method, request.path,
                                  endpoint.mints)
        if isinstance(claim, Replay):
            return replay_response(claim)
        if claim.minted_id:
            request[MINTED_ID] = claim.minted_id
        try:
            with store.leases_in_flight.track_inprogress():
                response = await handler(request)
        except ApiError as e:
            response = e.response(request_id_var.get())
        except Exception:
            await store.release(caller.tenant_id, caller.livemode, key, claim.lease_until)
            raise
        if response.status >= 500 or not isinstance(response, web.Response) or response.body is None:
            await store.release(caller.tenant_id, caller.livemode, key, claim.lease_until)
            return response
        try:
            stored = json.loads(response.body)
            for name in endpoint.withheld:  # a secret is answered once, never kept in our database
                stored.pop(name, None)
            earlier = await store.finish(caller.tenant_id, caller.livemode, key, response.status, stored)
        except Exception:
            # the operation ran; answer it, and let the lease lapse so a retry runs it again (idempotently)
            log.exception("could not store the final answer of an idempotent request")
            return response
        return replay_response(earlier) if earlier is not None else response

    return idempotency
