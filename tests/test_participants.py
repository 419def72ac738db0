"""Participants: a participant whose replies nobody relays says so, once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from statesaga import Event, InMemoryBus, InMemoryStore, Orchestrator, SQLiteStore
from statesaga.choreography import Choreography
from statesaga.participants import Participant


def greeter(store: Any, unsent_warning: float | None = 0.05) -> Participant:
    p = Participant("greeter", store, unsent_warning=unsent_warning)

    @p.on("Greet", emits=("Greeted",))
    def greet(command: Event, state: dict[str, Any]) -> Event:
        return Event("Greeted", {"to": command.payload["name"]})

    return p


def greet(saga_id: str) -> Event:
    return Event("Greet", {"name": "ada"}, correlation_id=saga_id)


def unsent_warnings(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "participant.replies_unsent"]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_participant_whose_replies_nobody_relays_warns_once_what_to_run(
        kind: str, tmp_path: Path) -> None:
    store = InMemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "p.db")
    p = greeter(store)
    with capture_logs() as logs:
        await p.handle(greet("g-1"))
        await asyncio.sleep(0.2)
        await p.handle(greet("g-2"))
        await asyncio.sleep(0.2)
    (warning,) = unsent_warnings(logs)
    assert ("warning", "greeter") == (warning["log_level"], warning["participant"])
    assert 1 <= warning["unsent"]
    assert "run a relay on that store" in warning["fix"]
    await store.close()


async def test_a_participant_whose_replies_are_relayed_does_not_warn() -> None:
    store, bus, stop = InMemoryStore(), InMemoryBus(), asyncio.Event()
    relaying = asyncio.ensure_future(
        Choreography(Orchestrator(store=store), bus).relay(poll=0.01, stop=stop))
    with capture_logs() as logs:
        await greeter(store).handle(greet("g-1"))
        await asyncio.sleep(0.2)
    stop.set()
    await relaying
    assert [] == unsent_warnings(logs)


async def test_the_warning_can_be_turned_off() -> None:
    with capture_logs() as logs:
        await greeter(InMemoryStore(), unsent_warning=None).handle(greet("g-1"))
        await asyncio.sleep(0.1)
    assert [] == unsent_warnings(logs)


async def test_serve_handles_commands_and_relays_replies_from_the_participants_own_store(
        ) -> None:
    from statesaga import SagaStatus
    from statesaga.examples.trip_choreography import (
        build_participants,
        build_trip_choreography,
    )

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
