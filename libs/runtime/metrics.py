"""Prometheus metrics every service exposes on /metrics."""

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


@dataclass
class Metrics:
    registry: CollectorRegistry
    handled: Counter
    retries: Counter
    duplicates: Counter
    dead_lettered: Counter
    skips_reread: Counter
    handler_seconds: Histogram

    @classmethod
    def create(cls) -> "Metrics":
        r = CollectorRegistry()
        return cls(
            registry=r,
            handled=Counter("harmon_messages_handled", "messages handled", ["topic", "type"], registry=r),
            retries=Counter("harmon_message_retries", "handler attempts that failed and were retried", ["topic"], registry=r),
            duplicates=Counter("harmon_messages_duplicate", "messages skipped by the inbox", ["topic"], registry=r),
            dead_lettered=Counter("harmon_messages_dead_lettered", "messages sent to a .dlt topic", ["topic"], registry=r),
            skips_reread=Counter("harmon_broker_skips_reread", "offsets the embedded broker skipped and the consumer "
                                 "read again (GapGuard)", ["topic"], registry=r),
            handler_seconds=Histogram("harmon_handler_seconds", "time to handle one message, commit and publish included",
                                      ["type"], registry=r,
                                      buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0)),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
