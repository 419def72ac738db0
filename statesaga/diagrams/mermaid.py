"""The Mermaid drawing: a `stateDiagram-v2` for Markdown, where graphviz does not render.

A parallel group (and its compensation) is a composite state holding a `<<fork>>`, its
branches and a `<<join>>`; the machine's edges connect to the composite. A sub-saga step is
a composite holding the child's forward states, its compensation one holding the child's
mirror, walked up from the revert (Mermaid cannot draw an edge between two composites'
insides, so the child's failure edges are its own drawing's).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ..orchestrator_children import sub_sagas
from ..records import COMPENSATED, COMPLETED, FAILED
from .lanes import branch_nodes, group_of
from .model import drawn_states, edges, mirrors, policy
from .subsagas import child_traces, inner, rows, sub_of
from .trace import Trace

if TYPE_CHECKING:
    from ..definition import SagaStateMachine
    from ..graph import Graph
    from ..records import SagaRecord

FORK_JOIN = ("_fork", "_join")  # a group's bars, named after it

CLASSES = ("    classDef visited fill:#eeeeee",
           "    classDef current fill:#ffe08a,stroke-width:3px",
           "    classDef stuck fill:#f6dcdc,stroke:#b3261e,stroke-width:3px")


def to_mermaid(machine: SagaStateMachine, record: SagaRecord | None = None, *,
               children: Iterable[SagaRecord] = ()) -> str:
    """The machine as a Mermaid state diagram; with `record`, that saga's states marked (and
    with `children`, the records of its sub-sagas, theirs inside their steps)."""
    graph = machine.graph
    trace = Trace(machine, record) if record is not None else None
    traces = child_traces(machine, record, children)
    states = drawn_states(graph)
    lanes = {s: branch_nodes(graph, s) for s in states if group_of(graph, s) is not None}
    subs = {s: _child_states(graph, s) for s in states if sub_of(graph, s) is not None}
    ids = _ids([*states, *(n for nodes in lanes.values() for n in nodes),
                *(f"{s}{end}" for s in lanes for end in FORK_JOIN),
                *(inner(sub_of(graph, s) or s, n) for s, ns in subs.items() for n in ns)])
    lines = ["stateDiagram-v2", "    direction TB"]
    marked: dict[str, str] = {}
    for state in states:
        if state in lanes:
            lines += _composite(graph, state, lanes[state], ids, trace)
        elif state in subs:
            step = sub_of(graph, state) or state
            lines += _child(graph, state, subs[state], ids, traces.get(step))
            marked |= _child_marks(step, traces.get(step))
        else:
            lines += _state(graph, state, ids, trace, "    ")
    lines.append(f"    [*] --> {ids[graph.initial]} : start")
    for source, dest, _, events in edges(graph):
        lines.append(f"    {ids[source]} --> {ids[dest]} : {' / '.join(events)}")
    for m in mirrors(graph):
        lines.append(f"    {ids[m]} --> {ids[FAILED]} : fail")
        lines.append(f"    {ids[FAILED]} --> {ids[m]} : retry")
    lines += [f"    {ids[COMPLETED]} --> [*]", f"    {ids[COMPENSATED]} --> [*]"]
    if trace is not None:
        lines += CLASSES
        marked |= {trace.current: "current"}
        if trace.stuck is not None and trace.is_stuck:
            marked[trace.stuck] = "stuck"
        marked |= dict.fromkeys(trace.running, "current")
        for state in ids:
            cls = marked.get(state, "visited" if state in trace.visited else None)
            if "/" in state:  # a child's state: its own trace says what it is
                cls = marked.get(state)
            if cls is not None:
                lines.append(f"    class {ids[state]} {cls}")
    return "\n".join(lines) + "\n"


def _state(graph: Graph, state: str, ids: dict[str, str], trace: Trace | None,
           indent: str) -> list[str]:
    """A state (or a branch) as Mermaid declares it: its name, and its notes."""
    ident = ids[state]
    notes = policy(graph, state) + (trace.notes(state) if trace is not None else [])
    lines = [f'{indent}state "{state}" as {ident}'] if ident != state else []
    if notes:  # a first description naming it, or Mermaid shows the notes in its place
        lines += [f"{indent}{ident} : {state}"] if ident == state else []
        lines.append(f"{indent}{ident} : {_text(' · '.join(notes))}")
    return lines


def _composite(graph: Graph, state: str, nodes: list[str], ids: dict[str, str],
               trace: Trace | None) -> list[str]:
    """A parallel group (or its compensation) as a composite state: fork, branches, join."""
    fork, join = (ids[f"{state}{end}"] for end in FORK_JOIN)
    head = f'    state "{state}" as {ids[state]} {{' if ids[state] != state else (
        f"    state {state} {{")
    lines = [head, f"        state {fork} <<fork>>", f"        state {join} <<join>>"]
    for node in nodes:
        lines += _state(graph, node, ids, trace, "        ")
    lines.append(f"        [*] --> {fork}")
    lines += [f"        {fork} --> {ids[n]}" for n in nodes]
    lines += [f"        {ids[n]} --> {join}" for n in nodes]
    return [*lines, f"        {join} --> [*]", "    }"]


def _child_states(graph: Graph, state: str) -> list[str]:
    """The child states inside a sub-saga step (forward) or its compensation (the mirror,
    bottom up, as it is walked)."""
    step = sub_of(graph, state)
    assert step is not None
    child = sub_sagas(graph)[step].graph
    if state == step:
        return [s for s, _ in rows(child)]
    return [u for _, u in reversed(rows(child)) if u is not None]


def _child(graph: Graph, state: str, nodes: list[str], ids: dict[str, str],
           trace: Trace | None) -> list[str]:
    """A sub-saga step as a composite of its child's forward states; its compensation as a
    composite of the child's mirror, from the revert up."""
    step = sub_of(graph, state)
    assert step is not None
    child = sub_sagas(graph)[step]
    what = f"runs sub-saga {child.name}" if state == step else f"reverts {child.name}"
    if not nodes:  # a child with nothing to undo: its undo is an empty walk
        return [f'    state "{state} ({what}: nothing to undo)" as {ids[state]}']
    lines = [f'    state "{state} ({what})" as {ids[state]} {{']
    for node in nodes:
        lines.append(f'        state "{node}" as {ids[inner(step, node)]}')
    chain = [ids[inner(step, n)] for n in nodes]
    first = "start" if state == step else "revert"
    lines.append(f"        [*] --> {chain[0]} : {first}")
    for a, b in itertools.pairwise(chain):
        lines.append(f"        {a} --> {b}")
    return [*lines, f"        {chain[-1]} --> [*]", "    }"]


def _child_marks(step: str, trace: Trace | None) -> dict[str, str]:
    """The classes of a child's states, from its own record."""
    if trace is None:
        return {}
    marks = {inner(step, s): "visited" for s in trace.visited}
    marks[inner(step, trace.current)] = "current"
    if trace.stuck is not None and trace.is_stuck:
        marks[inner(step, trace.stuck)] = "stuck"
    return marks


def _ids(states: Sequence[str]) -> dict[str, str]:
    """Mermaid identifiers for state names ('.' and '-' are not allowed in one)."""
    ids: dict[str, str] = {}
    for state in states:
        ident = re.sub(r"\W", "_", state)
        while ident in ids.values():
            ident += "_"
        ids[state] = ident
    return ids


def _text(text: str) -> str:
    """A note Mermaid will not mistake for syntax (a colon ends its parse: a ratio sign
    looks the same)."""
    return re.sub(r"[;#{}<>\"]", " ", text).replace(":", "\u2236")
