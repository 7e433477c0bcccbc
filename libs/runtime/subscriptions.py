"""Wiring a service's routes to the broker: one consumer, its dispatcher and parking relay, and the watch that
resumes consumption once a dependency that was down answers again."""

import asyncio

from .consumer import Consumer
from .context import ServiceContext
from .dispatch import Dispatcher
from .parking import Parking
from .skip_guard import GapGuard


def gap_guard(ctx: ServiceContext, name: str) -> GapGuard | None:
    """The embedded broker's skip guard for one consumer, counted on /metrics; None on real Kafka."""
    if ctx.settings.broker_mode != "embedded":
        return None
    return GapGuard(name, lambda topic: ctx.metrics.skips_reread.labels(topic=topic).inc())


async def watch_dependencies(ctx: ServiceContext) -> None:
    """Resume paused consumers once the database answers and the broker is up again."""
    while True:
        await asyncio.sleep(0.5)
        paused = [c for c in ctx.consumers if c.paused_reason is not None]
        ctx.extras["database_down"] = bool(paused) and not await ctx.db.answers()
        if paused and ctx.link.up and not ctx.extras["database_down"]:
            for consumer in paused:
                consumer.resume()


def open_subscriptions(ctx: ServiceContext) -> Consumer | None:
    """One consumer per service instance, in the group named after the service, over every routed topic.

    One consumer rather than one per topic: the embedded broker does not wake a waiting fetch when
    a message arrives, so every consumer polls every `fetch_max_wait_ms`, and that polling, not the
    messages, was most of the CPU of an idle stack. Call `start_subscriptions` once the link is up.
    """
    if not ctx.routes:
        return None
    m = ctx.metrics
    m.expect_dead_letters(list(ctx.routes))
    parking = Parking(ctx.db, max_attempts=ctx.settings.max_attempts,
                      dead_letter=lambda rec, reason, detail, n: dispatcher.dead_letter(rec, reason, detail, attempts=n),
                      on_change=lambda count, age: (m.parked.set(count), m.parked_oldest_seconds.set(age)))
    dispatcher = Dispatcher(ctx, parking)
    consumer = Consumer(ctx.link, ctx.name, list(ctx.routes), dispatcher.on_batch, group_id=ctx.name,
                        guard=lambda: gap_guard(ctx, ctx.name), on_assigned=parking.assigned,
                        on_lag=lambda tp, lag: m.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag))
    ctx.parking = parking
    ctx.consumers.append(consumer)
    ctx.extras["dispatcher"] = dispatcher
    return consumer


async def start_subscriptions(ctx: ServiceContext) -> None:
    for consumer in ctx.consumers:
        await consumer.start()
    if ctx.parking is not None:
        ctx.parking.start(ctx.extras["dispatcher"].retry_parked)
    ctx.extras["dependency_watch"] = asyncio.create_task(watch_dependencies(ctx))


async def stop_consuming(ctx: ServiceContext) -> None:
    """Finish the batches in flight and commit their offsets, then leave the groups."""
    watch = ctx.extras.pop("dependency_watch", None)
    if watch is not None:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
    if ctx.parking is not None:
        await ctx.parking.stop()
    for consumer in ctx.consumers:
        await consumer.stop()
