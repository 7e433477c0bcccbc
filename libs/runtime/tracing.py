"""Traces across every hop (OpenTelemetry): one checkout is one trace, gateway → orders → cart → pricing → credit →
orders → gateway (docs/operations.md, "Traces").

The W3C `traceparent` of the span that caused a message travels in the message: in its envelope (so it is stored
with the outbox row, and the relay sends it again after a crash) and as the Kafka header `traceparent` (for tools
that read headers only). Each handler runs in a consumer span that continues the trace; its database work is traced
by the asyncpg instrumentation.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: then nothing here does more
than check one flag, so the hot path pays nothing for tracing it does not do. On, spans are exported with OTLP/HTTP;
the standard `OTEL_*` variables (sampler, batch delay, headers) apply.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind

from .logs import add_context

log = logging.getLogger("harmon.tracing")

TRACEPARENT = "traceparent"
_tracer = trace.get_tracer("harmon")
_enabled = False


def enabled() -> bool:
    return _enabled


def configure(service: str, instance: str, *, http_server: bool = False) -> bool:
    """Export this process's spans when an OTLP endpoint is configured; returns whether tracing is on.
    `http_server`: also a span per aiohttp request (the gateway; call before its Application is made)."""
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return False
    # imported only when on: the SDK, the exporter and the instrumentation cost nothing to a process that is off
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"harmon-{service}",
                                                        "service.instance.id": instance}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    AsyncPGInstrumentor().instrument(tracer_provider=provider)
    if http_server:
        from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
        AioHttpServerInstrumentor().instrument(tracer_provider=provider)
    use(provider)
    add_context(_log_fields)  # every log record of a traced span names it
    log.info("tracing on: spans exported with OTLP/HTTP")
    return True


def _log_fields() -> dict[str, str]:
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}


def use(provider: trace.TracerProvider | None) -> None:
    """Trace with `provider` (configure's, or a test's in-memory one); None turns tracing off again."""
    global _enabled, _tracer
    _tracer = (provider or trace.get_tracer_provider()).get_tracer("harmon")
    _enabled = provider is not None


def shutdown() -> None:
    """Flush the spans not exported yet (on a clean stop)."""
    if _enabled:
        provider = trace.get_tracer_provider()
        if hasattr(provider, "shutdown"):
            provider.shutdown()


def current_traceparent() -> str | None:
    """The `traceparent` of the current span, for a message it causes; None when tracing is off or no span is."""
    if not _enabled:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT)


def headers_for(traceparent: str | None) -> dict[str, str] | None:
    return {TRACEPARENT: traceparent} if traceparent else None


def traceparent_in(value: bytes) -> str | None:
    """The `traceparent` of a stored envelope (the relay's rows), without parsing one that has none."""
    if b'"traceparent":"' not in value:
        return None
    found = json.loads(value).get(TRACEPARENT)
    return found if isinstance(found, str) else None


@contextmanager
def consuming(topic: str, message_type: str, message_id: str, traceparent: str | None,
              request_id: str | None = None) -> Iterator[Span | None]:
    """The span of handling one message, a child of the span that sent it; `harmon.request_id` finds it from a log
    line or an error answer."""
    if not _enabled:
        yield None
        return
    parent = propagate.extract({TRACEPARENT: traceparent}) if traceparent else None
    with _tracer.start_as_current_span(f"{topic} process {message_type}", context=parent, kind=SpanKind.CONSUMER,
                                       attributes={"messaging.system": "kafka",
                                                   "messaging.destination.name": topic,
                                                   "messaging.operation.type": "process",
                                                   "messaging.message.id": message_id,
                                                   "harmon.request_id": request_id or ""}) as span:
        yield span


@contextmanager
def producing(topic: str, message_type: str, request_id: str | None = None) -> Iterator[Span | None]:
    """The span of sending one command outside any handler (the gateway's request): its child is the handler."""
    if not _enabled:
        yield None
        return
    with _tracer.start_as_current_span(f"{topic} send {message_type}", kind=SpanKind.PRODUCER,
                                       attributes={"messaging.system": "kafka",
                                                   "messaging.destination.name": topic,
                                                   "messaging.operation.type": "send",
                                                   "harmon.request_id": request_id or ""}) as span:
        yield span
