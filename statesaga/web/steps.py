"""Each step's forward and undo status, read from a saga's history (what the saga page lists);
a parallel group's branches each on a line of their own, `book[book_flight]`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from ..records import MIRROR_PREFIX, TERMINALS, Kind, SagaRecord, Transition

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
    running: set[str] = set()  # a group's branches (or their undos) at work now
    if machine is not None:
        from ..diagrams.trace import Trace

        trace = Trace(machine, record)
        would = {state for key in trace.would for state in key[:2]} | trace.rails_would
        running = trace.running
    out = []
    for step in order:
        group, _, branch = step.rstrip("]").partition("[")
        undo = f"{MIRROR_PREFIX}{branch or step}" in would
        out.append(_branch(record, group, branch, undo, running) if branch
                   else _status(record, step, undo))
    return out


def _defined(machine: SagaStateMachine) -> list[str]:
    """The forward states in order, each branch of a group after it as `group[branch]`."""
    from ..diagrams.model import column

    graph = machine.graph
    return [name for state in column(graph)
            for name in [state, *(f"{state}[{b}]" for b in graph.lanes.get(state, ()))]]


def _steps(history: tuple[Transition, ...]) -> list[str]:
    seen: dict[str, None] = {}
    for t in history:
        for state in (t.source, t.dest):
            if state and not state.startswith(MIRROR_PREFIX) and state not in TERMINALS:
                seen.setdefault(state)
        home = (t.source or "").removeprefix(MIRROR_PREFIX)
        if t.step not in (None, home) and home in seen:  # a branch of the group it ran in
            seen.setdefault(f"{home}[{t.step}]")
    return list(seen)


def _branch(record: SagaRecord, group: str, branch: str, would: bool, running: set[str]
            ) -> StepStatus:
    """A branch of a parallel group: its own moves in the group and in its compensation;
    one still running when the group moved on was cancelled."""
    forward, undo, attempts, undo_attempts = "not run", "—", 0, 0
    mirror = f"{MIRROR_PREFIX}{group}"
    for t in record.history:
        mine = t.step == branch
        if t.dest == group and t.source != group:
            forward = "running"
        elif t.source == group and mine:
            attempts = max(attempts, t.attempt or 0)
            if t.kind is not Kind.RETRY:
                forward = _OUT.get(t.event, t.event)
        elif t.source == group and t.dest != group and forward == "running":
            forward = "cancelled"
        if t.source == mirror and mine:
            undo_attempts = max(undo_attempts, t.attempt or 0)
            if t.kind is not Kind.RETRY:
                undo = _UNDO.get(t.event, t.event)
    if f"{MIRROR_PREFIX}{branch}" in running and record.state == mirror:
        undo = "undoing now"
    elif undo == "—" and would:
        undo = "would be undone on retry" if record.is_stuck else "would be undone"
    return StepStatus(f"{group}[{branch}]", forward, attempts, undo, undo_attempts, would)


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
