"""Tenants, API keys and tenants' token signing keys, for the `harmon` CLI and tests. A full API key is
returned once and never stored; of a signing key only the public half is ever accepted.

Unknown tenants and keys raise LookupError; a request that cannot be granted (bad kind or scope, a
revoked key to rotate) raises ValueError. Messages name keys by prefix and last four, never in full.
"""

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from sqlalchemy.ext.asyncio import AsyncSession

from libs.contracts.fields import OrderPrefix, accepts
from libs.contracts.ids import API_KEY, TENANT, TENANT_SIGNING_KEY, new_id
from libs.runtime.scoping import unscoped_session

from .auth import (
    DEPLOYMENT_KID_PREFIX, TENANT_KID_PATTERN, generate_api_key, hash_api_key, key_prefix, load_public_key,
)
from .state import KIND_PUBLISHABLE, KIND_RESTRICTED, KIND_SECRET, SCOPES
from .tables import ApiKey, Tenant, TenantSigningKey
from .validators import check_rate

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


def _rate(text: str | None) -> str | None:
    """A tenant's rate limit as stored: checked, or None for the deployment's default."""
    return None if text is None or text.strip().lower() in ("", "default") else check_rate(text)


DEFAULT_ORDER_PREFIX = "ORD"  # orders' own, for a name without letters or digits
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]+")


def default_order_prefix(name: str) -> str:
    """The name's ASCII letters and digits, upper case, the first six ("Island Grocers Ltd" → ISLAND); "ORD" if
    none. Migration 0009 gave existing tenants the same."""
    return _NOT_ALNUM.sub("", name).upper()[:6] or DEFAULT_ORDER_PREFIX


def check_order_prefix(prefix: str) -> str:
    """An order-number prefix as stored: upper case, 1 to 12 letters or digits (libs.contracts.fields.OrderPrefix)."""
    value = prefix.strip().upper()
    if not accepts(OrderPrefix, value):
        raise ValueError(f"an order prefix is 1 to 12 letters or digits (e.g. ACME), not {prefix[:40]!r}")
    return value


async def create_tenant(session: AsyncSession, name: str, *, rate_limit: str | None = None,
                        mint_rate_limit: str | None = None, order_prefix: str | None = None) -> Tenant:
    """A new tenant; `rate_limit` / `mint_rate_limit` (e.g. `500/second`) replace the deployment's per-key limits;
    `order_prefix` starts its order numbers (default: derived from the name, `default_order_prefix`)."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS:
        raise ValueError(f"a tenant's name is 1 to {MAX_NAME_CHARS} characters")
    prefix = check_order_prefix(order_prefix) if order_prefix is not None else default_order_prefix(name)
    tenant = Tenant(id=new_id(TENANT), name=name, created_at=datetime.now(UTC), rate_limit=_rate(rate_limit),
                    mint_rate_limit=_rate(mint_rate_limit), order_prefix=prefix)
    session.add(tenant)
    await session.commit()
    return tenant


async def update_tenant(session: AsyncSession, tenant_id: str, *, rate_limit: str | None = None,
                        mint_rate_limit: str | None = None) -> Tenant:
    """Set a tenant's rate limits; `default` goes back to the deployment's, None leaves one as it is.

    Gateways read them with every key lookup, so the change holds from the next request on."""
    checked = {field: _rate(value) for field, value in (("rate_limit", rate_limit),
                                                        ("mint_rate_limit", mint_rate_limit)) if value is not None}
    tenant = await get_tenant(session, tenant_id)
    for field, value in checked.items():
        setattr(tenant, field, value)
    await session.commit()
    await session.refresh(tenant)
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


# --- tenants' signing keys ------------------------------------------------------------------------

MAX_PUBLIC_KEY_CHARS = 16 * 1024


def key_fingerprint(public_key_pem: str) -> str:
    """SHA-256 of the key's DER SubjectPublicKeyInfo, first 16 hex digits: tells keys apart in lists."""
    der = serialization.load_pem_public_key(public_key_pem.encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()[:16]


def check_public_key(pem: str | bytes, algorithm: str) -> str:
    """The key as a SubjectPublicKeyInfo PEM if it fits `algorithm`; ValueError (never quoting the input) if not."""
    if isinstance(pem, bytes):
        try:
            pem = pem.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    if len(pem) > MAX_PUBLIC_KEY_CHARS:
        raise ValueError(f"a public key PEM is at most {MAX_PUBLIC_KEY_CHARS} characters")
    key = load_public_key(pem, algorithm)
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


async def add_signing_key(session: AsyncSession, tenant_id: str, livemode: bool, kid: str, algorithm: str,
                          public_key_pem: str | bytes) -> TenantSigningKey:
    """Register a tenant's public key: tokens whose header names `kid` verify with it, for this mode only."""
    _as_operator(session)
    if not TENANT_KID_PATTERN.match(kid) or kid.startswith(DEPLOYMENT_KID_PREFIX):
        raise ValueError(f"a kid is 1 to 64 of A-Z a-z 0-9 . _ : - (starting with a letter or digit), "
                         f"not starting with {DEPLOYMENT_KID_PREFIX!r} (the deployment's own keys)")
    public_key = check_public_key(public_key_pem, algorithm)
    await get_tenant(session, tenant_id)
    taken = await session.execute(sa.select(TenantSigningKey.id).where(
        TenantSigningKey.tenant_id == tenant_id, TenantSigningKey.livemode == livemode, TenantSigningKey.kid == kid))
    if taken.first() is not None:
        raise ValueError(f"tenant {tenant_id} already has a {'live' if livemode else 'test'} signing key {kid!r} "
                         "(a kid is never reused, even once revoked): choose another kid")
    row = TenantSigningKey(id=new_id(TENANT_SIGNING_KEY), tenant_id=tenant_id, livemode=livemode, kid=kid,
                           algorithm=algorithm, public_key=public_key, created_at=datetime.now(UTC))
    session.add(row)
    try:
        await session.commit()
    except sa.exc.IntegrityError:  # the same kid registered at the same moment
        await session.rollback()
        raise ValueError(f"tenant {tenant_id} already has a signing key {kid!r}: choose another kid") from None
    return row


async def list_signing_keys(session: AsyncSession, tenant_id: str) -> list[TenantSigningKey]:
    """A tenant's signing keys of both modes, oldest first, revoked ones included."""
    _as_operator(session)
    await get_tenant(session, tenant_id)
    rows = await session.execute(sa.select(TenantSigningKey).where(TenantSigningKey.tenant_id == tenant_id)
                                 .order_by(TenantSigningKey.created_at, TenantSigningKey.id))
    return list(rows.scalars())


async def get_signing_key(session: AsyncSession, key_id: str) -> TenantSigningKey:
    _as_operator(session)
    row = await session.get(TenantSigningKey, key_id)
    if row is None:
        raise LookupError(f"no signing key {key_id}")
    return row


async def revoke_signing_key(session: AsyncSession, key_id: str) -> bool:
    """Tokens naming its kid are refused from the next request on; False if unknown or already revoked."""
    _as_operator(session)
    result = await session.execute(
        sa.update(TenantSigningKey).where(TenantSigningKey.id == key_id, TenantSigningKey.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    await session.commit()
    return result.rowcount == 1
