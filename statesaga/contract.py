"""The contract of a choreographed saga: what each state waits for and emits, checked."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from .definition import SagaStateMachine
from .exceptions import SagaDefinitionError
from .graph import FAILURE, RESERVED_EVENTS
from .participants import Participant


@attrs.frozen
class StateContract:
    """One waiting state: the events it waits for, the commands it and its undo emit."""

    state: str
    waits_for: tuple[str, ...]
    emits: tuple[str, ...]
    undo_emits: tuple[str, ...]


@attrs.frozen
class Contract:
    """The event contract of one choreographed machine."""

    machine: str
    states: tuple[StateContract, ...]

    def __str__(self) -> str:
        lines = [f"contract of {self.machine!r}:"]
        for s in self.states:
            lines.append(f"  {s.state}: emits {', '.join(s.emits) or '-'}; waits for "
                         f"{', '.join(s.waits_for) or '-'}; undo emits "
                         f"{', '.join(s.undo_emits) or '-'}")
        return "\n".join(lines)


def _emits(hook: object) -> tuple[str, ...]:
    emitted = getattr(hook, "emits", None)
    return (emitted,) if isinstance(emitted, str) else tuple(emitted or ())


def check_contract(machine: SagaStateMachine, participants: Sequence[Participant]) -> Contract:
    """List what each state waits for and emits; `SagaDefinitionError` for every gap.

    Gaps: a state waiting for an event no participant emits; a command no participant
    handles; a waiting state with no failure event, timeout or deadline (it may wait forever).
    The waiting states of a sub-saga (a step running another machine) are checked too, named
    "<step>/<state>": the parent's deadline, or a timeout on that step, bounds their wait.
    """
    emitted = set().union(*(p.emits for p in participants)) if participants else set()
    handled = {c for p in participants for c in p.handlers}
    problems: list[str] = []
    states = _check(machine, emitted, handled, problems, "", machine.deadline is not None)
    if problems:
        raise SagaDefinitionError(machine.name, problems)
    return Contract(machine.name, tuple(states))


def _check(machine: SagaStateMachine, emitted: set[str], handled: set[str],
           problems: list[str], prefix: str, bounded: bool) -> list[StateContract]:
    """The contracts of `machine`'s waiting states (and its sub-sagas'), its gaps added to
    `problems`; `bounded`: something above it stops a wait that never ends."""
    from .orchestrator_children import SubSaga

    graph = machine.graph
    bounded = bounded or machine.deadline is not None
    states = []
    for state in graph.forward:
        d = graph.defs[state]
        if isinstance(d.step.action, SubSaga):  # its child's states, under its name
            states += _check(d.step.action.machine, emitted, handled, problems,
                             f"{prefix}{state}/", bounded or d.step.timeout is not None)
        if not graph.waits(state):  # a step, or a parallel group of steps: nothing to wait for
            continue
        name = prefix + state
        outgoing = [t for t in graph.transitions
                    if t.source == state and t.event not in RESERVED_EVENTS]
        waits = tuple(sorted({t.event for t in outgoing}))
        contract = StateContract(name, waits, _emits(d.on_enter), _emits(d.step.compensation))
        states.append(contract)
        problems += [f"state {name!r} waits for {e!r}, which no participant emits"
                     for e in waits if e not in emitted]
        problems += [f"state {name!r} emits {c!r}, which no participant handles"
                     for c in contract.emits + contract.undo_emits if c not in handled]
        fails = any(t.kind == FAILURE for t in outgoing)
        if not fails and d.step.timeout is None and not bounded:
            problems.append(f"state {name!r} has no route to 'compensated' on failure: add a "
                            "failure event (a transition to 'compensated'), a timeout, or a "
                            "deadline, or it may wait forever")
    return states
