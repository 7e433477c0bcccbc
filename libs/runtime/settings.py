"""Settings shared by every service. Common fields read `HARMON_*`; each service adds its own prefix."""

import secrets
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _common(name: str) -> AliasChoices:
    return AliasChoices(f"HARMON_{name.upper()}")


class KafkaTimings(BaseSettings):
    session_timeout_ms: int
    heartbeat_interval_ms: int
    fetch_max_wait_ms: int  # while idle
    fetch_busy_wait_ms: int  # while records flow
    acks: Literal[1, "all"]


# Tansu settles groups slowly with Kafka's defaults; a real cluster rejects sessions under 6 s. A heartbeat a
# second (not every 300 ms): seven consumers' heartbeats were a third of an idle stack's broker CPU.
# The fetch wait adapts (libs/runtime/consumer.py): the embedded broker answers a waiting fetch only when
# its wait ends, so while records flow a consumer asks with the busy wait (each hop waits at most that),
# and once idle it doubles the wait up to fetch_max_wait_ms (the idle polling CPU falls with it).
# Kafka answers a waiting fetch as soon as a record arrives: there one long wait costs no latency.
EMBEDDED_TIMINGS = dict(session_timeout_ms=3000, heartbeat_interval_ms=1000, fetch_max_wait_ms=500,
                        fetch_busy_wait_ms=5, acks=1)
EXTERNAL_TIMINGS = dict(session_timeout_ms=10000, heartbeat_interval_ms=3000, fetch_max_wait_ms=500,
                        fetch_busy_wait_ms=500, acks="all")


class ServiceSettings(BaseSettings):
    """Base settings; subclasses set `env_prefix="HARMON_<SERVICE>_"` for their own fields."""

    model_config = SettingsConfigDict(extra="ignore")

    kafka_bootstrap: str = Field("127.0.0.1:9092", validation_alias=_common("kafka_bootstrap"))
    broker_mode: Literal["embedded", "external"] = Field("embedded", validation_alias=_common("broker_mode"))
    partitions: int = Field(8, ge=1, validation_alias=_common("partitions"))
    log_level: str = Field("INFO", validation_alias=_common("log_level"))
    # json: one object per line for a log store (libs/runtime/logs.py); text: a human line
    log_format: Literal["json", "text"] = Field("json", validation_alias=_common("log_format"))
    instance_id: str = Field(default_factory=lambda: secrets.token_hex(4), validation_alias=_common("instance_id"))
    # attempts of a parked message (each after a growing backoff); after this many it goes to `<topic>.dlt`
    max_attempts: int = Field(5, ge=1, validation_alias=_common("max_attempts"))
    outbox_relay_interval_s: float = Field(1.0, gt=0, validation_alias=_common("outbox_relay_interval_s"))
    # After the broker came back without our records: outbox rows sent this recently are sent again
    # (consumers' inboxes drop what they already had).
    outbox_replay_s: float = Field(300.0, ge=0, validation_alias=_common("outbox_replay_s"))
    # Quick retries of a message that lost a race, before it is parked (docs/operations.md).
    quick_retries: int = Field(3, ge=0, le=10, validation_alias=_common("quick_retries"))
    # How long the broker may hold an empty fetch: idle polling CPU against, past a point, the latency
    # of each hop on the embedded broker (see EMBEDDED_TIMINGS); None: the mode's default.
    fetch_max_wait_ms: int | None = Field(None, ge=1, le=5000, validation_alias=_common("fetch_max_wait_ms"))
    # The wait while records flow (at most fetch_max_wait_ms); None: the mode's default.
    fetch_busy_wait_ms: int | None = Field(None, ge=1, le=5000, validation_alias=_common("fetch_busy_wait_ms"))
    # How long without records before the wait starts growing towards fetch_max_wait_ms.
    fetch_idle_after_s: float = Field(1.0, ge=0, validation_alias=_common("fetch_idle_after_s"))

    database_url: str = Field(description="postgresql://role:password@host:port/db of this service's own database")
    health_port: int = Field(0, ge=0, description="port of /healthz, /readyz, /metrics (0: any free port)")
    # 0.0.0.0 in a container, where probes and the metrics scraper come from outside it
    health_host: str = Field("127.0.0.1", validation_alias=_common("health_host"),
                             description="address /healthz, /readyz and /metrics of a back-end service listen on")
    db_pool_size: int = Field(10, ge=1)

    @property
    def kafka_timings(self) -> KafkaTimings:
        timings = dict(EMBEDDED_TIMINGS if self.broker_mode == "embedded" else EXTERNAL_TIMINGS)
        if self.fetch_max_wait_ms is not None:
            timings["fetch_max_wait_ms"] = self.fetch_max_wait_ms
        if self.fetch_busy_wait_ms is not None:
            timings["fetch_busy_wait_ms"] = self.fetch_busy_wait_ms
        timings["fetch_busy_wait_ms"] = min(timings["fetch_busy_wait_ms"], timings["fetch_max_wait_ms"])
        return KafkaTimings(**timings)
