"""The metrics a team alerts on (libs/runtime/metrics.py, docs/operations.md "Metrics and alerts"): sagas ended
by outcome counted from the orders handlers through `uow.observe`, only for steps that end a saga; dead-letter
series born at 0; the saga family only where a saga runs; the lag of every assigned partition at scrape."""

from datetime import timedelta
from types import SimpleNamespace

from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from libs.contracts.base import Failure
from libs.contracts.credit import CreditRejected
from libs.runtime.database import Unscoped
from libs.runtime.dispatch import record_observations
from libs.runtime.health import scrape
from libs.runtime.metrics import DEAD_LETTER_REASONS, SAGA_OUTCOMES, Metrics
from services.orders import handlers

from .test_checkout_saga import TIMEOUT, TOTALS
from .test_orders_handlers import CUSTOMER, NOW, A, B, World, answer_to, ask, place, priced_reply, reserved_reply


def ended(metrics: Metrics) -> dict[str, float]:
    return {o: metrics.registry.get_sample_value("harmon_sagas_ended_total", {"outcome": o}) for o in SAGA_OUTCOMES}


class Observed(World):
    """The orders world, keeping what each handled message asked to observe, recorded as the dispatcher does
    after the commit."""

    def __init__(self):
        super().__init__()
        self.metrics = Metrics.create()

    async def handle(self, handler, env, scope=None):
        uow = self.uow(env, scope)
        reply = await handler(env.payload, uow)
        self.sent += uow.outbox.envelopes
        record_observations(SimpleNamespace(metrics=self.metrics), uow.observations)
        return reply, uow.outbox.envelopes, len(uow.observations)


async def start(world: Observed, scope=A, key="key_1"):
    _, out, observed = await world.handle(handlers.place_order, ask(place(key), scope))
    assert observed == 0  # a saga started is not an end
    return out[0][2]


async def test_each_saga_end_counts_once_by_outcome_and_the_steps_between_count_nothing():
    world = Observed()
    world.metrics.saga()  # as the orders sweeper does on its first pass
    assert ended(world.metrics) == dict.fromkeys(SAGA_OUTCOMES, 0.0)  # every outcome's series from the start
    freeze = await start(world)
    _, _, observed = await world.handle(handlers.advance_checkout, answer_to(freeze, priced_reply()))
    assert observed == 0
    _, _, observed = await world.handle(handlers.advance_checkout, answer_to(freeze, reserved_reply()))
    assert observed == 1
    # the same reply again (a redelivery the inbox did not catch) ends nothing more
    _, _, observed = await world.handle(handlers.advance_checkout, answer_to(freeze, reserved_reply()))
    assert observed == 0
    assert ended(world.metrics) == {"confirmed": 1.0, "rejected": 0.0, "failed": 0.0, "expired": 0.0}


async def test_compensated_sagas_count_as_rejected_failed_and_expired():
    world = Observed()
    rejected = await start(world, key="k_rejected")
    no = CreditRejected(reservation_id="res_1", bill_to_id=CUSTOMER, limit=1_000, exposure=0, available=1_000,
                        order_total=TOTALS.total, shortfall=TOTALS.total - 1_000, currency="JMD")
    await world.handle(handlers.advance_checkout, answer_to(rejected, no))

    failed = await start(world, scope=B, key="k_failed")
    await world.handle(handlers.advance_checkout, answer_to(failed, Failure(code="amount_too_large", message="no")))
    assert ended(world.metrics) == {"confirmed": 0.0, "rejected": 1.0, "failed": 1.0, "expired": 0.0}

    await start(world, key="k_expired")  # another cart would be refused while A's first is held: not here
    world.now = NOW + TIMEOUT + timedelta(seconds=1)
    sweeper = world.uow(None, Unscoped("test: the sweeper"))
    assert await handlers.expire_overdue(sweeper, limit=10) == 1
    record_observations(SimpleNamespace(metrics=world.metrics), sweeper.observations)
    assert ended(world.metrics)["expired"] == 1.0
    # a second sweep finds nothing and counts nothing
    again = world.uow(None, Unscoped("test: the sweeper"))
    assert await handlers.expire_overdue(again, limit=10) == 0 and again.observations == []


def test_a_failing_observation_does_not_stop_the_others():
    metrics = Metrics.create()

    def broken(_: Metrics) -> None:
        raise RuntimeError("a bug in a metric")

    record_observations(SimpleNamespace(metrics=metrics), [broken, lambda m: m.saga().ended("confirmed")])
    assert ended(metrics)["confirmed"] == 1.0


def families(metrics: Metrics) -> dict:
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


def test_dead_letter_series_start_at_zero_for_every_topic_and_reason():
    metrics = Metrics.create()
    metrics.expect_dead_letters(["cart.commands.v1", "erp.products.v1"])
    samples = {(s.labels["topic"], s.labels["reason"]): s.value
               for s in families(metrics)["harmon_messages_dead_lettered"].samples if s.name.endswith("_total")}
    assert samples == {(t, r): 0.0 for t in ("cart.commands.v1", "erp.products.v1") for r in DEAD_LETTER_REASONS}


def test_the_saga_family_is_only_where_a_saga_runs_and_registered_once():
    metrics = Metrics.create()
    assert not any(name.startswith("harmon_sagas") for name in families(metrics))
    assert metrics.saga() is metrics.saga()
    metrics.saga().in_flight.set(3)
    found = families(metrics)
    assert found["harmon_sagas_in_flight"].samples[0].value == 3
    assert found["harmon_sagas_ended"].type == "counter"
    # the outbox gauges are on every service
    assert {"harmon_outbox_unsent", "harmon_outbox_oldest_unsent_seconds"} <= set(found)


def test_scrape_reports_the_lag_of_every_assigned_partition_only_and_the_broker():
    metrics = Metrics.create()
    assigned = {TopicPartition("cart.commands.v1", 0): 0, TopicPartition("cart.commands.v1", 1): 7}
    consumer = SimpleNamespace(lag=lambda: assigned, assignment=lambda: set(assigned))
    ctx = SimpleNamespace(metrics=metrics, link=SimpleNamespace(up=True), consumers=[consumer])
    metrics.consumer_lag.labels(topic="cart.commands.v1", partition="2").set(40)  # before a rebalance took it away
    text = scrape(ctx).decode()
    lag = {s.labels["partition"]: s.value for s in
           next(f for f in text_string_to_metric_families(text) if f.name == "harmon_consumer_lag").samples}
    assert lag == {"0": 0.0, "1": 7.0}  # partition 2 is no longer ours: not reported
    assert metrics.registry.get_sample_value("harmon_broker_up") == 1.0
    # the gateway's /metrics before its messaging started: no context yet, the broker reported down
    assert scrape(None, metrics) and metrics.registry.get_sample_value("harmon_broker_up") == 0.0
