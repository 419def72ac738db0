"""Choreography: sagas moved by events, messages by outbox, duplicates dropped by inbox."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from statesaga import (
    InMemoryBus,
    InMemoryStore,
    Orchestrator,
    SagaDefinitionError,
    SagaStateMachine,
    SQLiteStore,
)
from statesaga.choreography import Choreography, command, deliver, waits_for
from statesaga.contract import check_contract
from statesaga.events import Event
from statesaga.examples.trip_choreography import build_participants, build_trip_choreography
from statesaga.exceptions import UndeliverableEvent
from statesaga.participants import Participant
from statesaga.testing import FakeClock


class Harness:
    """A saga store, its orchestrator and participants, with the outbox pumped by hand."""

    def __init__(self, store: Any = None, clock: FakeClock | None = None) -> None:
        self.store = store if store is not None else InMemoryStore()
        self.machine = build_trip_choreography()
        self.orch = Orchestrator(store=self.store, sagas=[self.machine],
                                 clock=clock or FakeClock())
        self.participants = build_participants(self.store)
        self.sent: list[Event] = []

    async def pump(self, *, redeliver: bool = False) -> None:
        """Deliver every outbox message to whoever handles it, until none is left."""
        waited = waits_for(self.machine)
        while pending := await self.store.claim_messages("pump", now=None, lease=60,
                                                         limit=100):
            await self.store.mark_sent([i for i, _ in pending])
            for _, text in pending:
                event = Event.from_json(text)
                self.sent.append(event)
                for _ in range(2 if redeliver else 1):
                    for p in self.participants:
                        if event.type in p.handlers:
                            await p.handle(event)
                    if event.type in waited:
                        await deliver(self.orch, event)

    def commands(self, saga_id: str) -> list[str]:
        return [e.type for e in self.sent if e.correlation_id == saga_id
                and e.type.startswith(("Book", "Charge", "Cancel", "Refund"))]

    async def bookings(self, saga_id: str) -> dict[str, Any]:
        return {p.name: await self.store.participant_state(p.name, saga_id)
                for p in self.participants}


async def test_a_choreographed_trip_completes_through_its_events() -> None:
    h = Harness()
    record = await h.orch.run(h.machine, {"flight": "LH1"}, saga_id="c1")
    assert "booking_flight" == record.state  # it waits for FlightBooked
    await h.pump()
    record = await h.orch.get("c1")
    assert "completed" == record.state
    assert ["BookFlight", "BookHotel", "ChargePayment"] == h.commands("c1")
    assert ["booking_flight", "booking_hotel", "charging_payment", "completed"] == [
        t.dest for t in record.history]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_the_relay_sends_a_command_written_in_its_process_without_waiting_for_its_poll(
        kind: str, tmp_path: Path) -> None:
    store = InMemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "s.db")
    orch = Orchestrator(store=store, sagas=[build_trip_choreography()])
    bus = InMemoryBus()
    got: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
    await bus.subscribe("BookFlight", got.set_result)
    stop = asyncio.Event()
    relay = asyncio.create_task(Choreography(orch, bus).relay(poll=3600, stop=stop))
    for _ in range(3):  # the relay finds the outbox empty and waits (up to an hour)
        await asyncio.sleep(0)

    await orch.run(build_trip_choreography(), {"flight": "LH1"}, saga_id="t1")
    command = await asyncio.wait_for(got, 30)  # a guard against a hang, not a timing

    stop.set()
    assert ("BookFlight", "t1") == (command.type, command.correlation_id)
    assert 1 == await relay


@pytest.mark.parametrize(("fail_at", "undo"), [
    ("flight", []), ("hotel", ["CancelFlight"]),
    ("payment", ["CancelHotel", "CancelFlight"])])
async def test_a_failure_reply_compensates_exactly_what_happened_newest_first(
        fail_at: str, undo: list[str]) -> None:
    h = Harness()
    await h.orch.run(h.machine, {"fail_at": fail_at}, saga_id="c2")
    await h.pump()
    record = await h.orch.get("c2")
    assert "compensated" == record.state
    done = {"flight": ["BookFlight"], "hotel": ["BookFlight", "BookHotel"],
            "payment": ["BookFlight", "BookHotel", "ChargePayment"]}[fail_at]
    assert done + undo == h.commands("c2")
    assert all(not state or "booked" not in state for state in (await h.bookings("c2")).values())


async def test_a_redelivered_event_or_command_is_applied_once() -> None:
    h = Harness()
    await h.orch.run(h.machine, {}, saga_id="c3")
    await h.pump(redeliver=True)
    record = await h.orch.get("c3")
    assert "completed" == record.state
    assert 4 == len(record.history)  # each reply moved the saga once
    assert ["BookFlight", "BookHotel", "ChargePayment"] == h.commands("c3")


async def test_an_event_with_no_transition_is_recorded_as_ignored() -> None:
    h = Harness()
    await h.orch.run(h.machine, {}, saga_id="c4")
    await deliver(h.orch, Event("PaymentCharged", correlation_id="c4"))
    record = await h.orch.get("c4")
    assert "booking_flight" == record.state
    last = record.history[-1]
    assert ("booking_flight", "booking_flight", "PaymentCharged") == (
        last.source, last.dest, last.event)
    assert "ignored: no transition on 'PaymentCharged' from booking_flight" == last.reason


async def test_an_event_for_a_finished_saga_is_recorded_as_ignored() -> None:
    h = Harness()
    await h.orch.run(h.machine, {}, saga_id="c5")
    await h.pump()
    await deliver(h.orch, Event("FlightBooked", correlation_id="c5"))
    record = await h.orch.get("c5")
    assert ("completed", "FlightBooked") == (record.state, record.history[-1].event)


async def test_events_that_cannot_reach_a_saga_are_undeliverable() -> None:
    h = Harness()
    with pytest.raises(UndeliverableEvent, match="has no correlation_id"):
        await deliver(h.orch, Event("FlightBooked"))
    with pytest.raises(UndeliverableEvent, match="'ghost', which does not exist"):
        await deliver(h.orch, Event("FlightBooked", correlation_id="ghost"))


async def test_a_state_timeout_fires_and_compensates_that_state_too() -> None:
    clock = FakeClock()
    h = Harness(clock=clock)
    await h.orch.run(h.machine, {}, saga_id="c6")
    # the flight participant never answers; a worker wakes the saga when its timer is due
    assert [] == await h.store.claim("w", now=clock.time(), lease=5, limit=5)
    clock.advance(31)
    report = await Orchestrator(store=h.store, sagas=[h.machine], clock=clock).recover()
    record = report.recovered[0]
    assert "compensating_booking_flight" == record.state  # CancelFlight sent: it waits
    assert ["timeout", "sent"] == [t.event for t in record.history[1:]]
    assert "within its timeout of 30.0s" in (record.history[1].error or "")
    await h.pump()
    assert ["BookFlight", "CancelFlight"] == h.commands("c6")
    record = await h.store.load("c6")
    assert ("compensated", "FlightCancelled") == (record.state, record.history[-1].event)


def test_the_contract_lists_what_each_state_waits_for_and_emits() -> None:
    store = InMemoryStore()
    contract = check_contract(build_trip_choreography(), build_participants(store))
    first = contract.states[0]
    assert ("booking_flight", ("FlightBooked", "FlightFailed"), ("BookFlight",),
            ("CancelFlight",)) == (first.state, first.waits_for, first.emits, first.undo_emits)
    assert "booking_hotel: emits BookHotel" in str(contract)


def test_the_contract_check_finds_every_gap() -> None:
    m = SagaStateMachine("gappy")
    m.add_state("asking", on_enter=command("Ask"))
    m.add_transition("asking", "completed", "Answered")
    p = Participant("nobody", InMemoryStore())
    p.on("Other", emits=("Something",))(lambda e, s: None)
    with pytest.raises(SagaDefinitionError) as err:
        check_contract(m, [p])
    text = str(err.value)
    assert "waits for 'Answered', which no participant emits" in text
    assert "emits 'Ask', which no participant handles" in text
    assert "no route to 'compensated' on failure" in text


async def test_an_event_for_a_parked_saga_costs_only_its_commit() -> None:
    h = Harness()
    await h.orch.run(h.machine, {}, saga_id="p1")
    claims: list[str] = []
    real_claim = h.store.claim

    async def claim(*args: Any, **kw: Any) -> Any:
        claims.append(kw.get("saga_id"))
        return await real_claim(*args, **kw)

    h.store.claim = claim  # type: ignore[method-assign]
    record = await deliver(h.orch, Event("FlightBooked", correlation_id="p1"))
    assert record is not None
    assert ("booking_hotel", []) == (record.state, claims)


async def test_a_stale_parked_saga_is_loaded_afresh() -> None:
    h = Harness()
    await h.orch.run(h.machine, {}, saga_id="p2")  # parked here, waiting for FlightBooked
    other = Orchestrator(store=h.store, sagas=[h.machine], clock=FakeClock())
    await deliver(other, Event("FlightBooked", correlation_id="p2"))  # moved elsewhere
    record = await deliver(h.orch, Event("HotelBooked", correlation_id="p2"))
    assert record is not None
    assert "charging_payment" == record.state
    assert ["booking_flight", "booking_hotel", "charging_payment"] == [
        t.dest for t in record.history]


async def test_a_refused_compensating_command_leaves_the_saga_stuck_naming_the_command() -> None:
    h = Harness()
    await h.orch.run(h.machine, {"fail_at": "payment", "fail_undo": "flight"}, saga_id="c9")
    await h.pump()
    record = await h.orch.get("c9")
    assert ("failed", "FlightCancelFailed") == (record.state, record.history[-1].event)
    assert record.is_stuck
    assert ("saga 'c9' is stuck in compensating_booking_flight: its compensating command was "
            "refused (FlightCancelFailed: flight cannot undo (scripted)); fix the participant "
            "that handles it, then run `statesaga retry c9`") in (record.error or "")
    booked = {name: (state or {}).get("booked", False)
              for name, state in (await h.bookings("c9")).items()}
    assert {"flights": True, "hotels": False, "payments": False} == booked


async def test_a_compensating_command_nobody_confirms_leaves_the_saga_stuck_at_its_timeout(
        ) -> None:
    clock = FakeClock()
    h = Harness(clock=clock)
    h.participants = [p for p in h.participants if p.name != "flights"]  # it never answers
    await h.orch.run(h.machine, {}, saga_id="c10")
    clock.advance(31)  # BookFlight went unanswered: compensate it, send CancelFlight
    await Orchestrator(store=h.store, sagas=[h.machine], clock=clock).recover()
    await h.pump()
    assert "compensating_booking_flight" == (await h.orch.get("c10")).state  # still waiting
    clock.advance(31)  # CancelFlight went unanswered too (dead-lettered, say)
    report = await Orchestrator(store=h.store, sagas=[h.machine], clock=clock).recover()
    record = report.recovered[0]
    assert ("failed", "timeout") == (record.state, record.history[-1].event)
    assert "no reply confirmed its compensating command within 30.0s" in (record.error or "")


async def test_retrying_a_stuck_choreography_sends_the_compensating_command_again() -> None:
    h = Harness()
    await h.orch.run(h.machine, {"fail_at": "hotel", "fail_undo": "flight"}, saga_id="c11")
    await h.pump()
    assert "failed" == (await h.orch.get("c11")).state
    flights = next(p for p in h.participants if p.name == "flights")
    flights.handlers["CancelFlight"] = (lambda event, state: (
        state.pop("booked", None), Event("FlightCancelled"))[1], ("FlightCancelled",))
    await h.orch.retry("c11", reason="flight service fixed")
    await h.pump()
    record = await h.orch.get("c11")
    assert "compensated" == record.state
    assert ["BookFlight", "BookHotel", "CancelFlight", "CancelFlight"] == h.commands("c11")


async def test_a_command_carries_typed_saga_data_as_json() -> None:
    import attrs as _attrs

    @_attrs.frozen
    class Trip:
        flight: str
        nights: int

    m = SagaStateMachine("typed_trip", data=Trip)
    m.add_state("booking", on_enter=command("BookFlight"))
    m.add_transition("booking", "completed", "FlightBooked")
    store = InMemoryStore()
    await Orchestrator(store=store).run(m, Trip("LH1", 2), saga_id="t1")
    ((_, text),) = await store.claim_messages("test", now=None, lease=60, limit=10)
    assert {"flight": "LH1", "nights": 2} == Event.from_json(text).payload


async def replies(store: InMemoryStore) -> list[str]:
    return [Event.from_json(text).type
            for _, text in await store.claim_messages("test", now=None, lease=60, limit=100)]


async def test_the_example_participants_drop_a_command_with_a_lower_fence_than_seen() -> None:
    store = InMemoryStore()
    flights = build_participants(store)[0]
    await flights.handle(Event("BookFlight", {"fence": 3}, correlation_id="t1"))
    await flights.handle(Event("BookFlight", {"fence": 2}, correlation_id="t1"))  # stalled
    assert ["FlightBooked"] == await replies(store)  # no reply to the stale one
    assert 3 == (await store.participant_state("flights", "t1") or {})["fence"]


async def test_the_example_participants_drop_a_booking_that_comes_after_its_cancel() -> None:
    store = InMemoryStore()
    flights = build_participants(store)[0]
    await flights.handle(Event("CancelFlight", {"fence": 2}, correlation_id="t1"))
    await flights.handle(Event("BookFlight", {"fence": 2}, correlation_id="t1"))  # late
    assert ["FlightCancelled"] == await replies(store)
    assert {"fence": 2, "undone": True} == await store.participant_state("flights", "t1")


async def test_the_choreographys_commands_carry_the_sagas_fence() -> None:
    h = Harness()
    await h.orch.run(h.machine, {"flight": "LH1"}, saga_id="f1")
    await h.pump()
    fences = [e.payload["fence"] for e in h.sent if e.type.startswith(("Book", "Charge"))]
    assert 3 == len(fences)
    assert sorted(fences) == fences
    assert 1 <= fences[0]
