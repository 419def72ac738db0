"""Hypothesis strategies for sagas: random linear sagas, explicit graphs, failure schedules."""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import strategies as st

from ..context import StepContext
from ..definition import SagaStateMachine
from ..retry import Retry


@attrs.define
class RecordedSaga:
    """A generated saga whose steps record their calls and fail by `schedule`."""

    machine: SagaStateMachine
    steps: list[str]
    compensable: list[str]
    calls: list[str] = attrs.Factory(list)
    schedule: dict[str, int | None] = attrs.Factory(dict)  # step -> failures left (None: all)

    def _gate(self, name: str) -> None:
        self.calls.append(name)
        if name in self.schedule:
            left = self.schedule[name]
            if left is None or left > 0:
                self.schedule[name] = None if left is None else left - 1
                raise RuntimeError(f"{name} failed (scheduled)")


def _recording(saga: RecordedSaga, name: str) -> Any:
    def call(ctx: StepContext) -> None:
        saga._gate(name)
    call.__qualname__ = f"recorded.{name}"
    return call


@st.composite
def linear_sagas(draw: st.DrawFn, max_steps: int = 8, retries: bool = False) -> RecordedSaga:
    """A saga of 1..max_steps steps, each with or without a compensation."""
    n = draw(st.integers(1, max_steps))
    names = [f"s{i}" for i in range(n)]
    undo = [draw(st.booleans()) for _ in names]
    saga = RecordedSaga(SagaStateMachine("generated"), names,
                        [s for s, u in zip(names, undo, strict=True) if u])
    for name, u in zip(names, undo, strict=True):
        attempts = draw(st.integers(1, 3)) if retries else 1
        saga.machine.step(name, _recording(saga, name),
                          compensation=_recording(saga, f"undo {name}") if u else None,
                          retry=Retry(attempts=attempts, backoff=0, jitter=0),
                          compensation_retry=Retry(attempts=2, backoff=0, jitter=0))
    return saga


@st.composite
def failure_schedules(draw: st.DrawFn, saga: RecordedSaga) -> dict[str, int | None]:
    """Which steps and compensations fail, and how often (None: every time)."""
    schedule: dict[str, int | None] = {}
    for name in saga.steps:
        if draw(st.booleans()):
            schedule[name] = draw(st.none() | st.integers(1, 3))
    for name in saga.compensable:
        if draw(st.integers(0, 4)) == 0:
            schedule[f"undo {name}"] = draw(st.none() | st.integers(1, 2))
    return schedule


@st.composite
def explicit_graphs(draw: st.DrawFn, max_states: int = 8) -> SagaStateMachine:
    """A random acyclic explicit graph: every state reachable, every state can complete."""
    n = draw(st.integers(1, max_states))

    def undo(ctx: StepContext) -> None:
        return None

    m = SagaStateMachine("random_graph")
    for i in range(n):
        m.add_state(f"s{i}", compensation=undo if draw(st.booleans()) else None)
    for i in range(1, n):  # a spanning tree from s0 keeps every state reachable
        m.add_transition(f"s{draw(st.integers(0, i - 1))}", f"s{i}", f"to_s{i}")
    for i in range(n):
        for j in draw(st.lists(st.integers(i + 1, n - 1), max_size=2, unique=True)
                      if i < n - 1 else st.just([])):
            m.add_transition(f"s{i}", f"s{j}", f"x{i}_{j}", guard=lambda e, c: True)
        m.add_transition(f"s{i}", "completed", f"finish_{i}")
        if draw(st.booleans()):
            m.add_transition(f"s{i}", "compensated", f"failed_{i}")
    return m
