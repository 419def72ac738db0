"""The pytest plugin's fixtures and the transition-sequence assertion."""

from __future__ import annotations

import pytest

from statesaga import InMemoryStore, Orchestrator, SagaStateMachine, SagaStatus, SagaStore
from statesaga.testing import FakeClock, assert_transitions


def machine() -> SagaStateMachine:
    m = SagaStateMachine("plugged")
    m.step("a", lambda ctx: 1, compensation=lambda ctx: None)
    m.step("b", lambda ctx: 1 / 0)
    return m


async def test_saga_orchestrator_runs_a_saga_on_each_store(
        saga_orchestrator: Orchestrator, saga_store: SagaStore) -> None:
    record = await saga_orchestrator.run(machine(), {"n": 1}, saga_id="p-1")
    assert SagaStatus.COMPENSATED is record.status
    assert record == await saga_store.load("p-1")


def test_saga_clock_is_virtual(saga_clock: FakeClock) -> None:
    start = saga_clock.time()
    saga_clock.advance(300)
    assert 300 == saga_clock.time() - start


async def test_assert_transitions_accepts_the_path_as_states_or_triples() -> None:
    record = await Orchestrator(store=InMemoryStore()).run(machine(), saga_id="t")
    assert_transitions(record, ["a", "b", "compensating_a", "compensated"])
    assert_transitions(record, [("a", "succeed", "b"), ("b", "fail", "compensating_a"),
                                ("compensating_a", "succeed", "compensated")])


async def test_assert_transitions_shows_a_readable_diff() -> None:
    record = await Orchestrator().run(machine(), saga_id="t")
    with pytest.raises(AssertionError) as err:
        assert_transitions(record, ["a", "b", "completed"])
    text = str(err.value)
    assert "saga 't' took another path" in text
    assert "-completed" in text
    assert "+compensating_a" in text
