"""Prometheus metrics every service exposes on /metrics (what each alert in deploy/observability/ reads is in
docs/operations.md, "Metrics and alerts").

Hot-path metrics are in-memory counters and histograms; what lives in the database (outbox rows not yet
published, sagas in flight) is sampled by a periodic query, never by one per message.
"""

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


@dataclass
class Metrics:
    registry: CollectorRegistry
    handled: Counter
    retries: Counter
    duplicates: Counter
    dead_lettered: Counter
    skips_reread: Counter
    handler_seconds: Histogram
    parked: Gauge
    parked_oldest_seconds: Gauge
    parked_total: Counter
    consumer_lag: Gauge
    broker_up: Gauge
    batch_size: Histogram
    batches_split: Counter
    outbox_unsent: Gauge
    outbox_oldest_unsent_seconds: Gauge
    service_info: Gauge
    _saga: "SagaMetrics | None" = field(default=None, repr=False)

    @classmethod
    def create(cls) -> "Metrics":
        r = CollectorRegistry()
        return cls(
            registry=r,
            handled=Counter("harmon_messages_handled", "messages handled", ["topic", "type"], registry=r),
            retries=Counter("harmon_message_retries", "handler attempts that failed and were retried", ["topic"], registry=r),
            duplicates=Counter("harmon_messages_duplicate", "messages skipped by the inbox", ["topic"], registry=r),
            dead_lettered=Counter("harmon_messages_dead_lettered", "messages sent to a .dlt topic, by why: "
                                  "invalid_message, unhandled_type, permanent, attempts_exhausted",
                                  ["topic", "reason"], registry=r),
            skips_reread=Counter("harmon_broker_skips_reread", "offsets the embedded broker skipped and the consumer "
                                 "read again (GapGuard)", ["topic"], registry=r),
            handler_seconds=Histogram("harmon_handler_seconds", "time to handle one message, commit and publish included",
                                      ["type"], registry=r,
                                      buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0)),
            parked=Gauge("harmon_parked_messages", "messages parked after transient failures, waiting for a retry",
                         registry=r),
            parked_oldest_seconds=Gauge("harmon_parked_oldest_seconds", "age of the oldest parked message", registry=r),
            parked_total=Counter("harmon_messages_parked", "messages parked (a transient failure, or behind one)",
                                 ["topic"], registry=r),
            consumer_lag=Gauge("harmon_consumer_lag", "records on the broker not handled yet (fetch high-watermark "
                               "minus the next offset)", ["topic", "partition"], registry=r),
            batch_size=Histogram("harmon_batch_messages", "messages of one partition handled in one transaction",
                                 ["topic"], registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128)),
            batches_split=Counter("harmon_batches_split", "batches handled one by one instead (a rejection, a failure "
                                  "or a duplicate in them)", ["topic"], registry=r),
            broker_up=Gauge("harmon_broker_up", "1 while the broker is usable, 0 while it is lost and being recovered",
                            registry=r),
            outbox_unsent=Gauge("harmon_outbox_unsent", "outbox rows committed and not yet confirmed by the broker "
                                "(sampled every few seconds)", registry=r),
            outbox_oldest_unsent_seconds=Gauge("harmon_outbox_oldest_unsent_seconds", "age of the oldest outbox row "
                                               "not yet confirmed by the broker, 0 when none (sampled)", registry=r),
            service_info=Gauge("harmon_service_info", "1, labelled with the service this process runs and its "
                               "instance id (join on the scrape's instance to name a service)",
                               ["service", "instance_id"], registry=r),
        )

    def identify(self, service: str, instance_id: str) -> None:
        self.service_info.labels(service=service, instance_id=instance_id).set(1)

    def saga(self) -> "SagaMetrics":
        """The saga's metrics, registered by the service that runs one (orders) the first time it asks."""
        if self._saga is None:
            self._saga = SagaMetrics(self.registry)
        return self._saga

    def expect_dead_letters(self, topics: list[str]) -> None:
        """Every (topic, reason) child at 0 from the start, so the first message dead-lettered is an increase
        Prometheus sees (a series born at 1 has no increase) and the DLT alert fires on it."""
        for topic in topics:
            for reason in DEAD_LETTER_REASONS:
                self.dead_lettered.labels(topic=topic, reason=reason)

    def render(self) -> bytes:
        return generate_latest(self.registry)


DEAD_LETTER_REASONS = ("invalid_message", "unhandled_type", "permanent", "attempts_exhausted")
SAGA_OUTCOMES = ("confirmed", "rejected", "failed", "expired")  # services/orders/domain.py CheckoutState


class SagaMetrics:
    """Sagas in flight (sampled from the database by the service's sweeper: every instance reports the same
    number, so dashboards take max) and sagas ended by outcome (counted once their transaction committed)."""

    def __init__(self, registry: CollectorRegistry):
        self.in_flight = Gauge("harmon_sagas_in_flight", "sagas started and not ended (sampled from the database)",
                               registry=registry)
        self._ended = Counter("harmon_sagas_ended", "sagas ended, by outcome: confirmed, or compensated (rejected: "
                              "over the credit limit; failed: a step refused; expired: a step timed out)",
                              ["outcome"], registry=registry)
        for outcome in SAGA_OUTCOMES:
            self._ended.labels(outcome=outcome)

    def ended(self, outcome: str) -> None:
        self._ended.labels(outcome=outcome).inc()
