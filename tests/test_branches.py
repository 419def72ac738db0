"""Parallel groups: branches run at once, fail together, and are undone as the mirror says."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from statesaga import Orchestrator, Retry, SagaStateMachine, SagaStatus, SagaStore, StepContext
from statesaga.testing import FakeClock


class Booker:
    """Branch actions that record when they start and end, and fail or hang on a script."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.calls: list[str] = []
        self.fail: dict[str, int | None] = {}  # failures left (None: always)
        self.hang: set[str] = set()
        self.group = names
        self.started = {n: asyncio.Event() for n in (*names, "reserve", "charge")}
        self.keys: list[str] = []

    def act(self, name: str) -> Any:
        async def action(ctx: StepContext) -> dict[str, Any]:
            self.calls.append(f"start {name}")
            self.keys.append(ctx.idempotency_key)
            self.started[name].set()
            if name in self.hang:
                await asyncio.Event().wait()
            if name in self.group:  # every branch is running before any finishes: at once
                await asyncio.wait_for(asyncio.gather(
                    *(self.started[n].wait() for n in self.group)), 30)
            left = self.fail.get(name, 0)
            if left is None or left > 0:
                if left is not None:
                    self.fail[name] = left - 1
                self.calls.append(f"fail {name}")
                raise RuntimeError(f"{name} refused")
            self.calls.append(f"end {name}")
            return {"booked": name}
        action.__name__ = name
        return action

    def undo(self, name: str) -> Any:
        async def compensation(ctx: StepContext) -> None:
            self.calls.append(f"undo {name}")
        return compensation


def trip(b: Booker, **opts: Any) -> SagaStateMachine:
    m = SagaStateMachine("ptrip", deadline=opts.pop("deadline", None))
    m.step("reserve", b.act("reserve"), compensation=b.undo("reserve"))
    with m.parallel("book"):
        for name in ("flight", "hotel", "car"):
            m.step(name, b.act(name), compensation=b.undo(name), **opts)
    m.step("charge", b.act("charge"), compensation=b.undo("charge"))
    return m


def booker() -> Booker:
    return Booker(("flight", "hotel", "car"))


async def test_the_branches_run_at_once_and_the_next_step_sees_every_result() -> None:
    b = booker()
    seen: dict[str, Any] = {}

    async def charge(ctx: StepContext) -> None:
        seen.update(ctx.results)

    m = SagaStateMachine("ptrip2")
    with m.parallel("book"):
        for name in ("flight", "hotel", "car"):
            m.step(name, b.act(name), compensation=b.undo(name))
    m.step("charge", charge)
    record = await Orchestrator().run(m, saga_id="p1")
    assert SagaStatus.COMPLETED is record.status
    starts = [c for c in b.calls if c.startswith("start")]
    assert 3 == len(starts)
    assert b.calls[:3] == starts  # all started before any ended
    assert {"flight": {"booked": "flight"}, "hotel": {"booked": "hotel"},
            "car": {"booked": "car"}} == seen
    assert {"flight", "hotel", "car"} == {t.step for t in record.history
                                          if t.source == "book" or t.dest == "charge"}


async def test_a_failing_branch_cancels_the_running_ones_and_undoes_all_but_itself(
        saga_store: SagaStore) -> None:
    b = booker()
    b.fail["hotel"] = None
    b.hang.add("car")  # still running when the hotel fails: cancelled, so undone too
    record = await Orchestrator(store=saga_store).run(trip(b), saga_id="p2")
    assert SagaStatus.COMPENSATED is record.status
    undone = [c for c in b.calls if c.startswith("undo")]
    assert {"undo flight", "undo car"} == set(undone[:2])  # the group's, at once
    assert ["undo reserve"] == undone[2:]  # then the step before it
    assert "undo hotel" not in b.calls
    assert "undo charge" not in b.calls
    assert "hotel refused" in (record.error or "")
    assert record == await saga_store.load("p2")


async def test_a_failure_after_the_group_undoes_every_branch_then_the_steps_before() -> None:
    b = booker()
    b.fail["charge"] = None
    record = await Orchestrator().run(trip(b), saga_id="p3")
    undone = [c for c in b.calls if c.startswith("undo")]
    assert {"undo flight", "undo hotel", "undo car"} == set(undone[:3])
    assert ["undo reserve"] == undone[3:]
    assert "compensated" == record.state


async def test_each_branch_retries_on_its_own_policy() -> None:
    b = booker()
    b.fail["flight"] = 2
    record = await Orchestrator(clock=FakeClock()).run(
        trip(b, retry=Retry(attempts=3, backoff=0.01)), saga_id="p4")
    assert SagaStatus.COMPLETED is record.status
    retries = [(t.step, t.attempt) for t in record.history if t.event == "retry"]
    assert [("flight", 1), ("flight", 2)] == retries
    assert 3 == b.keys.count("p4:flight")  # the same idempotency key every time


async def test_a_branch_timing_out_is_undone_too_and_its_siblings_as_well() -> None:
    b = booker()
    b.hang.add("flight")
    record = await Orchestrator(clock=FakeClock()).run(trip(b, timeout=5), saga_id="p5")
    assert "compensated" == record.state
    assert {"undo flight", "undo hotel", "undo car", "undo reserve"} == {
        c for c in b.calls if c.startswith("undo")}
    assert ("book", "compensating_book", "timeout", "flight") in {
        (t.source, t.dest, t.event, t.step) for t in record.history}


async def test_the_deadline_applies_to_each_branch() -> None:
    b = booker()
    b.hang.update({"flight", "hotel", "car"})
    record = await Orchestrator(clock=FakeClock()).run(trip(b, deadline=60), saga_id="p6")
    assert "compensated" == record.state
    assert "deadline" in (record.error or "")


async def test_a_stuck_branch_compensation_is_retried_with_only_what_is_left() -> None:
    b = booker()
    b.fail["charge"] = None
    broken = {"hotel"}

    async def undo_hotel(ctx: StepContext) -> None:
        if "hotel" in broken:
            raise RuntimeError("hotel API down")
        b.calls.append("undo hotel")

    m = SagaStateMachine("pstuck")
    m.step("reserve", b.act("reserve"), compensation=b.undo("reserve"))
    with m.parallel("book"):
        m.step("flight", b.act("flight"), compensation=b.undo("flight"))
        m.step("hotel", b.act("hotel"), compensation=undo_hotel,
               compensation_retry=Retry(attempts=1))
        m.step("car", b.act("car"))
    m.step("charge", b.act("charge"))
    orch = Orchestrator()
    record = await orch.run(m, saga_id="p7")
    assert record.is_stuck
    assert "hotel API down" in (record.error or "")
    broken.clear()
    record = await orch.retry("p7", reason="hotel fixed")
    assert "compensated" == record.state
    assert 1 == b.calls.count("undo flight")  # not undone twice
    assert ["undo hotel", "undo reserve"] == [c for c in b.calls if c.startswith("undo")][-2:]


async def test_an_abort_during_the_group_undoes_every_branch_that_may_have_happened() -> None:
    b = booker()
    b.hang.update({"flight", "hotel", "car"})
    orch = Orchestrator()
    running = asyncio.ensure_future(orch.run(trip(b), saga_id="p8"))
    await asyncio.wait_for(asyncio.gather(*(b.started[n].wait()
                                            for n in ("flight", "hotel", "car"))), 30)
    record = await orch.abort("p8", reason="customer called")
    assert record == await running
    assert "compensated" == record.state
    assert {"undo flight", "undo hotel", "undo car", "undo reserve"} == {
        c for c in b.calls if c.startswith("undo")}


@pytest.mark.parametrize("bad", ["explicit", "guarded_exit", "into_branch", "empty", "nested"])
def test_a_group_that_cannot_run_is_a_definition_error(bad: str) -> None:
    from statesaga import SagaDefinitionError

    def noop(ctx: Any) -> None:
        return None

    m = SagaStateMachine("bad_group")
    m.step("first", noop)
    with m.parallel("g"):
        if bad == "explicit":
            m.add_state("waiting")
        if bad == "nested":
            with m.parallel("inner"):
                m.step("x", noop)
        if bad != "empty":
            m.step("a", noop)
    m.step("last", noop)
    if bad == "guarded_exit":
        m.add_transition("g", "last", "succeed", guard=lambda e, c: True)
    if bad == "into_branch":
        m.add_transition("first", "a", "succeed")
    with pytest.raises(SagaDefinitionError):
        m.validate()
