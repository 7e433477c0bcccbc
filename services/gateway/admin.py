"""Tenants and API keys, for the `harmon` CLI and tests. A full key is returned once and never stored.

Unknown tenants and keys raise LookupError; a request that cannot be granted (bad kind or scope, a
revoked key to rotate) raises ValueError. Messages name keys by prefix and last four, never in full.
"""

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from libs.contracts.ids import API_KEY, TENANT, new_id
from libs.runtime.scoping import unscoped_session

from .auth import generate_api_key, hash_api_key, key_prefix
from .state import KIND_PUBLISHABLE, KIND_SECRET, SCOPES
from .tables import ApiKey, Tenant

KIND_RESTRICTED = "restricted"  # a secret key (hk_<mode>_sec_…) whose row lists its scopes
KINDS = (KIND_SECRET, KIND_PUBLISHABLE, KIND_RESTRICTED)
# Stripe's longest too: an old key that lingers for weeks is a leaked key that keeps working
MAX_OVERLAP = timedelta(days=7)
MAX_NAME_CHARS = 200


@dataclass(frozen=True)
class IssuedKey:
    id: str
    key: str  # shown once: only its hash is kept
    tenant_id: str
    livemode: bool
    kind: str
    prefix: str
    last4: str
    scopes: tuple[str, ...] | None = None
    name: str | None = None
    replaces: str | None = None  # the id of the key it was rotated from

    @property
    def hint(self) -> str:
        return f"{self.prefix}_…{self.last4}"


def _as_operator(session: AsyncSession) -> None:
    unscoped_session(session, "operator tooling: manages the keys of every tenant and mode")


def key_hint(row: ApiKey) -> str:
    return f"{row.prefix}_…{row.last4}"


def key_kind(row: ApiKey) -> str:
    """secret, publishable or restricted (a secret key with scopes)."""
    return KIND_RESTRICTED if row.kind == KIND_SECRET and row.scopes is not None else row.kind


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes in SCOPES order, without repeats; ValueError for an unknown one or none at all."""
    wanted = set(scopes)
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope {', '.join(map(repr, unknown))}; scopes are {', '.join(SCOPES)}")
    if not wanted:
        raise ValueError(f"a restricted key needs at least one scope: {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in wanted)


async def create_tenant(session: AsyncSession, name: str) -> Tenant:
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS:
        raise ValueError(f"a tenant's name is 1 to {MAX_NAME_CHARS} characters")
    tenant = Tenant(id=new_id(TENANT), name=name, created_at=datetime.now(UTC))
    session.add(tenant)
    await session.commit()
    return tenant


async def list_tenants(session: AsyncSession) -> list[Tenant]:
    rows = await session.execute(sa.select(Tenant).order_by(Tenant.created_at, Tenant.id))
    return list(rows.scalars())


async def get_tenant(session: AsyncSession, tenant_id: str) -> Tenant:
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        raise LookupError(f"no tenant {tenant_id}")
    return tenant


def _new_key(tenant_id: str, livemode: bool, kind: str, scopes: tuple[str, ...] | None,
             name: str | None) -> tuple[ApiKey, IssuedKey]:
    key = generate_api_key(livemode, kind)
    row = ApiKey(id=new_id(API_KEY), tenant_id=tenant_id, livemode=livemode, kind=kind, key_hash=hash_api_key(key),
                 prefix=key_prefix(livemode, kind), last4=key[-4:], scopes=list(scopes) if scopes else None,
                 name=name, created_at=datetime.now(UTC))
    issued = IssuedKey(id=row.id, key=key, tenant_id=tenant_id, livemode=livemode, kind=kind, prefix=row.prefix,
                       last4=row.last4, scopes=scopes, name=name)
    return row, issued


async def create_api_key(session: AsyncSession, tenant_id: str, livemode: bool, kind: str, *,
                         scopes: Iterable[str] | None = None, name: str | None = None) -> IssuedKey:
    """A new key; `restricted` (or `secret` with `scopes`) makes a secret key limited to those scopes."""
    _as_operator(session)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind == KIND_RESTRICTED and scopes is None:
        raise ValueError(f"a restricted key needs at least one scope: {', '.join(SCOPES)}")
    if kind == KIND_PUBLISHABLE and scopes is not None:
        raise ValueError("publishable keys take no scopes: they only ever read the catalog")
    checked = check_scopes(scopes) if scopes is not None else None
    if name is not None:
        name = name.strip() or None
        if name is not None and len(name) > MAX_NAME_CHARS:
            raise ValueError(f"a key's name is at most {MAX_NAME_CHARS} characters")
    await get_tenant(session, tenant_id)
    row, issued = _new_key(tenant_id, livemode, KIND_PUBLISHABLE if kind == KIND_PUBLISHABLE else KIND_SECRET,
                           checked, name)
    session.add(row)
    await session.commit()
    return issued


async def get_api_key(session: AsyncSession, key_id: str) -> ApiKey:
    _as_operator(session)
    row = await session.get(ApiKey, key_id)
    if row is None:
        raise LookupError(f"no API key {key_id}")
    return row


async def list_api_keys(session: AsyncSession, tenant_id: str) -> list[ApiKey]:
    """A tenant's keys, oldest first, revoked and rotated ones included (LookupError for an unknown tenant)."""
    _as_operator(session)
    await get_tenant(session, tenant_id)
    rows = await session.execute(
        sa.select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at, ApiKey.id))
    return list(rows.scalars())


async def revoke_api_key(session: AsyncSession, key_id: str) -> bool:
    """Revoke a key by id; False if there is no such key or it was already revoked."""
    _as_operator(session)
    result = await session.execute(
        sa.update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=datetime.now(UTC))
    )
    await session.commit()
    return result.rowcount == 1


async def rotate_api_key(session: AsyncSession, key_id: str, overlap: timedelta) -> IssuedKey:
    """A successor with the same tenant, mode, kind, scopes and name; the old key works for `overlap` more.

    `overlap` 0 ends the old key now. A key can be rotated once: a revoked key or one already rotated
    raises ValueError (rotate its successor instead)."""
    _as_operator(session)
    if overlap < timedelta(0) or overlap > MAX_OVERLAP:
        raise ValueError(f"the overlap is between 0 and {MAX_OVERLAP.days} days")
    old = (await session.execute(sa.select(ApiKey).where(ApiKey.id == key_id).with_for_update())).scalar_one_or_none()
    if old is None:
        await session.rollback()
        raise LookupError(f"no API key {key_id}")
    if old.revoked_at is not None or old.expires_at is not None:
        why = "was revoked" if old.revoked_at is not None else "was already rotated"
        refusal = f"the API key {key_id} ({key_hint(old)}) {why}; rotate the key that replaced it instead"
        await session.rollback()
        raise ValueError(refusal)
    now = datetime.now(UTC)
    old.expires_at = now + overlap
    row, issued = _new_key(old.tenant_id, old.livemode, old.kind, tuple(old.scopes) if old.scopes else None,
                           old.name)
    session.add(row)
    await session.commit()
    return replace(issued, replaces=old.id)
