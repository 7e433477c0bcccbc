"""Who is calling: an API key (tenant, mode, kind), and for customer-scoped routes a shopper JWT (which customer)."""

import hashlib
import re
import secrets
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import jwt
import sqlalchemy as sa
from aiohttp import web
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.contracts.ids import new_id
from libs.runtime.scoping import bind, unscoped

from .cache import API_KEYS, CACHE, CUSTOMERS, SIGNING_KEYS, Cache
from .config import SETTINGS
from .cors import browser_origin
from .customers import is_active_customer
from .errors import AUTHENTICATION, PERMISSION, ApiError
from .ratelimit import RATE_LIMITER
from .state import (CALLER, KIND_PUBLISHABLE, KIND_SECRET, LOOKUPS, MINT_SCOPE, SHOPPER, SHOPPER_HEADER, Caller,
                    Shopper, endpoint_of)
from .tables import ApiKey, Tenant, TenantSigningKey

_KIND_TAG = {KIND_SECRET: "sec", KIND_PUBLISHABLE: "pub"}
_TAG_KIND = {v: k for k, v in _KIND_TAG.items()}
API_KEY_PATTERN = re.compile(r"^hk_(test|live)_(sec|pub)_[A-Za-z0-9_-]{32,128}$")
# a deployment kid accepts HS256 only, a tenant's kid only the algorithm registered with it
TENANT_ALGORITHMS = ("RS256", "ES256")
DEPLOYMENT_KID_PREFIX = "hs256-"  # reserved: a tenant's kid never starts with it
TENANT_KID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
MIN_RSA_BITS, MAX_RSA_BITS = 2048, 8192
LEEWAY_S = 5
MAX_TOKEN_CHARS = 4096


# --- API keys -------------------------------------------------------------------------------------

def key_prefix(livemode: bool, kind: str) -> str:
    return f"hk_{'live' if livemode else 'test'}_{_KIND_TAG[kind]}"


def generate_api_key(livemode: bool, kind: str) -> str:
    """`hk_<test|live>_<sec|pub>_` + 43 urlsafe characters (256 bits) from `secrets`."""
    return f"{key_prefix(livemode, kind)}_{secrets.token_urlsafe(32)}"


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_api_key(key: str) -> tuple[bool, str] | None:
    """(livemode, kind) of a well-formed key, else None."""
    m = API_KEY_PATTERN.match(key)
    if m is None:
        return None
    return m.group(1) == "live", _TAG_KIND[m.group(2)]


def bearer_key(authorization: str | None) -> str:
    if not authorization:
        raise ApiError(401, AUTHENTICATION, "api_key_missing",
                       "no API key given: send 'Authorization: Bearer hk_…'")
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(401, AUTHENTICATION, "api_key_missing",
                       "no API key given: send 'Authorization: Bearer hk_…'")
    return value.strip()


@dataclass(frozen=True)
class KeyRecord:
    """An API key's row with its tenant's rate limits: what authentication reads, and the cache keeps."""

    id: str
    tenant_id: str
    livemode: bool
    kind: str
    prefix: str
    last4: str
    scopes: tuple[str, ...] | None
    revoked_at: datetime | None
    expires_at: datetime | None
    rate_limit: str | None
    mint_rate_limit: str | None
    order_prefix: str | None = None


async def find_key(session: AsyncSession, key_hash: str) -> KeyRecord | None:
    # the tenant's rate limits and order prefix in the same query: no second round trip per request
    by_hash = (sa.select(ApiKey, Tenant.rate_limit, Tenant.mint_rate_limit, Tenant.order_prefix)
               .join(Tenant, Tenant.id == ApiKey.tenant_id)
               .where(ApiKey.key_hash == key_hash))
    found = (await session.execute(unscoped(by_hash, "authentication: the key decides the tenant"))).one_or_none()
    if found is None:
        return None
    row, rate_limit, mint_rate_limit, order_prefix = found
    return KeyRecord(id=row.id, tenant_id=row.tenant_id, livemode=row.livemode, kind=row.kind, prefix=row.prefix,
                     last4=row.last4, scopes=tuple(row.scopes) if row.scopes else None, revoked_at=row.revoked_at,
                     expires_at=row.expires_at, rate_limit=rate_limit, mint_rate_limit=mint_rate_limit,
                     order_prefix=order_prefix)


async def authenticate_key(session: AsyncSession, authorization: str | None, cache: Cache | None = None) -> Caller:
    """The caller of a key; revocation from the row (remembered until a change is heard), expiry against the
    clock on every request."""
    key = bearer_key(authorization)
    parsed = parse_api_key(key)
    invalid = ApiError(401, AUTHENTICATION, "api_key_invalid", "the API key is not valid")
    if parsed is None:
        raise invalid
    key_hash = hash_api_key(key)
    if cache is None:
        row = await find_key(session, key_hash)
    else:  # unknown hashes are not remembered: anyone can send new ones
        row = await cache.remember(API_KEYS, key_hash, lambda: find_key(session, key_hash), keep_missing=False)
    if row is None or (row.livemode, row.kind) != parsed:
        raise invalid
    hint = f"{row.prefix}_…{row.last4}"
    if row.revoked_at is not None:
        raise ApiError(401, AUTHENTICATION, "api_key_revoked", f"the API key {hint} was revoked")
    if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
        raise ApiError(401, AUTHENTICATION, "api_key_revoked",
                       f"the API key {hint} was rotated and its overlap ended at "
                       f"{row.expires_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}; "
                       "use the key that replaced it")
    return Caller(tenant_id=row.tenant_id, livemode=row.livemode, kind=row.kind, key_id=row.id, hint=hint,
                  scopes=row.scopes, rate_limit=row.rate_limit, mint_rate_limit=row.mint_rate_limit,
                  order_prefix=row.order_prefix)


async def active_customer(session: AsyncSession, caller: Caller, customer_id: str, cache: Cache | None = None) -> bool:
    """Whether `customer_id` is an active customer of the caller's tenant and mode (remembered, unknown ones too:
    a customer's first ERP record is a change like any other)."""
    def load() -> Awaitable[bool]:
        return is_active_customer(session, caller.tenant_id, caller.livemode, customer_id)
    if cache is None:
        return await load()
    return await cache.remember(CUSTOMERS, (caller.tenant_id, caller.livemode, customer_id), load)


# --- shopper tokens -------------------------------------------------------------------------------

@dataclass(frozen=True)
class MintedToken:
    token: str
    customer_id: str
    expires_at: datetime


@dataclass(frozen=True)
class TenantKey:
    """A public key a tenant registered (tenant_signing_keys) so its own backend signs shopper tokens."""

    id: str
    tenant_id: str
    livemode: bool
    kid: str
    algorithm: str  # one of TENANT_ALGORITHMS: the only one its tokens may use
    public_key: str  # PEM


def key_id_for(secret: str) -> str:
    # derived, so rotating the secret changes the kid and old tokens fail as "unknown key"
    return DEPLOYMENT_KID_PREFIX + hashlib.sha256(b"harmon-kid:" + secret.encode()).hexdigest()[:16]


def audience(tenant_id: str, livemode: bool) -> str:
    return f"harmon:{tenant_id}:{'live' if livemode else 'test'}"


def _invalid(why: str) -> ApiError:
    return ApiError(401, AUTHENTICATION, "shopper_token_invalid", f"the shopper token is not valid: {why}")


@lru_cache(maxsize=1024)
def load_public_key(pem: str, algorithm: str) -> PublicKeyTypes:
    """The key of `pem` if it fits `algorithm` (RS256: RSA ≥ 2048 bits; ES256: EC P-256), else ValueError.

    A private key is refused without being parsed: only public keys are ever registered or stored."""
    if algorithm not in TENANT_ALGORITHMS:
        raise ValueError(f"the algorithm must be one of {', '.join(TENANT_ALGORITHMS)}, not {algorithm!r}")
    if "PRIVATE KEY" in pem:
        raise ValueError("this is a private key: register its public half only "
                         "(openssl pkey -in private.pem -pubout) and keep the private key with your backend")
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    if algorithm == "RS256":
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("RS256 needs an RSA public key")
        if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
            raise ValueError(f"an RS256 key has {MIN_RSA_BITS} to {MAX_RSA_BITS} bits, not {key.key_size}")
    elif not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)):
        raise ValueError("ES256 needs an EC public key on the P-256 curve (secp256r1)")
    return key


class ShopperTokens:
    """Shopper JWTs: iss, aud `harmon:<tenant>:<mode>`, sub customer, iat, exp, jti; header kid.

    The deployment signs with its current HS256 secret and still accepts its previous ones (rotation);
    a tenant's own RS256/ES256 key (TenantKey) is accepted for that tenant and mode only, with `iss` =
    the tenant id and a lifetime (exp - iat) of at most `tenant_max_lifetime_s` (ours: at most `ttl_s`;
    exp and iat integers either way). The kid chooses the
    key, and the key alone chooses the one algorithm accepted, whatever the token's header claims."""

    def __init__(self, secret: str, issuer: str, ttl_s: int, *, previous_secrets: Iterable[str] = (),
                 tenant_max_lifetime_s: int = 3600):
        self._kid = key_id_for(secret)
        self._secrets = {**{key_id_for(s): s for s in previous_secrets}, self._kid: secret}
        self.issuer = issuer
        self.ttl_s = ttl_s
        self.tenant_max_lifetime_s = tenant_max_lifetime_s

    def mint(self, tenant_id: str, livemode: bool, customer_id: str, *, now: datetime | None = None) -> MintedToken:
        issued = int((now or datetime.now(UTC)).timestamp())
        claims = {
            "iss": self.issuer, "aud": audience(tenant_id, livemode), "sub": customer_id,
            "iat": issued, "exp": issued + self.ttl_s, "jti": new_id("jti"),
        }
        token = jwt.encode(claims, self._secrets[self._kid], algorithm="HS256", headers={"kid": self._kid})
        return MintedToken(token=token, customer_id=customer_id,
                           expires_at=datetime.fromtimestamp(claims["exp"], UTC))

    def signing_key_id(self, token: str) -> str:
        """The kid in the token's header (unverified: it only chooses the key); 401 if there is none."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise _invalid("malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _invalid("malformed") from None
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _invalid("unknown signing key")
        return kid

    def is_deployment_key(self, kid: str) -> bool:
        return kid in self._secrets

    def verify(self, token: str, tenant_id: str, livemode: bool, tenant_key: TenantKey | None = None) -> Shopper:
        """The token's customer, if it is signed by one of our keys or by `tenant_key` (the tenant's key its kid
        names, looked up by the caller), for this tenant and mode, within its lifetime and not expired."""
        kid = self.signing_key_id(token)
        if kid in self._secrets:
            key, algorithm, issuer = self._secrets[kid], "HS256", self.issuer
            max_lifetime = self.ttl_s  # we mint with exactly this lifetime
        elif tenant_key is not None and (tenant_key.kid, tenant_key.tenant_id, tenant_key.livemode) == (
                kid, tenant_id, livemode):
            key, algorithm, issuer = load_public_key(tenant_key.public_key, tenant_key.algorithm), \
                tenant_key.algorithm, tenant_id
            max_lifetime = self.tenant_max_lifetime_s
        else:
            raise _invalid("unknown signing key")
        try:
            claims = jwt.decode(
                token, key, algorithms=[algorithm], audience=audience(tenant_id, livemode), issuer=issuer,
                leeway=LEEWAY_S, options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise ApiError(401, AUTHENTICATION, "shopper_token_expired",
                           "the shopper token has expired; mint a new one") from None
        except jwt.InvalidAudienceError:
            raise _invalid("issued for another tenant or mode") from None
        except jwt.InvalidTokenError as e:
            raise _invalid(type(e).__name__) from None
        expires, issued = claims["exp"], claims["iat"]
        # PyJWT takes anything int() takes ("9999999999", 1.5): only JSON integers are times here
        if not all(type(t) is int for t in (expires, issued)):
            raise _invalid("exp and iat must be integers (seconds since the epoch)")
        if expires - issued > max_lifetime:
            raise _invalid(f"it lives longer than {max_lifetime} s (exp - iat)")
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub.startswith("cus_"):
            raise _invalid("bad subject")
        return Shopper(customer_id=sub, token_id=str(claims["jti"]), expires_at=datetime.fromtimestamp(expires, UTC))


async def find_tenant_key(session: AsyncSession, kid: str) -> TenantKey | None:
    """The unrevoked signing key named `kid` of the session's tenant and mode (another's is not found), if any."""
    if not TENANT_KID_PATTERN.match(kid):
        return None  # not a kid anyone could have registered: spare the query
    row = (await session.execute(sa.select(TenantSigningKey).where(
        TenantSigningKey.kid == kid, TenantSigningKey.revoked_at.is_(None),
    ))).scalar_one_or_none()
    if row is None:
        return None
    return TenantKey(id=row.id, tenant_id=row.tenant_id, livemode=row.livemode, kid=row.kid,
                     algorithm=row.algorithm, public_key=row.public_key)


async def verify_shopper_token(session: AsyncSession, tokens: ShopperTokens, token: str, caller: Caller,
                               cache: Cache | None = None) -> Shopper:
    """A deployment kid verifies without the database; any other kid is one query for the caller's tenant key
    (remembered, a kid the tenant does not have too)."""
    kid = tokens.signing_key_id(token)
    tenant_key = None
    if not tokens.is_deployment_key(kid):
        if cache is None:
            tenant_key = await find_tenant_key(session, kid)
        else:
            tenant_key = await cache.remember(SIGNING_KEYS, (caller.tenant_id, caller.livemode, kid),
                                              lambda: find_tenant_key(session, kid))
    return tokens.verify(token, caller.tenant_id, caller.livemode, tenant_key)


TOKENS = web.AppKey("tokens", ShopperTokens)


# --- middleware -----------------------------------------------------------------------------------

def auth_middleware() -> web.middleware:
    """Failed-auth guard (429) → API key (401) → per-key rate limit (429) → key kind for the route and origin
    (403) → scope (403) → shopper token (401), in that order."""

    @web.middleware
    async def auth(request: web.Request, handler) -> web.StreamResponse:
        endpoint = endpoint_of(request)
        unmatched = request.match_info.http_exception is not None
        if endpoint is None and not unmatched:
            return await handler(request)  # public: /healthz, /readyz, /metrics
        limiter = request.app[RATE_LIMITER]
        await limiter.guard_address(request)  # before the key is looked at: guessing keys gets nowhere
        # each lookup stands alone (key, signing key, customer): autocommit, no BEGIN/ROLLBACK round trips
        sessionmaker: async_sessionmaker[AsyncSession] = request.app[LOOKUPS]
        cache = request.app[CACHE]
        async with sessionmaker() as session:
            try:
                caller = await authenticate_key(session, request.headers.get("Authorization"), cache)
            except ApiError:
                await limiter.count_failed_auth(request)
                raise
            request[CALLER] = caller
            bind(session, caller.tenant_id, caller.livemode)  # every later query of this request: the key's scope
            await limiter.check_key(request, caller.key_id, caller.kind == KIND_PUBLISHABLE,
                                    endpoint is not None and endpoint.scope == MINT_SCOPE, caller.rate_limit,
                                    caller.mint_rate_limit)
            if endpoint is None:
                return await handler(request)  # an unknown route answers 404, but only to a key holder
            if caller.kind not in endpoint.keys:
                raise ApiError(403, PERMISSION, "publishable_key_not_allowed",
                               "this route needs a secret key; publishable keys may only read the catalog")
            if caller.kind == KIND_SECRET and browser_origin(request, request.app[SETTINGS].public_origin):
                raise ApiError(403, PERMISSION, "secret_key_from_browser",
                               "secret keys are for servers: a browser (cross-origin request) may use only a "
                               "publishable key; call this route from your backend")
            if caller.scopes is not None and endpoint.scope not in caller.scopes:
                raise ApiError(403, PERMISSION, "scope_missing",
                               f"this restricted key lacks the scope {endpoint.scope}")
            token = request.headers.get(SHOPPER_HEADER)
            if endpoint.shopper == "required" and not token:
                raise ApiError(401, AUTHENTICATION, "shopper_token_missing",
                               f"this route acts for a signed-in customer: send {SHOPPER_HEADER}")
            if token and endpoint.shopper != "none":
                shopper = await verify_shopper_token(session, request.app[TOKENS], token, caller, cache)
                if not await active_customer(session, caller, shopper.customer_id, cache):
                    raise ApiError(401, AUTHENTICATION, "shopper_token_invalid",
                                   "the shopper token is not valid: its customer is unknown or inactive")
                request[SHOPPER] = shopper
        return await handler(request)

    return auth
