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

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.contracts.ids import new_id
from libs.runtime.logs import request_id_var
from libs.runtime.scoping import bind, unscoped

from .errors import IDEMPOTENCY, ApiError, invalid
from .state import CALLER, IDEMPOTENCY_KEY_HEADER, JSON_BODY, MINTED_ID, REPLAYED_HEADER, endpoint_of
from .tables import IdempotencyRecord

log = logging.getLogger("harmon.gateway.idempotency")

KEY_HEADER = IDEMPOTENCY_KEY_HEADER
MAX_KEY_CHARS = 255
_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")  # printable ASCII: it travels in headers and logs
_R = IdempotencyRecord


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
    """`holder` is this gateway's instance id, written on the leases it takes."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], lease_s: float, holder: str):
        self._sessionmaker = sessionmaker
        self._lease_s = lease_s
        self._holder = holder

    def _lease_end(self):
        return sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, self._lease_s)

    def _session(self, tenant_id: str, livemode: bool) -> AsyncSession:
        """A session that sees only this tenant's and mode's keys (the scope adds them to every query)."""
        session = self._sessionmaker()
        bind(session, tenant_id, livemode)
        return session

    @staticmethod
    def _update(key: str):
        # rows are not loaded to be synchronised: what the statements return is the answer
        return sa.update(_R).where(_R.key == key).execution_options(synchronize_session=False)

    async def claim(self, tenant_id: str, livemode: bool, key: str, rhash: str, method: str, path: str,
                    mint_prefix: str | None) -> Execute | Replay:
        async with self._session(tenant_id, livemode) as s, s.begin():
            inserted = (await s.execute(
                pg_insert(_R).values(
                    tenant_id=tenant_id, livemode=livemode, key=key, request_hash=rhash, method=method, path=path,
                    status="in_progress", locked_until=self._lease_end(), holder=self._holder,
                    minted_id=new_id(mint_prefix) if mint_prefix else None, created_at=sa.func.now(),
                ).on_conflict_do_nothing().returning(_R.locked_until, _R.minted_id)
            )).first()
            if inserted is not None:
                return Execute(inserted.locked_until, inserted.minted_id)
            row = (await s.execute(sa.select(_R).where(_R.key == key))).scalar_one_or_none()
            if row is None:  # pruned between the two statements: a key this old is free again
                raise ApiError(409, IDEMPOTENCY, "idempotency_key_in_use",
                               "this Idempotency-Key is being processed; retry shortly")
            if row.request_hash != rhash:
                raise ApiError(409, IDEMPOTENCY, "idempotency_key_mismatch",
                               "this Idempotency-Key was used with a different request; use a new key",
                               KEY_HEADER)
            if row.status == "done":
                return Replay(row.response_status, row.response_body)
            taken = (await s.execute(
                self._update(key).where(_R.status == "in_progress", _R.locked_until < sa.func.now())
                .values(locked_until=self._lease_end(), holder=self._holder).returning(_R.locked_until, _R.minted_id)
            )).first()
            if taken is None:
                raise ApiError(409, IDEMPOTENCY, "idempotency_key_in_use",
                               "a request with this Idempotency-Key is in progress; retry shortly", KEY_HEADER)
            log.info("idempotency key lease lapsed; executing again")
            return Execute(taken.locked_until, taken.minted_id)

    async def finish(self, tenant_id: str, livemode: bool, key: str, status: int, body: dict) -> Replay | None:
        """Store the final answer; if another execution stored one first, return that one instead."""
        async with self._session(tenant_id, livemode) as s, s.begin():
            done = (await s.execute(
                self._update(key).where(_R.status == "in_progress")
                .values(status="done", response_status=status, response_body=body, locked_until=None, holder=None)
                .returning(_R.key)
            )).first()
            if done is not None:
                return None
            row = (await s.execute(sa.select(_R).where(_R.key == key))).scalar_one_or_none()
        return Replay(row.response_status, row.response_body) if row is not None and row.status == "done" else None

    async def release(self, tenant_id: str, livemode: bool, key: str, lease_until: datetime) -> None:
        """Give up our lease (5xx, timeout) so a retry executes at once; a lease someone took over is not ours."""
        async with self._session(tenant_id, livemode) as s, s.begin():
            await s.execute(
                self._update(key).where(_R.status == "in_progress", _R.locked_until == lease_until)
                .values(locked_until=sa.func.now())
            )

    async def release_leases_of_previous_run(self) -> int:
        """At start: the leases this instance id still holds were taken by its previous process, which died
        (a drained one finished its requests): release them, so a retry executes at once, not after the lease."""
        async with self._sessionmaker.begin() as s:
            result = await s.execute(unscoped(
                sa.update(_R).where(_R.holder == self._holder, _R.status == "in_progress",
                                    _R.locked_until > sa.func.now())
                .values(locked_until=sa.func.now()).execution_options(synchronize_session=False),
                "restart: the leases this gateway instance held, in every tenant and mode"))
        return result.rowcount

    async def prune(self, retention_h: float) -> int:
        """Forget keys older than the retention (at least 24 h), unless still under a live lease."""
        async with self._sessionmaker.begin() as s:
            result = await s.execute(unscoped(
                sa.delete(_R).where(
                    _R.created_at < sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, retention_h * 3600.0),
                    sa.or_(_R.status == "done", _R.locked_until < sa.func.now()),
                ).execution_options(synchronize_session=False),
                "pruning: expired keys of every tenant and mode"))
        return result.rowcount


IDEMPOTENCY_STORE = web.AppKey("idempotency", IdempotencyStore)


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
            earlier = await store.finish(caller.tenant_id, caller.livemode, key, response.status,
                                         json.loads(response.body))
        except Exception:
            # the operation ran; answer it, and let the lease lapse so a retry runs it again (idempotently)
            log.exception("could not store the final answer of an idempotent request")
            return response
        return replay_response(earlier) if earlier is not None else response

    return idempotency
