"""Broker factory, subscriber options per mode, and explicit topic creation (auto-created topics get one partition)."""

import asyncio
import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker

from libs.contracts import topics

from .settings import ServiceSettings

log = logging.getLogger("harmon.kafka")


class TopicMismatch(RuntimeError):
    """A topic exists with a partition count other than the one configured."""


def make_broker(settings: ServiceSettings, client_id: str) -> KafkaBroker:
    return KafkaBroker(
        settings.kafka_bootstrap,
        client_id=client_id,
        acks=settings.kafka_timings.acks,
        graceful_timeout=10.0,
        log_level=logging.DEBUG,
        logger=logging.getLogger(f"harmon.{client_id}.faststream"),
    )


def subscriber_options(settings: ServiceSettings, group_id: str | None) -> dict:
    """Commit after the handler; a new group starts at the earliest offset (FastStream's defaults do neither)."""
    t = settings.kafka_timings
    opts: dict = dict(
        fetch_max_wait_ms=t.fetch_max_wait_ms,
        ack_policy=AckPolicy.ACK,
        no_reply=True,
    )
    if group_id is None:
        # No group, no offsets to commit: AckPolicy.ACK would call commit() and log IllegalOperation per message.
        opts.update(auto_offset_reset="latest", ack_policy=AckPolicy.ACK_FIRST)
    else:
        opts.update(
            group_id=group_id,
            auto_offset_reset="earliest",
            session_timeout_ms=t.session_timeout_ms,
            heartbeat_interval_ms=t.heartbeat_interval_ms,
        )
    return opts


async def ensure_topics(
    bootstrap: str, names: Iterable[str], partitions: int, *, timeout_s: float = 30.0
) -> None:
    """Create each topic with `partitions` partitions; fail loudly if one exists with another count."""
    names = list(dict.fromkeys(names))
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            await admin.close()
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("broker %s not reachable yet; retrying", bootstrap)
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in missing]
                )
            except TopicAlreadyExistsError:
                pass  # another process won the race; the count is checked below
        described = await admin.describe_topics(names)
        for topic in described:
            count = len(topic.get("partitions") or [])
            if topic.get("error_code", 0) == 0 and count != partitions:
                raise TopicMismatch(
                    f"topic {topic['topic']} has {count} partitions, configured {partitions}; "
                    "recreate it or set HARMON_PARTITIONS to match"
                )
    finally:
        await admin.close()


async def ensure_all_topics(settings: ServiceSettings) -> None:
    await ensure_topics(settings.kafka_bootstrap, topics.all_topic_names(), settings.partitions)
