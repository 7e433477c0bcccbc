"""libs/runtime/tracing.py without a collector: off, nothing is traced and no message carries a traceparent; on (an
in-memory exporter), a handler's span continues the sender's trace and what it sends carries its own span."""

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from libs.contracts.cart import CreateCart
from libs.contracts.envelope import Envelope
from libs.runtime import tracing
from libs.runtime.unit_of_work import Outbox, derive

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _incoming(traceparent: str | None = PARENT) -> Envelope:
    return Envelope(tenant_id="ten_1", livemode=False, traceparent=traceparent,
                    payload=CreateCart(cart_id="cart_1", customer_id="cus_1"))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)


def test_off_nothing_is_traced_and_nothing_carries_a_traceparent():
    assert not tracing.enabled()
    with tracing.consuming("cart.commands.v1", "CreateCart", "msg_1", PARENT) as span:
        assert span is None
        out = derive(_incoming(), CreateCart(cart_id="cart_2", customer_id="cus_1"))
    assert out.traceparent is None and tracing.current_traceparent() is None


def test_on_a_handler_continues_the_senders_trace_and_its_messages_carry_its_span(spans):
    incoming = _incoming()
    outbox = Outbox(incoming)
    with tracing.consuming("cart.commands.v1", incoming.type, incoming.message_id, incoming.traceparent):
        sent = outbox.add("orders.replies.v1", "k", CreateCart(cart_id="cart_2", customer_id="cus_1"))
    (handled,) = spans.get_finished_spans()
    assert handled.name == "cart.commands.v1 process CreateCart"
    assert f"{handled.context.trace_id:032x}" == PARENT.split("-")[1]  # the sender's trace
    assert f"{handled.parent.span_id:016x}" == PARENT.split("-")[2]  # a child of the sender's span
    assert sent.traceparent == f"00-{handled.context.trace_id:032x}-{handled.context.span_id:016x}-01"
    assert outbox.pending[0].traceparent == sent.traceparent  # and the Kafka header gets it too
    assert tracing.headers_for(sent.traceparent) == {"traceparent": sent.traceparent}


def test_a_message_without_a_traceparent_starts_a_trace(spans):
    with tracing.consuming("cart.commands.v1", "CreateCart", "msg_1", None):
        pass
    (root,) = spans.get_finished_spans()
    assert root.parent is None


def test_the_relay_reads_a_stored_rows_traceparent():
    assert tracing.traceparent_in(_incoming().to_bytes()) == PARENT
    assert tracing.traceparent_in(_incoming(None).to_bytes()) is None


def test_a_log_record_inside_a_span_names_its_trace_and_span(spans):
    with tracing.consuming("cart.commands.v1", "CreateCart", "msg_1", PARENT) as span:
        fields = tracing._log_fields()
    assert fields == {"trace_id": PARENT.split("-")[1], "span_id": f"{span.get_span_context().span_id:016x}"}
    assert tracing._log_fields() == {}  # outside any span: nothing
