"""Notifier settings (`HARMON_NOTIFIER_*`): the secrets key and the delivery worker's schedule (docs/api.md,
"Webhooks")."""

import base64
import binascii

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from libs.runtime.settings import ServiceSettings

DEFAULT_RETRY_S = "60,300,1800,3600,10800,21600,43200,86400"
# harmon dev's stand-in when it passes no key (a fixed key: endpoints made in dev survive a restart)
DEV_KEY = base64.urlsafe_b64encode(bytes(range(1, 33))).decode()


def decode_key(raw: str) -> bytes:
    """The 32 key bytes of urlsafe base64 (padding optional); ValueError when it is not a strong key."""
    try:
        key = base64.urlsafe_b64decode(raw.strip() + "=" * (-len(raw.strip()) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("must be urlsafe base64 of 32 random bytes") from None
    if len(key) != 32:
        raise ValueError(f"must be urlsafe base64 of 32 random bytes (it decodes to {len(key)})")
    if len(set(key)) == 1:
        raise ValueError("is a weak key (every byte the same); make one with "
                         "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return key


def parse_schedule(raw: str) -> tuple[float, ...]:
    try:
        delays = tuple(float(x) for x in raw.split(",") if x.strip())
    except ValueError:
        raise ValueError("must be a comma list of delays in seconds, e.g. 60,300,1800") from None
    if not delays or any(d <= 0 for d in delays):
        raise ValueError("must be a comma list of positive delays in seconds")
    return delays


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HARMON_NOTIFIER_", extra="ignore")

    # AES-GCM key of the endpoints' signing secrets at rest: a database reader alone cannot sign
    secrets_key: SecretStr | None = None
    dev_secrets: bool = False  # harmon dev only: a missing or weak key is allowed
    webhook_retry_s: str = DEFAULT_RETRY_S  # delays after the 1st, 2nd, … failed attempt; then the last repeats
    webhook_max_age_live_s: float = Field(259_200, gt=0)
    webhook_max_age_test_s: float = Field(3_600, gt=0)
    webhook_disable_after_s: float = Field(259_200, gt=0)
    webhook_timeout_s: float = Field(10.0, gt=0)
    webhook_concurrency: int = Field(32, ge=1)  # attempts in flight per instance
    webhook_poll_interval_s: float = Field(1.0, gt=0)
    webhook_lease_s: float = Field(30.0, gt=0)  # longer than an attempt takes; a crashed worker's claim expires

    @field_validator("webhook_retry_s")
    @classmethod
    def _schedule(cls, v: str) -> str:
        parse_schedule(v)
        return v

    @model_validator(mode="after")
    def _key(self) -> "Settings":
        raw = self.secrets_key.get_secret_value() if self.secrets_key else ""
        try:
            if not raw:
                raise ValueError("is missing: set it to urlsafe base64 of 32 random bytes")
            decode_key(raw)
        except ValueError as e:
            if not self.dev_secrets:
                raise ValueError(f"HARMON_NOTIFIER_SECRETS_KEY {e}") from None
            self.secrets_key = SecretStr(raw if raw and _strong(raw) else DEV_KEY)
        return self

    @property
    def key_bytes(self) -> bytes:
        assert self.secrets_key is not None
        return decode_key(self.secrets_key.get_secret_value())

    @property
    def retry_schedule(self) -> tuple[float, ...]:
        return parse_schedule(self.webhook_retry_s)

    def max_age_s(self, livemode: bool) -> float:
        return self.webhook_max_age_live_s if livemode else self.webhook_max_age_test_s


def _strong(raw: str) -> bool:
    try:
        decode_key(raw)
        return True
    except ValueError:
        return False
