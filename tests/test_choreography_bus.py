"""Choreographed trips over real buses (in memory and RabbitMQ), with a SQLite saga store."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from statesaga import InMemoryBus, Orchestrator, SagaStatus, SQLiteStore
from statesaga.choreography import Choreography, waits_for
from statesaga.examples.trip_choreography import build_participants, build_trip_choreography

WAIT = 120.0  # a guard against hangs, never a measure


class World:
    """A store, a bus, the trip choreography and its participants, served until closed."""

    def __init__(self, bus: Any, path: Path) -> None:
        self.path = path
        self.store = SQLiteStore(path, durability="normal")
        self.bus = bus
        self.machine = build_trip_choreography()
        self.orch = Orchestrator(store=self.store, sagas=[self.machine])
        self.choreography = Choreography(self.orch, bus)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        for participant in build_participants(self.store):
            await participant.listen(self.bus)
        self.task = asyncio.create_task(self.choreography.serve([self.machine], self.stop,
                                                                poll=0.02))
        await asyncio.sleep(0.05)  # subscriptions (queues) exist before the first command
        wanted = {f".sagas.{t}" for t in waits_for(self.machine)}
        for _ in range(400):  # a broker's: until each is declared (a loaded machine is slow)
            declared = {q[q.index(".sagas."):] for q in getattr(self.bus, "queues", wanted)
                        if ".sagas." in q}
            if wanted <= declared:
                break
            await asyncio.sleep(0.025)

    async def finished(self, saga_ids: list[str]) -> dict[str, str]:
        async def wait() -> dict[str, str]:
            while True:
                states = {i: (await self.store.load(i)).state for i in saga_ids}
                if all(s in ("completed", "compensated", "failed") for s in states.values()):
                    return states
                await asyncio.sleep(0.05)
        states = await asyncio.wait_for(wait(), WAIT)
        await asyncio.wait_for(self.quiet(), WAIT)
        return states

    async def quiet(self) -> None:
        """Until every message left the outbox and every consumer handled what it got."""
        while True:
            while self.unsent():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            await self.bus.drain()
            if not self.unsent():
                return

    def unsent(self) -> int:
        """Messages in the outbox not sent yet (read outside the store)."""
        with sqlite3.connect(self.path) as db:
            count: int = db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL"
                                    ).fetchone()[0]
        return count

    def commands(self, saga_id: str) -> list[str]:
        """The commands the saga issued, in the order they were written to the outbox."""
        with sqlite3.connect(self.path) as db:
            rows = db.execute("SELECT message FROM outbox WHERE saga_id = ? ORDER BY id",
                              (saga_id,)).fetchall()
        types = [json.loads(m)["type"] for (m,) in rows]
        return [t for t in types if t.startswith(("Book", "Charge", "Cancel", "Refund"))]

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, WAIT)
        await self.store.close()


@pytest.fixture(params=["memory", "rabbitmq"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    if request.param == "memory":
        bus: Any = InMemoryBus()
    else:
        from statesaga import RabbitMQBus

        url = request.getfixturevalue("rabbitmq_url")
        prefix = f"test-{uuid.uuid4().hex[:12]}"
        bus = RabbitMQBus(url, exchange=prefix, prefix=prefix)
    w = World(bus, tmp_path / "sagas.db")
    await w.open()
    try:
        yield w
    finally:
        await w.close()
        if request.param == "rabbitmq":
            await bus.delete_everything(bus.queues)
        else:
            await bus.close()


EXPECTED = {
    None: ["BookFlight", "BookHotel", "ChargePayment"],
    "flight": ["BookFlight"],
    "hotel": ["BookFlight", "BookHotel", "CancelFlight"],
    "payment": ["BookFlight", "BookHotel", "ChargePayment", "CancelHotel", "CancelFlight"],
}


async def test_a_choreographed_trip_completes_over_the_bus(world: World) -> None:
    await world.choreography.start(world.machine, {"flight": "LH1"}, saga_id="ok")
    assert {"ok": "completed"} == await world.finished(["ok"])
    assert EXPECTED[None] == world.commands("ok")


async def test_a_failure_reply_compensates_over_the_bus_newest_first(world: World) -> None:
    await world.choreography.start(world.machine, {"fail_at": "payment"}, saga_id="bad")
    assert {"bad": "compensated"} == await world.finished(["bad"])
    assert EXPECTED["payment"] == world.commands("bad")
    record = await world.store.load("bad")
    assert [("booking_flight", "start"), ("booking_hotel", "FlightBooked"),
            ("charging_payment", "HotelBooked"), ("compensating_booking_hotel", "PaymentFailed"),
            ("compensating_booking_hotel", "sent"), ("compensating_booking_flight",
                                                     "HotelCancelled"),
            ("compensating_booking_flight", "sent"), ("compensated", "FlightCancelled")] == [
        (t.dest, t.event) for t in record.history]  # each undo confirmed before the next
    assert "PaymentFailed: payment refused (scripted)" == record.error


async def test_200_trips_at_once_with_random_failures_end_terminal_and_compensate_exactly(
        world: World) -> None:
    rng = random.Random(7)
    plans = {f"trip-{i}": rng.choice([None, None, "flight", "hotel", "payment"])
             for i in range(200)}
    await asyncio.gather(*(world.choreography.start(
        world.machine, {} if fail is None else {"fail_at": fail}, saga_id=saga_id)
        for saga_id, fail in plans.items()))
    states = await world.finished(list(plans))
    expected_states = {i: "completed" if f is None else "compensated" for i, f in plans.items()}
    assert expected_states == states
    wrong = {i: world.commands(i) for i, f in plans.items() if world.commands(i) != EXPECTED[f]}
    assert {} == wrong
    for saga_id in plans:
        for participant in ("flights", "hotels", "payments"):
            state = await world.store.participant_state(participant, saga_id) or {}
            if plans[saga_id] is not None:
                assert "booked" not in state  # everything that happened was undone
    assert 200 == len(await world.store.list(limit=500))
    assert all(r.status in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)
               for r in await world.store.list(limit=500))


async def test_an_event_for_no_saga_is_dead_lettered_at_once_and_the_consumer_goes_on(
        world: World) -> None:
    from statesaga import Event

    ghost = Event("FlightBooked", correlation_id="ghost")
    orphan = Event("HotelBooked")  # no correlation id at all
    await world.bus.publish(ghost)
    await world.bus.publish(orphan)
    await world.choreography.start(world.machine, {}, saga_id="after")
    assert {"after": "completed"} == await world.finished(["after"])
    dead: dict[str, str] = {}
    for _ in range(100):  # the broker dead-letters each on its own time: collect both
        letters = (world.bus.dead_letters if isinstance(world.bus, InMemoryBus)
                   else await world.bus.take_dead_letters())
        dead |= {event.message_id: error for event, error in letters}
        if len(dead) >= 2:
            break
        await asyncio.sleep(0.05)
    assert {ghost.message_id, orphan.message_id} == set(dead)
    assert "UndeliverableEvent" in dead[ghost.message_id]
    assert "'ghost', which does not exist" in dead[ghost.message_id]
    assert "has no correlation_id" in dead[orphan.message_id]
