"""Recovery and workers: a saga whose process died is finished by another, never run twice."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from statesaga import InMemoryStore, Orchestrator, SagaStateMachine, SagaStatus, StepContext
from statesaga.testing import FakeClock


class World:
    """Steps whose effects are kept by idempotency key; one step can be made to hang."""

    def __init__(self) -> None:
        self.effects: dict[str, int] = {}
        self.calls: list[str] = []
        self.hang: str | None = None
        self.fail: set[str] = set()
        self.started = asyncio.Event()

    def machine(self, name: str = "crashy") -> SagaStateMachine:
        m = SagaStateMachine(name)
        for step in ("a", "b", "c"):
            m.step(step, self._act(step), compensation=self._undo(step))
        return m

    def _act(self, step: str) -> Any:
        async def act(ctx: StepContext) -> int:
            self.calls.append(f"{step}#{ctx.attempt}")
            self.effects.setdefault(ctx.idempotency_key, ctx.attempt)  # once per key
            if self.hang == step:
                self.started.set()
                await asyncio.Event().wait()
            if step in self.fail:
                raise RuntimeError(f"{step} refused")
            return ctx.attempt
        act.__qualname__ = f"World.{step}"
        return act

    def _undo(self, step: str) -> Any:
        async def undo(ctx: StepContext) -> None:
            self.calls.append(f"undo {step}")
            if self.hang == f"undo {step}":
                self.started.set()
                await asyncio.Event().wait()
            self.effects.pop(ctx.idempotency_key, None)
        undo.__qualname__ = f"World.undo_{step}"
        return undo


async def crash_during(world: World, orch: Orchestrator, m: SagaStateMachine, saga_id: str
                       ) -> None:
    """Run the saga until the hanging step starts, then kill the run (no abort, no commit)."""
    task = asyncio.create_task(orch.run(m, saga_id=saga_id))
    await world.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    world.hang = None


async def test_a_saga_caught_inside_a_step_is_recovered_forward_with_the_same_key() -> None:
    store, clock, world = InMemoryStore(), FakeClock(), World()
    world.hang = "b"
    m = world.machine()
    await crash_during(world, Orchestrator(store=store, clock=clock), m, "s1")
    assert "b" == (await store.load("s1")).state

    clock.advance(16)  # the dead process's lease expires
    report = await Orchestrator(store=store, clock=clock, sagas=[m]).recover()
    record = report.recovered[0]
    assert SagaStatus.COMPLETED is record.status
    assert ["a#1", "b#1", "b#2", "c#1"] == world.calls
    assert {"s1:a": 1, "s1:b": 1, "s1:c": 1} == world.effects  # b's effect exists once
    retry = [t for t in record.history if t.event == "retry_unknown"]
    assert [("b", 1)] == [(t.step, t.attempt) for t in retry]
    assert "outcome unknown" in (retry[0].error or "")


async def test_a_recovered_step_that_then_fails_is_compensated_too() -> None:
    store, clock, world = InMemoryStore(), FakeClock(), World()
    world.hang = "b"
    m = world.machine()
    await crash_during(world, Orchestrator(store=store, clock=clock), m, "s2")
    world.fail.add("b")
    clock.advance(16)
    report = await Orchestrator(store=store, clock=clock, sagas=[m]).recover()
    assert SagaStatus.COMPENSATED is report.recovered[0].status
    assert ["a#1", "b#1", "b#2", "undo b", "undo a"] == world.calls
    assert {} == world.effects


async def test_a_saga_caught_inside_a_compensation_reruns_it() -> None:
    store, clock, world = InMemoryStore(), FakeClock(), World()
    world.fail.add("c")
    world.hang = "undo b"
    m = world.machine()
    await crash_during(world, Orchestrator(store=store, clock=clock), m, "s3")
    clock.advance(16)
    report = await Orchestrator(store=store, clock=clock, sagas=[m]).recover()
    assert SagaStatus.COMPENSATED is report.recovered[0].status
    assert ["a#1", "b#1", "c#1", "undo b", "undo b", "undo a"] == world.calls


async def test_a_live_lease_is_not_taken_over() -> None:
    store, clock, world = InMemoryStore(), FakeClock(), World()
    world.hang = "b"
    m = world.machine()
    await crash_during(world, Orchestrator(store=store, clock=clock), m, "s4")
    report = await Orchestrator(store=store, clock=clock, sagas=[m]).recover()
    assert () == report.recovered
    assert "b" == (await store.load("s4")).state


async def test_a_pending_saga_is_run_by_recover_without_an_unknown_outcome() -> None:
    store, world = InMemoryStore(), World()
    m = world.machine()
    await Orchestrator(store=store).start(m, saga_id="p1")
    report = await Orchestrator(store=store, sagas=[m]).recover()
    record = report.recovered[0]
    assert SagaStatus.COMPLETED is record.status
    assert ["a#1", "b#1", "c#1"] == world.calls
    assert all(t.event != "retry_unknown" for t in record.history)


async def test_a_saga_of_an_unregistered_version_is_left_alone_and_reported() -> None:
    store, clock, world = InMemoryStore(), FakeClock(), World()
    world.hang = "b"
    old = world.machine()
    await crash_during(world, Orchestrator(store=store, clock=clock), old, "s5")
    new = world.machine()
    new.step("d", lambda ctx: None)
    clock.advance(16)
    report = await Orchestrator(store=store, clock=clock, sagas=[new]).recover()
    assert () == report.recovered
    assert 1 == len(report.unregistered)
    assert (f"1 unfinished saga(s) of crashy version {old.version}, which is not registered"
            in report.unregistered[0])
    assert new.version in report.unregistered[0]
    assert "b" == (await store.load("s5")).state
    # registering the old definition beside the new one finishes it
    report = await Orchestrator(store=store, clock=clock, sagas=[new, old]).recover()
    assert [SagaStatus.COMPLETED] == [r.status for r in report.recovered]


async def test_resume_of_a_saga_held_by_a_live_worker_is_a_conflict() -> None:
    from statesaga import SagaConflict

    store, clock, world = InMemoryStore(), FakeClock(), World()
    world.hang = "b"
    m = world.machine()
    await crash_during(world, Orchestrator(store=store, clock=clock), m, "s6")
    with pytest.raises(SagaConflict, match="being run by another worker"):
        await Orchestrator(store=store, clock=clock, sagas=[m]).resume("s6")


async def test_a_stale_owner_cannot_commit_after_its_saga_was_taken_over() -> None:
    store, clock, world = InMemoryStore(), FakeClock(), World()
    world.hang = "b"
    m = world.machine()
    slow = Orchestrator(store=store, clock=clock)
    task = asyncio.create_task(slow.run(m, saga_id="s7"))
    await world.started.wait()
    clock.advance(16)
    world.hang = None
    taken = await Orchestrator(store=store, clock=clock, sagas=[m]).recover()
    assert [SagaStatus.COMPLETED] == [r.status for r in taken.recovered]
    from statesaga import SagaConflict

    task.cancel()
    with pytest.raises((SagaConflict, asyncio.CancelledError)):
        await task
    assert SagaStatus.COMPLETED is (await store.load("s7")).status


async def test_workers_run_started_sagas_and_stop_when_asked() -> None:
    store, world = InMemoryStore(), World()
    m = world.machine()
    starter = Orchestrator(store=store)
    for i in range(10):
        await starter.start(m, saga_id=f"w{i}")
    worker = Orchestrator(store=store, sagas=[m])
    stop = asyncio.Event()
    work = asyncio.create_task(worker.work(concurrency=4, poll=0.01, stop=stop))
    while len(await store.list(status=SagaStatus.COMPLETED)) < 10:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    stop.set()
    assert 10 == await work
    assert 30 == len(world.calls)


async def test_a_stopping_worker_finishes_the_current_step_and_releases_the_lease() -> None:
    store, world = InMemoryStore(), World()
    gate = asyncio.Event()

    async def slow(ctx: StepContext) -> None:
        world.started.set()
        await gate.wait()

    m = SagaStateMachine("slow")
    m.step("first", slow)
    m.step("second", lambda ctx: None)
    await Orchestrator(store=store).start(m, saga_id="half")
    stop = asyncio.Event()
    worker = Orchestrator(store=store, sagas=[m])
    work = asyncio.create_task(worker.work(poll=0.01, stop=stop))
    await world.started.wait()
    stop.set()
    await asyncio.sleep(0.02)
    gate.set()
    assert 1 == await work
    record = await store.load("half")
    assert "second" == record.state  # the step in flight was finished and recorded
    assert 1 == len(await store.claim("next", now=0, lease=1, limit=5))  # lease released


async def test_a_long_step_keeps_its_lease_alive() -> None:
    store = InMemoryStore()
    gate = asyncio.Event()
    renewed: list[float] = []
    real_renew = store.renew

    async def renew(owner: str, ids: Any, *, now: float | None, lease: float) -> Any:
        renewed.append(lease)
        gate.set()
        return await real_renew(owner, ids, now=now, lease=lease)

    store.renew = renew  # type: ignore[method-assign]

    async def slow(ctx: StepContext) -> None:
        await gate.wait()  # finishes only once the lease was renewed during the step

    m = SagaStateMachine("long")
    m.step("slow", slow)
    record = await asyncio.wait_for(
        Orchestrator(store=store, lease=0.03).run(m, saga_id="long"), 10)
    assert SagaStatus.COMPLETED is record.status
    assert renewed


async def test_an_ignored_event_does_not_count_as_an_attempt() -> None:
    from statesaga.choreography import deliver
    from statesaga.events import Event

    store, clock, world = InMemoryStore(), FakeClock(), World()
    world.hang = "b"
    m = world.machine()
    await crash_during(world, Orchestrator(store=store, clock=clock), m, "s8")
    clock.advance(16)
    first = Orchestrator(store=store, clock=clock, sagas=[m])
    world.hang = None
    record = await deliver(first, Event("stray", correlation_id="s8"))  # ignored, then resumed
    assert record is not None
    assert ["ignored: no transition on 'stray' from b"] == [
        t.reason for t in record.history if t.event == "stray"]
    assert [("retry_unknown", 1)] == [(t.event, t.attempt) for t in record.history
                                      if t.event == "retry_unknown"]
    assert ["a#1", "b#1", "b#2", "c#1"] == world.calls
