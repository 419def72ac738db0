"""The fake services of `statesaga.testing`: effects once per key, scripted failures, fencing
and compensation tombstones."""

from __future__ import annotations

import asyncio

import pytest

from statesaga import InMemoryStore, Orchestrator, SagaStateMachine, SagaStatus, StepContext
from statesaga.testing import FakeService, ServiceError, StaleCall


async def test_an_effect_is_applied_once_per_idempotency_key() -> None:
    svc = FakeService("flights")
    assert "LH1" == await svc.do("reserve", "t1:book", "LH1")
    assert "LH1" == await svc.do("reserve", "t1:book", "LH2")  # a repeat: the first value
    assert {"t1:book": "LH1"} == svc.effects
    assert [("reserve", "t1:book"), ("reserve", "t1:book")] == svc.calls


async def test_undo_removes_the_effect_and_tolerates_nothing_to_undo() -> None:
    svc = FakeService("flights")
    await svc.do("reserve", "t1:book")
    assert (True, False) == (await svc.undo("cancel", "t1:book"),
                             await svc.undo("cancel", "t2:book"))
    assert {} == svc.effects


async def test_a_scripted_failure_fails_so_many_times_then_the_call_succeeds() -> None:
    svc = FakeService("payments").fail("charge", times=2)
    for _ in range(2):
        with pytest.raises(ServiceError, match=r"payments\.charge failed"):
            await svc.do("charge", "k")
    assert 42 == await svc.do("charge", "k", 42)


async def test_a_hanging_call_waits_until_cancelled() -> None:
    svc = FakeService("hotels").fail("book", hang=True)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(svc.do("book", "k"), 0.01)
    assert {} == svc.effects


async def test_a_higher_or_equal_fence_is_accepted_and_remembered() -> None:
    svc = FakeService("flights")
    await svc.do("reserve", "k", "LH1", fence=1)
    await svc.do("reserve", "k", "LH1", fence=1)
    await svc.do("reserve", "k", "LH1", fence=3)
    assert {"k": 3} == svc.fences
    assert [] == svc.refused


async def test_a_lower_fence_than_seen_for_the_key_is_refused_and_changes_nothing() -> None:
    svc = FakeService("flights")
    await svc.do("reserve", "k", "LH2", fence=2)  # the worker that took the saga over
    with pytest.raises(StaleCall, match="fence 1 is lower than 2"):
        await svc.do("reserve", "k", "LH1", fence=1)
    assert ({"k": "LH2"}, [("reserve", "k", 1)]) == (svc.effects, svc.refused)


async def test_fences_are_kept_per_key() -> None:
    svc = FakeService("flights")
    await svc.do("reserve", "saga-a:book", fence=5)
    assert True is await svc.do("reserve", "saga-b:book", fence=1)


async def test_a_stale_undo_is_refused_too() -> None:
    svc = FakeService("flights")
    await svc.do("reserve", "k", fence=2)
    with pytest.raises(StaleCall):
        await svc.undo("cancel", "k", fence=1)
    assert {"k": True} == svc.effects


async def test_an_undo_leaves_a_tombstone_so_a_late_action_with_its_key_is_refused() -> None:
    svc = FakeService("flights")
    assert False is await svc.undo("cancel", "k", fence=2)  # nothing had landed yet
    with pytest.raises(StaleCall, match="undone"):
        await svc.do("reserve", "k", "LH1", fence=2)  # even with the same fence
    with pytest.raises(StaleCall):
        await svc.do("reserve", "k", "LH1")  # or none
    assert ({}, {"k"}) == (svc.effects, svc.tombstones)


async def test_a_call_without_a_fence_is_not_fenced() -> None:
    svc = FakeService("flights")
    await svc.do("reserve", "k", fence=7)
    assert True is await svc.do("reserve", "k")


async def test_reset_forgets_effects_calls_fences_tombstones_and_refusals() -> None:
    svc = FakeService("flights").fail("reserve")
    await svc.undo("cancel", "k", fence=3)
    with pytest.raises(ServiceError):
        await svc.do("reserve", "k", fence=1)
    svc.reset()
    assert True is await svc.do("reserve", "k", fence=1)
    assert (set(), [], {"k": 1}) == (svc.tombstones, svc.refused, svc.fences)


async def test_a_stalled_workers_late_action_is_refused_after_the_saga_was_compensated(
) -> None:
    """The story of the README's fencing section: worker 1 stalls in `book`, worker 2 takes
    the saga over (fence 2) and compensates it; worker 1 wakes and calls with fence 1."""
    flights = FakeService("flights")
    stalled = asyncio.Event()
    wake = asyncio.Event()
    saga = SagaStateMachine("fenced_trip")

    async def book(ctx: StepContext) -> None:
        if ctx.fence == 1:  # worker 1: stalls past its lease before it calls
            stalled.set()
            await wake.wait()
        await flights.do("reserve", ctx.idempotency_key, "LH1", fence=ctx.fence)

    async def cancel(ctx: StepContext) -> None:
        await flights.undo("cancel", ctx.idempotency_key, fence=ctx.fence)

    saga.step("book", book, compensation=cancel)
    record = await Orchestrator(store=InMemoryStore()).start(saga, saga_id="t1")
    assert 1 == record.fence  # the creation is the first claim
    running = asyncio.create_task(book(StepContext("t1", "book", {}, {}, fence=1)))
    await stalled.wait()
    await cancel(StepContext("t1", "book", {}, {}, fence=2))  # worker 2 compensated the saga
    wake.set()
    with pytest.raises(StaleCall):
        await running
    assert ({}, [("reserve", "t1:book", 1)]) == (flights.effects, flights.refused)


async def test_the_orchestrator_passes_a_growing_fence_the_fake_accepts() -> None:
    flights = FakeService("flights")
    saga = SagaStateMachine("fenced")

    async def book(ctx: StepContext) -> None:
        await flights.do("reserve", ctx.idempotency_key, fence=ctx.fence)

    saga.step("book", book)
    record = await Orchestrator().run(saga, saga_id="f1")
    assert (SagaStatus.COMPLETED, {"f1:book": 1}) == (record.status, flights.fences)


async def test_a_saga_taken_over_by_another_worker_calls_with_the_next_fence() -> None:
    flights = FakeService("flights")
    saga = SagaStateMachine("taken_over")

    async def book(ctx: StepContext) -> None:
        await flights.do("reserve", ctx.idempotency_key, fence=ctx.fence)

    saga.step("book", book)
    store = InMemoryStore()
    await Orchestrator(store=store).start(saga, saga_id="t1")  # fence 1: left to workers
    await flights.do("reserve", "t1:book", fence=1)  # as if a first worker had called
    report = await Orchestrator(store=store, sagas=[saga]).recover()  # claims: fence 2
    assert [SagaStatus.COMPLETED] == [r.status for r in report.recovered]
    assert ({"t1:book": 2}, []) == (flights.fences, flights.refused)
    with pytest.raises(StaleCall):
        await flights.do("reserve", "t1:book", fence=1)  # the first worker, late
