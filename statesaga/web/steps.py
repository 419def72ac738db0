"""Each step's forward and undo status, read from a saga's history (what the saga page lists)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from ..records import MIRROR_PREFIX, TERMINALS, SagaRecord, Transition

if TYPE_CHECKING:
    from ..definition import SagaStateMachine

_OUT = {"succeed": "done", "fail": "failed", "timeout": "outcome unknown",
        "abort": "aborted"}
_UNDO = {"succeed": "undone", "fail": "gave up: stuck"}


@attrs.frozen
class StepStatus:
    """One step of one saga: how its action and its compensation went, and their attempts."""

    step: str
    forward: str
    attempts: int
    undo: str
    undo_attempts: int
    would_undo: bool = False  # on the compensation path that would run now


def step_statuses(record: SagaRecord, machine: SagaStateMachine | None = None
                  ) -> list[StepStatus]:
    """Every step's status: the definition's steps in order when it is known, else the
    forward states the history went through."""
    order = _steps(record.history) if machine is None else _defined(machine)
    would: set[str] = set()
    if machine is not None:
        from ..diagrams.trace import Trace

        trace = Trace(machine, record)
        would = {state for key in trace.would for state in key[:2]} | trace.rails_would
    return [_status(record, step, f"{MIRROR_PREFIX}{step}" in would) for step in order]


def _defined(machine: SagaStateMachine) -> list[str]:
    from ..diagrams.model import column

    return column(machine.graph)


def _steps(history: tuple[Transition, ...]) -> list[str]:
    seen: dict[str, None] = {}
    for t in history:
        for state in (t.source, t.dest):
            if state and not state.startswith(MIRROR_PREFIX) and state not in TERMINALS:
                seen.setdefault(state)
    return list(seen)


def _status(record: SagaRecord, step: str, would: bool) -> StepStatus:
    mirror = f"{MIRROR_PREFIX}{step}"
    forward, attempts = _outcome(record, step, _OUT, "not run", "running")
    undo, undo_attempts = _outcome(record, mirror, _UNDO, "—", "undoing now")
    if undo == "—" and would:
        undo = "would be undone on retry" if record.is_stuck else "would be undone"
    return StepStatus(step, forward, attempts, undo, undo_attempts, would)


def _outcome(record: SagaRecord, state: str, words: dict[str, str], never: str, now: str
             ) -> tuple[str, int]:
    """How the last visit of `state` ended (`words` by event), and its attempts."""
    attempts, outcome, visited = 0, never, False
    for t in record.history:
        if t.dest == state and t.source != state:
            visited, outcome = True, now
        if t.source != state:
            continue
        if t.attempt is not None:
            attempts = max(attempts, t.attempt)
        if t.dest != state:
            outcome = words.get(t.event, t.event)
    if visited and record.state == state:
        outcome = now
    return outcome, attempts
