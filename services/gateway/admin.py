"""Tenants and API keys, for the `harmon` CLI and tests. A full key is returned once and never stored."""

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from libs.contracts.ids import API_KEY, TENANT, new_id

from .auth import generate_api_key, hash_api_key, key_prefix
from .state import KIND_PUBLISHABLE, KIND_SECRET
from .tables import ApiKey, Tenant


@dataclass(frozen=True)
class IssuedKey:
    id: str
    key: str  # shown once: only its hash is kept
    tenant_id: str
    livemode: bool
    kind: str
    prefix: str
    last4: str

    @property
    def hint(self) -> str:
        return f"{self.prefix}_…{self.last4}"


async def create_tenant(session: AsyncSession, name: str) -> Tenant:
    tenant = Tenant(id=new_id(TENANT), name=name, created_at=datetime.now(UTC))
    session.add(tenant)
    await session.commit()
    return tenant


async def create_api_key(session: AsyncSession, tenant_id: str, livemode: bool, kind: str) -> IssuedKey:
    if kind not in (KIND_SECRET, KIND_PUBLISHABLE):
        raise ValueError(f"kind must be {KIND_SECRET!r} or {KIND_PUBLISHABLE!r}")
    if await session.get(Tenant, tenant_id) is None:
        raise LookupError(f"no tenant {tenant_id}")
    key = generate_api_key(livemode, kind)
    row = ApiKey(id=new_id(API_KEY), tenant_id=tenant_id, livemode=livemode, kind=kind, key_hash=hash_api_key(key),
                 prefix=key_prefix(livemode, kind), last4=key[-4:], created_at=datetime.now(UTC))
    session.add(row)
    await session.commit()
    return IssuedKey(id=row.id, key=key, tenant_id=tenant_id, livemode=livemode, kind=kind, prefix=row.prefix,
                     last4=row.last4)


async def revoke_api_key(session: AsyncSession, key_id: str) -> bool:
    """Revoke a key by id; False if there is no such key or it was already revoked."""
    result = await session.execute(
        sa.update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=datetime.now(UTC))
    )
    await session.commit()
    return result.rowcount == 1


async def list_api_keys(session: AsyncSession, tenant_id: str) -> list[ApiKey]:
    rows = await session.execute(sa.select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at))
    return list(rows.scalars())
