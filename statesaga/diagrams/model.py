"""What a drawing shows: the states and edges of a machine, and how it tries its callables.

Shared by the DOT and Mermaid output (and `Trace`, what one saga's history says about
them); nothing here knows about graphviz. A parallel group's fork and join are `lanes`'.
A step that runs a sub-saga (another machine, as the child saga "<parent id>/<step>") is
a step here too, saying which machine it runs; `subsagas` draws the child inside it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..exceptions import SagaError
from ..graph import FORWARD, MIRROR, RESUME, SELF, STUCK, SUCCEED, Graph, mirror
from ..orchestrator_children import sub_sagas
from ..records import FAILED, MIRROR_PREFIX, Kind

if TYPE_CHECKING:
    from ..definition import SagaStateMachine
    from ..records import SagaRecord

TIMES = "\u00d7"  # the multiplication sign, as in "failed 2x"
START = "start"  # the kind of the drawn edge into the initial state
Key = tuple[str, str, str]  # a drawn edge: (source, dest, kind)


def mirrors(graph: Graph) -> list[str]:
    """The compensation states, in the order of the forward states they mirror."""
    return [mirror(s) for s in graph.forward if graph.compensable(s)]


def drawn_states(graph: Graph) -> list[str]:
    """Every state, but `failed` when nothing can get stuck (there is no compensation)."""
    return [s for s in graph.states if s != FAILED or mirrors(graph)]


def edges(graph: Graph) -> list[tuple[str, str, str, list[str]]]:
    """Transitions as drawn: one edge per (source, dest, kind), with all of its events.

    Retry self-loops are left out (a state's label says how often it tries), and so are
    stuck/resume edges, which every compensation state has: each drawing shows them its way,
    and a group's branch moves (its fork and join say them).
    """
    groups: dict[Key, list[str]] = {}
    for t in graph.transitions:
        if t.kind not in (SELF, STUCK, RESUME, Kind.LANE):
            # a confirmed compensation walks back on its reply: its label says which
            event = SUCCEED if t.kind == MIRROR else t.event
            groups.setdefault((t.source, t.dest, t.kind), []).append(event)
    return [(s, d, k, events) for (s, d, k), events in groups.items()]


def column(graph: Graph) -> list[str]:
    """Forward states top to bottom: in the order defined, but never above a predecessor."""
    preds: dict[str, set[str]] = {s: set() for s in graph.forward}
    for t in graph.transitions:
        if t.kind == FORWARD and t.dest in preds:
            preds[t.dest].add(t.source)
    out: list[str] = []
    while len(out) < len(graph.forward):  # in a loop none is ready: take the first left
        left = [s for s in graph.forward if s not in out]
        out.append(next((s for s in left if preds[s] <= set(out)), left[0]))
    return out


def policy(graph: Graph, state: str) -> list[str]:
    """How `state` tries its callable, e.g. ['up to 3 tries', 'timeout 5s'] (a policy, not a
    count of what happened: that is `Trace.notes`); a single try goes unsaid."""
    if state in graph.defs:
        spec = graph.defs[state].step
        if spec.action is None:
            return []  # an explicit state: it waits for events, there is nothing to retry
        attempts = spec.retry.attempts
    elif state.startswith(MIRROR_PREFIX):
        spec = graph.defs[state[len(MIRROR_PREFIX):]].step
        attempts = spec.compensation_retry.attempts
    else:
        return []
    notes = [f"up to {attempts} tries"] if attempts > 1 else []
    child = sub_sagas(graph).get(spec.name)
    if child is not None:
        notes.insert(0, f"runs sub-saga {child.name}" if state == spec.name else
                     f"reverts sub-saga {child.name}")
    if state in graph.replies:
        notes.append(f"awaits {graph.replies[state][0]}")
    return notes + ([f"timeout {spec.timeout:g}s"] if spec.timeout is not None else [])


def short(error: str, width: int) -> str:
    """The gist of an error message, without the saga's own wording around it."""
    match = (re.match(r"saga .*? is stuck in \S+ after \d+ attempts?: (.*?); fix what", error)
             or re.match(r"step .*? failed on attempt \d+: (.*)", error))
    text = match.group(1) if match else error
    return text if len(text) <= width else text[: width - 1].rstrip() + "\u2026"


def check_record(machine: SagaStateMachine, record: SagaRecord) -> None:
    """Refuse to draw a saga on a machine it did not run under: its edges would lie."""
    if (record.name, record.version) != (machine.name, machine.version):
        raise SagaError(
            f"saga {record.saga_id!r} ran under {record.name!r} version {record.version}, "
            f"not {machine.name!r} version {machine.version}: draw it with the machine it "
            "ran under", saga_id=record.saga_id, state=record.state)
