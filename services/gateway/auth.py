"""Who is calling: an API key (tenant, mode, kind), and for customer-scoped routes a shopper JWT (which customer)."""

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.contracts.ids import new_id
from libs.runtime.scoping import unscoped

from .customers import is_active_customer
from .errors import AUTHENTICATION, PERMISSION, ApiError
from .state import CALLER, KIND_PUBLISHABLE, KIND_SECRET, SESSIONMAKER, SHOPPER, TOKENS, endpoint_of
from .tables import ApiKey

_KIND_TAG = {KIND_SECRET: "sec", KIND_PUBLISHABLE: "pub"}
_TAG_KIND = {v: k for k, v in _KIND_TAG.items()}
API_KEY_PATTERN = re.compile(r"^hk_(test|live)_(sec|pub)_[A-Za-z0-9_-]{32,128}$")
SHOPPER_HEADER = "X-Storefront-Shopper-Token"
ALGORITHMS = ["HS256"]  # the only algorithm accepted, whatever a token's header claims
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


@dataclass(frozen=True)
class Caller:
    """The API key's tenant, mode and kind."""

    tenant_id: str
    livemode: bool
    kind: str
    key_id: str
    hint: str
    scopes: tuple[str, ...] | None = None  # None: unrestricted


def bearer_key(authorization: str | None) -> str:
    if not authorization:
        raise ApiError(401, AUTHENTICATION, "api_key_missing",
                       "no API key given: send 'Authorization: Bearer hk_…'")
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(401, AUTHENTICATION, "api_key_missing",
                       "no API key given: send 'Authorization: Bearer hk_…'")
    return value.strip()


async def authenticate_key(session: AsyncSession, authorization: str | None) -> Caller:
    key = bearer_key(authorization)
    parsed = parse_api_key(key)
    invalid = ApiError(401, AUTHENTICATION, "api_key_invalid", "the API key is not valid")
    if parsed is None:
        raise invalid
    by_hash = sa.select(ApiKey).where(ApiKey.key_hash == hash_api_key(key))
    row = (await session.execute(unscoped(by_hash, "authentication: the key decides the tenant"))).scalar_one_or_none()
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
                  scopes=tuple(row.scopes) if row.scopes else None)


# --- shopper tokens -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shopper:
    customer_id: str
    token_id: str
    expires_at: datetime


@dataclass(frozen=True)
class MintedToken:
    token: str
    customer_id: str
    expires_at: datetime


def key_id_for(secret: str) -> str:
    # derived, so rotating the secret changes the kid and old tokens fail as "unknown key"
    return "hs256-" + hashlib.sha256(b"harmon-kid:" + secret.encode()).hexdigest()[:16]


def audience(tenant_id: str, livemode: bool) -> str:
    return f"harmon:{tenant_id}:{'live' if livemode else 'test'}"


class ShopperTokens:
    """HS256 shopper JWTs: iss, aud `harmon:<tenant>:<mode>`, sub customer, iat, exp, jti; header kid."""

    def __init__(self, secret: str, issuer: str, ttl_s: int):
        self._kid = key_id_for(secret)
        self._keys = {self._kid: secret}
        self.issuer = issuer
        self.ttl_s = ttl_s

    def mint(self, tenant_id: str, livemode: bool, customer_id: str, *, now: datetime | None = None) -> MintedToken:
        issued = int((now or datetime.now(UTC)).timestamp())
        claims = {
            "iss": self.issuer, "aud": audience(tenant_id, livemode), "sub": customer_id,
            "iat": issued, "exp": issued + self.ttl_s, "jti": new_id("jti"),
        }
        token = jwt.encode(claims, self._keys[self._kid], algorithm="HS256", headers={"kid": self._kid})
        return MintedToken(token=token, customer_id=customer_id,
                           expires_at=datetime.fromtimestamp(claims["exp"], UTC))

    def verify(self, token: str, tenant_id: str, livemode: bool) -> Shopper:
        """The token's customer, if the token is ours, for this tenant and mode, and not expired."""
        def invalid(why: str) -> ApiError:
            return ApiError(401, AUTHENTICATION, "shopper_token_invalid", f"the shopper token is not valid: {why}")

        if not token or len(token) > MAX_TOKEN_CHARS:
            raise invalid("malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise invalid("malformed") from None
        key = self._keys.get(header.get("kid")) if isinstance(header.get("kid"), str) else None
        if key is None:
            raise invalid("unknown signing key")
        try:
            claims = jwt.decode(
                token, key, algorithms=ALGORITHMS, audience=audience(tenant_id, livemode), issuer=self.issuer,
                leeway=LEEWAY_S, options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise ApiError(401, AUTHENTICATION, "shopper_token_expired",
                           "the shopper token has expired; mint a new one") from None
        except jwt.InvalidAudienceError:
            raise invalid("issued for another tenant or mode") from None
        except jwt.InvalidTokenError as e:
            raise invalid(type(e).__name__) from None
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub.startswith("cus_"):
            raise invalid("bad subject")
        return Shopper(customer_id=sub, token_id=str(claims["jti"]),
                       expires_at=datetime.fromtimestamp(claims["exp"], UTC))


# --- middleware -----------------------------------------------------------------------------------

def auth_middleware() -> web.middleware:
    """API key (401) → key kind for the route (403) → scope (403) → shopper token (401), in that order."""

    @web.middleware
    async def auth(request: web.Request, handler) -> web.StreamResponse:
        endpoint = endpoint_of(request)
        unmatched = request.match_info.http_exception is not None
        if endpoint is None and not unmatched:
            return await handler(request)  # public: /healthz, /readyz, /metrics
        sessionmaker: async_sessionmaker[AsyncSession] = request.app[SESSIONMAKER]
        async with sessionmaker() as session:
            caller = await authenticate_key(session, request.headers.get("Authorization"))
            request[CALLER] = caller
            if endpoint is None:
                return await handler(request)  # an unknown route answers 404, but only to a key holder
            if caller.kind not in endpoint.keys:
                raise ApiError(403, PERMISSION, "publishable_key_not_allowed",
                               "this route needs a secret key; publishable keys may only read the catalog")
            if caller.scopes is not None and endpoint.scope not in caller.scopes:
                raise ApiError(403, PERMISSION, "scope_missing",
                               f"this restricted key lacks the scope {endpoint.scope}")
            token = request.headers.get(SHOPPER_HEADER)
            if endpoint.shopper == "required" and not token:
                raise ApiError(401, AUTHENTICATION, "shopper_token_missing",
                               f"this route acts for a signed-in customer: send {SHOPPER_HEADER}")
            if token and endpoint.shopper != "none":
                shopper = request.app[TOKENS].verify(token, caller.tenant_id, caller.livemode)
                if not await is_active_customer(session, caller.tenant_id, caller.livemode, shopper.customer_id):
                    raise ApiError(401, AUTHENTICATION, "shopper_token_invalid",
                                   "the shopper token is not valid: its customer is unknown or inactive")
                request[SHOPPER] = shopper
        return await handler(request)

    return auth
