"""Run one back-end service: database, broker link, consumer, outbox relay, parking relay, health server; drain on SIGTERM."""

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from libs.contracts.topics import all_topic_names

from .broker import BrokerLink
from .context import ServiceContext
from .database import Database
from .health import HealthServer
from .logs import refuse_to_start, setup_logging
from .metrics import Metrics
from .migrations import head_revision, known_revisions
from .outbox import Outbox
from .settings import ServiceSettings
from . import tracing
from .subscriptions import open_subscriptions, start_subscriptions, stop_consuming
from .unit_of_work import UnitOfWork

log = logging.getLogger("harmon.service")


@dataclass
class ServiceSpec:
    name: str
    settings: ServiceSettings
    migrations_dir: Path
    register: Callable[[ServiceContext], None]
    unit_of_work: type[UnitOfWork] = UnitOfWork
    background: list[Callable[[ServiceContext], Awaitable[None]]] = field(default_factory=list)


def build_context(spec: ServiceSpec) -> ServiceContext:
    s = spec.settings
    db = Database(s.database_url, max_size=s.db_pool_size)
    link = BrokerLink(s, client_id=f"{spec.name}-{s.instance_id}", topics=all_topic_names())
    metrics = Metrics.create()
    metrics.identify(spec.name, s.instance_id)
    outbox = Outbox(link, db, relay_interval_s=s.outbox_relay_interval_s, replay_s=s.outbox_replay_s, metrics=metrics)
    ctx = ServiceContext(name=spec.name, settings=s, link=link, db=db, outbox=outbox, metrics=metrics,
                         unit_of_work=spec.unit_of_work)
    spec.register(ctx)
    open_subscriptions(ctx)
    return ctx


async def serve(spec: ServiceSpec, stop: asyncio.Event) -> None:
    """Start everything, wait for `stop`, then drain in-flight messages and close."""
    ctx = build_context(spec)
    # harmon dev announces a planned restart of its embedded broker (libs/stack/supervisor.py)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, ctx.link.expect_planned_restart)
    health = HealthServer(ctx, head_revision(spec.migrations_dir), known_revisions(spec.migrations_dir))
    port = await health.start(spec.settings.health_port)
    await ctx.db.start()
    log.info("%s health on 127.0.0.1:%d", spec.name, port)
    await ctx.link.start()  # topics, producer; waits for the broker however long it takes
    await start_subscriptions(ctx)
    ctx.outbox.start()
    tasks = [asyncio.create_task(job(ctx)) for job in spec.background]
    log.info("%s started (instance %s)", spec.name, spec.settings.instance_id)
    try:
        await stop.wait()
    finally:
        ctx.extras["draining"] = True
        log.info("%s draining", spec.name)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await stop_consuming(ctx)  # the batches in flight finish and their offsets are committed
        await ctx.outbox.stop()
        await ctx.link.stop()
        await ctx.db.close()
        await health.stop()
        log.info("%s stopped", spec.name)


def run(make_spec: Callable[[], ServiceSpec]) -> None:
    """Entry point of `python -m services.<name>`."""
    try:
        spec = make_spec()
    except ValidationError as e:  # a traceback would be several raw lines, and pydantic's would echo the values
        name = make_spec.__module__.removeprefix("services.").split(".")[0]
        refuse_to_start(name, e, f"HARMON_{name.upper()}_")
    setup_logging(spec.name, spec.settings.log_level, spec.settings.log_format, spec.settings.instance_id)
    tracing.configure(spec.name, spec.settings.instance_id)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(spec, stop)

    try:
        asyncio.run(main())
    finally:
        tracing.shutdown()
