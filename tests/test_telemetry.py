"""OpenTelemetry: spans per saga and attempt, counters, the step histogram, gauges, and one trace
across a choreography; a no-op without the API. Checked with the SDK's in-memory exporter and
metric reader."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="pip install opentelemetry-sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from statesaga import Event, InMemoryBus, InMemoryStore, Orchestrator, telemetry
from statesaga.choreography import Choreography
from statesaga.examples.trip import build_trip, trip_services
from statesaga.examples.trip_choreography import (
    build_participants,
    build_trip_choreography,
)
from statesaga.testing import FakeClock


@pytest.fixture
def otel() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    """The SDK with an in-memory exporter and reader, for statesaga alone (the process's
    global providers are left as they are)."""
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    before = telemetry.use_providers(tracer_provider, MeterProvider(metric_readers=[reader]))
    try:
        yield exporter, reader
    finally:
        telemetry.restore(before)


def points(reader: InMemoryMetricReader, name: str) -> dict[tuple[Any, ...], Any]:
    """The metric's data points by their attributes (sorted items), from a fresh collection."""
    found: dict[tuple[Any, ...], Any] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    for p in metric.data.data_points:
                        found[tuple(sorted(p.attributes.items()))] = p
    return found


async def test_a_saga_is_a_span_with_a_child_per_attempt(otel: Any) -> None:
    exporter, _ = otel
    services = trip_services()
    services.fail_at("book_hotel")
    orch = Orchestrator(clock=FakeClock())
    await orch.run(build_trip(services), {"flight": "LH1"}, saga_id="t-1")
    spans = exporter.get_finished_spans()
    saga = next(s for s in spans if s.name == "saga trip")
    children = [(s.name, s.attributes["statesaga.attempt"], s.attributes["statesaga.outcome"])
                for s in spans if s.parent is not None and s.parent.span_id ==
                saga.context.span_id]
    assert [("step book_flight", 1, "ok"), ("step book_hotel", 1, "error"),
            ("compensate book_flight", 1, "ok")] == children
    assert ("t-1", "book_hotel") == tuple(
        next(s for s in spans if s.name == "step book_hotel").attributes[k]
        for k in ("statesaga.saga_id", "statesaga.step"))
    assert {s.context.trace_id for s in spans} == {saga.context.trace_id}


async def test_counters_and_the_step_histogram_by_saga_name(otel: Any) -> None:
    _, reader = otel
    before = {k: (points(reader, f"statesaga.sagas.{k}").get(
        (("statesaga.saga", "trip"),)) or type("P", (), {"value": 0})()).value
        for k in ("started", "completed", "compensated", "stuck")}
    services = trip_services()
    machine = build_trip(services)
    orch = Orchestrator(clock=FakeClock())
    await orch.run(machine, {}, saga_id="ok")
    services.fail_at("charge_payment")
    await orch.run(machine, {}, saga_id="undone")
    services.fail_compensation("book_hotel")
    await orch.run(machine, {}, saga_id="stuck")
    after = {k: points(reader, f"statesaga.sagas.{k}")[(("statesaga.saga", "trip"),)].value
             for k in before}
    assert {"started": 3, "completed": 1, "compensated": 1, "stuck": 1} == {
        k: after[k] - before[k] for k in after}
    durations = points(reader, "statesaga.step.duration")
    key = (("statesaga.kind", "compensate"), ("statesaga.outcome", "error"),
           ("statesaga.saga", "trip"), ("statesaga.step", "book_hotel"))
    assert durations[key].count >= 5


async def test_a_choreography_is_one_trace(otel: Any) -> None:
    exporter, _ = otel
    store, bus = InMemoryStore(), InMemoryBus()
    machine = build_trip_choreography()
    choreography = Choreography(Orchestrator(store=store, sagas=[machine]), bus)
    for participant in build_participants(store):
        await participant.listen(bus)
    stop = asyncio.Event()
    serving = asyncio.create_task(choreography.serve([machine], stop, poll=0.01))
    await choreography.start(machine, {"fail_at": "payment"}, saga_id="c-1")
    # the saga ends in another task; then the relay sends the last command (CancelFlight)
    while (not (await store.load("c-1")).is_terminal  # noqa: ASYNC110
           or (await store.outbox_stats()).unsent):
        await asyncio.sleep(0.01)
    await bus.drain()
    stop.set()
    await serving
    await bus.close()
    spans = [s for s in exporter.get_finished_spans()
             if s.attributes.get("statesaga.saga_id") == "c-1"]
    names = {s.name for s in spans}
    assert {"saga trip_choreography", "handle BookFlight", "event FlightBooked",
            "handle ChargePayment", "event PaymentFailed", "handle CancelFlight"} <= names
    assert 1 == len({s.context.trace_id for s in spans})


def test_event_headers_survive_json_the_outbox_and_old_messages() -> None:
    event = Event("Paid", {"n": 1}, correlation_id="s", headers={"traceparent": "00-ab-cd-01"})
    assert event == Event.from_json(event.to_json())
    old = '{"type": "Paid", "payload": {}, "message_id": "m1"}'
    assert {} == dict(Event.from_json(old).headers)
    with pytest.raises(ValueError, match="headers that are not text"):
        Event.from_json('{"type": "Paid", "headers": {"a": 1}}')


async def test_an_event_made_inside_a_span_carries_its_trace(otel: Any) -> None:
    with telemetry.saga_span("outer", "e-1") as outer:
        span = outer.span
        event = Event("Paid")
    assert f"{span.get_span_context().trace_id:032x}" in event.headers["traceparent"]
    store = InMemoryStore()
    await store.participant_apply("p", "k", "m1", {}, [event])
    (_, text), = await store.claim_messages("test", now=None, lease=60, limit=10)
    assert event.headers == Event.from_json(text).headers
    bus, got = InMemoryBus(), []
    await bus.subscribe("Paid", got.append)
    await bus.publish(event)
    await bus.drain()
    await bus.close()
    assert [event.headers] == [dict(e.headers) for e in got]


def test_gauges_show_parked_sagas_and_what_the_console_read(otel: Any) -> None:
    _, reader = otel
    orch = Orchestrator()
    orch._parked["w"] = object()  # type: ignore[assignment]
    telemetry.observe_store(counts={"failed": 2}, outbox_unsent=3, outbox_lag=4.5)
    assert 1 <= points(reader, "statesaga.sagas.parked")[()].value
    assert 3 == points(reader, "statesaga.outbox.unsent")[()].value
    assert 4.5 == points(reader, "statesaga.outbox.lag")[()].value
    assert 2 == points(reader, "statesaga.sagas")[(("statesaga.status", "failed"),)].value


def test_without_opentelemetry_everything_is_a_no_op() -> None:
    code = """
import sys, asyncio
sys.modules['opentelemetry'] = None  # as if not installed
from statesaga import Event, Orchestrator, telemetry
from statesaga.examples.trip import build_trip, trip_services
record = asyncio.run(Orchestrator().run(build_trip(trip_services()), {}))
assert telemetry.saga_span('x', 'y') is telemetry.NULL
assert telemetry.attempt_span(False, 'x', 'y', 's', 1) is telemetry.NULL
print(record.status.value, dict(Event('E').headers), telemetry._api())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]  # after the logs
    assert "completed {} None" == out


async def test_rabbitmq_carries_the_trace_headers(rabbitmq_url: str) -> None:
    import uuid

    from statesaga import RabbitMQBus

    prefix = f"test-otel-{uuid.uuid4().hex[:10]}"
    bus, got = RabbitMQBus(rabbitmq_url, exchange=prefix, prefix=prefix), asyncio.Queue()
    try:
        await bus.subscribe("Paid", got.put_nowait)
        headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
        await bus.publish(Event("Paid", correlation_id="s", headers=headers))
        received = await asyncio.wait_for(got.get(), 30)
    finally:
        await bus.delete_everything()
    assert headers == dict(received.headers)


def test_spans_start_once_an_application_sets_its_provider_after_sagas_ran() -> None:
    code = """
import asyncio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from statesaga import Orchestrator, telemetry
from statesaga.examples.trip import build_trip, trip_services
orch = Orchestrator()
asyncio.run(orch.run(build_trip(trip_services()), {}))  # nothing set: no-ops, skipped
assert telemetry.attempt_span(False, 'x', 'y', 's', 1) is telemetry.NULL
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
asyncio.run(orch.run(build_trip(trip_services()), {}))
print(sorted({s.name.split()[0] for s in exporter.get_finished_spans()}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    assert "['saga', 'step']" == out
