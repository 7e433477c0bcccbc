"""Prometheus metrics every service exposes on /metrics."""

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


@dataclass
class Metrics:
    registry: CollectorRegistry
    handled: Counter
    retries: Counter
    duplicates: Counter
    dead_lettered: Counter

    @classmethod
    def create(cls) -> "Metrics":
        r = CollectorRegistry()
        return cls(
            registry=r,
            handled=Counter("harmon_messages_handled", "messages handled", ["topic", "type"], registry=r),
            retries=Counter("harmon_message_retries", "handler attempts that failed and were retried", ["topic"], registry=r),
            duplicates=Counter("harmon_messages_duplicate", "messages skipped by the inbox", ["topic"], registry=r),
            dead_lettered=Counter("harmon_messages_dead_lettered", "messages sent to a .dlt topic", ["topic"], registry=r),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
