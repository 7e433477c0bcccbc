from pathlib import Path
from typing import Annotated

from aiohttp import web
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from libs.runtime.settings import ServiceSettings

from .validators import check_origin, check_rate, check_storage

MIN_SECRET_CHARS = 32
# Values people paste from examples; refusing them beats signing tokens anyone can forge.
_KNOWN_UNSAFE = {"changeme", "change-me", "secret", "dev", "development", "test", "harmon"}
MAX_PREVIOUS_SECRETS = 4


def _weak(raw: str) -> bool:
    return len(raw) < MIN_SECRET_CHARS or raw.strip().lower() in _KNOWN_UNSAFE or len(set(raw)) < 8


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HARMON_GATEWAY_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535, description="0: any free port (logged, and written to port_file)")
    port_file: Path | None = Field(None, description="where to write the bound port, for harnesses")
    signing_secret: SecretStr = Field(description="HS256 key of shopper tokens: at least 32 random characters")
    # verify-only, for rotation: tokens signed with these still pass until they expire (comma-separated in env)
    previous_signing_secrets: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    issuer: str = Field("harmon", min_length=1)
    token_ttl_s: int = Field(900, ge=60, le=86_400)
    # exp - iat of a token a tenant signs with its own key: a leaked token must not outlive the hour
    tenant_token_max_lifetime_s: int = Field(3600, ge=60, le=86_400)
    request_timeout_s: float = Field(10.0, gt=0)
    checkout_timeout_s: float = Field(15.0, gt=0)
    idempotency_lease_s: float = Field(30.0, gt=0)
    # longest a request waits while `harmon dev` restarts its embedded broker (services/gateway/hold.py)
    hold_max_s: float = Field(5.0, gt=0, le=30)
    idempotency_retention_h: float = Field(24.0, ge=24, description="records are kept at least this long")
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    # rate limits, in limits' notation (`100/second`, `5/10 seconds`); a tenant's own replace the per-key two
    rate_limit: str = Field("100/second", description="requests per API key (per key and address if publishable)")
    mint_rate_limit: str = Field("20/second", description="POST /v1/shopper_tokens per API key, on top of rate_limit")
    failed_auth_rate_limit: str = Field("20/minute", description="401s at the API-key step per client address")
    rate_limit_storage: str = Field("memory://", description="limits storage URI: memory:// counts per instance; "
                                                             "redis://… is shared by every instance")
    forwarded_hops: int = Field(0, ge=0, le=10, description="trusted proxies in front: the client address is "
                                                            "the X-Forwarded-For entry they wrote")
    # remember keys, signing keys and customers between requests, dropped on PostgreSQL's NOTIFY (cache.py);
    # false: every request reads them from PostgreSQL
    cache: bool = True
    public_origin: str | None = Field(None, description="scheme://host[:port] the API is served at, behind a proxy; "
                                                        "default: the request's own")

    @field_validator("rate_limit", "mint_rate_limit", "failed_auth_rate_limit")
    @classmethod
    def _rate(cls, v: str) -> str:
        return check_rate(v)

    @field_validator("rate_limit_storage")
    @classmethod
    def _storage(cls, v: str) -> str:
        return check_storage(v)

    @field_validator("public_origin")
    @classmethod
    def _origin(cls, v: str | None) -> str | None:
        return check_origin(v) if v else None

    @field_validator("signing_secret")
    @classmethod
    def _strong_secret(cls, v: SecretStr) -> SecretStr:
        if _weak(v.get_secret_value()):
            raise ValueError(
                f"HARMON_GATEWAY_SIGNING_SECRET must be at least {MIN_SECRET_CHARS} random characters "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        return v

    @field_validator("previous_signing_secrets", mode="before")
    @classmethod
    def _split_previous(cls, v: object) -> object:
        if isinstance(v, str):  # the env form: secret1,secret2 (url-safe secrets hold no commas)
            return [s.strip() for s in v.split(",") if s.strip()]
        return v

    @field_validator("previous_signing_secrets")
    @classmethod
    def _strong_previous(cls, v: list[SecretStr]) -> list[SecretStr]:
        if len(v) > MAX_PREVIOUS_SECRETS:
            raise ValueError(f"at most {MAX_PREVIOUS_SECRETS} previous signing secrets: "
                             "drop those older than the token TTL")
        for i, secret in enumerate(v, 1):
            if _weak(secret.get_secret_value()):
                raise ValueError(f"HARMON_GATEWAY_PREVIOUS_SIGNING_SECRETS: secret #{i} is weak; each must be at "
                                 f"least {MIN_SECRET_CHARS} random characters")
        return v

    @model_validator(mode="after")
    def _lease_outlives_requests(self) -> "Settings":
        # a lease shorter than a request would let a retry run the same operation beside the first
        if self.idempotency_lease_s <= max(self.request_timeout_s, self.checkout_timeout_s):
            raise ValueError("idempotency_lease_s must be longer than request_timeout_s and checkout_timeout_s")
        return self


SETTINGS = web.AppKey("settings", Settings)
