"""Explicit topic creation: the broker would auto-create a topic with its own partition count."""

import asyncio
import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from libs.contracts import topics

from .settings import ServiceSettings

log = logging.getLogger("harmon.kafka")


class TopicMismatch(RuntimeError):
    """A topic exists with a partition count other than the one configured."""


async def ensure_topics(
    bootstrap: str, names: Iterable[str], partitions: int, *, timeout_s: float = 30.0, tolerate_mismatch: bool = False
) -> None:
    """Create each topic with `partitions` partitions; fail loudly if one exists with another count.

    `tolerate_mismatch` (the embedded broker, after it restarted empty): a topic the broker auto-created
    with its own count before we could create it is used as it is, with a warning. Keys still map to
    one partition each, so order holds; only the partition count differs from the setting.
    """
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
                if tolerate_mismatch:
                    log.warning("topic %s has %d partitions, configured %d (auto-created by the broker); used as it is",
                                topic["topic"], count, partitions)
                    continue
                raise TopicMismatch(
                    f"topic {topic['topic']} has {count} partitions, configured {partitions}; "
                    "recreate it or set HARMON_PARTITIONS to match"
                )
    finally:
        await admin.close()


async def ensure_all_topics(settings: ServiceSettings) -> None:
    await ensure_topics(settings.kafka_bootstrap, topics.all_topic_names(), settings.partitions,
                        tolerate_mismatch=settings.broker_mode == "embedded")
