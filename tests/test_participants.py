"""Participants with a store of their own: `serve` relays their replies; replies nobody
relays are reported, since the sagas waiting for them would wait forever."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from statesaga import Event, InMemoryBus, InMemoryStore, Orchestrator, SagaStatus
from statesaga.choreography import Choreography
from statesaga.examples.trip_choreography import build_participants, build_trip_choreography
from statesaga.participants import Participant


async def test_serve_handles_commands_and_relays_replies_from_the_participants_own_store(
        ) -> None:
    bus, stop = InMemoryBus(), asyncio.Event()
    machine = build_trip_choreography()
    saga_side = Choreography(Orchestrator(store=InMemoryStore(), sagas=[machine]), bus)
    services = build_participants(InMemoryStore())  # one store of their own, shared
    for p in services[1:]:
        await p.listen(bus)
    running = [asyncio.ensure_future(services[0].serve(bus, stop, poll=0.01)),
               asyncio.ensure_future(saga_side.serve([machine], stop, poll=0.01))]
    await asyncio.sleep(0)
    await saga_side.start(machine, {"flight": "LH1"}, saga_id="t1")
    for _ in range(500):  # a guard against a hang, not a timing
        if (await saga_side.orchestrator.get("t1")).is_terminal:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.gather(*running)
    assert SagaStatus.COMPLETED is (await saga_side.orchestrator.get("t1")).status


async def test_replies_that_nobody_relays_are_reported_with_what_to_run() -> None:
    p = Participant("hotels", InMemoryStore(), warn_unsent=0.05)
    p.on("BookHotel", emits=("HotelBooked",))(lambda event, state: Event("HotelBooked"))
    with capture_logs() as logs:
        assert await p.handle(Event("BookHotel", correlation_id="t1"))
        await asyncio.sleep(0.2)
    (warning,) = [e for e in logs if e["event"] == "participant.replies_unsent"]
    assert ("warning", "hotels", 1) == (warning["log_level"], warning["participant"],
                                        warning["unsent"])
    assert "participant.serve(bus, stop)" in warning["fix"]


async def test_replies_a_relay_sends_in_time_raise_no_warning() -> None:
    store, bus = InMemoryStore(), InMemoryBus()
    p = Participant("hotels", store, warn_unsent=0.1)
    p.on("BookHotel", emits=("HotelBooked",))(lambda event, state: Event("HotelBooked"))
    with capture_logs() as logs:
        await p.handle(Event("BookHotel", correlation_id="t1"))
        assert 1 == await Choreography(Orchestrator(store=store), bus).relay()
        await asyncio.sleep(0.3)
    assert [] == [e for e in logs if e["event"] == "participant.replies_unsent"]
