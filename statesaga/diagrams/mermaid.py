"""The Mermaid drawing: a `stateDiagram-v2` for Markdown, where graphviz does not render.

A parallel group (and its compensation) is a composite state holding a `<<fork>>`, its
branches and a `<<join>>`; the machine's edges connect to the composite.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..records import COMPENSATED, COMPLETED, FAILED
from .lanes import branch_nodes, group_of
from .model import drawn_states, edges, mirrors, policy
from .trace import Trace

if TYPE_CHECKING:
    from ..definition import SagaStateMachine
    from ..graph import Graph
    from ..records import SagaRecord

FORK_JOIN = ("_fork", "_join")  # a group's bars, named after it

CLASSES = ("    classDef visited fill:#eeeeee",
           "    classDef current fill:#ffe08a,stroke-width:3px",
           "    classDef stuck fill:#f6dcdc,stroke:#b3261e,stroke-width:3px")


def to_mermaid(machine: SagaStateMachine, record: SagaRecord | None = None) -> str:
    """The machine as a Mermaid state diagram; with `record`, that saga's states marked."""
    graph = machine.graph
    trace = Trace(machine, record) if record is not None else None
    states = drawn_states(graph)
    inner = {s: branch_nodes(graph, s) for s in states if group_of(graph, s) is not None}
    ids = _ids([*states, *(n for nodes in inner.values() for n in nodes),
                *(f"{s}{end}" for s in inner for end in FORK_JOIN)])
    lines = ["stateDiagram-v2", "    direction TB"]
    for state in states:
        if state in inner:
            lines += _composite(graph, state, inner[state], ids, trace)
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
        marked = {trace.current: "current"}
        if trace.stuck is not None and trace.is_stuck:
            marked[trace.stuck] = "stuck"
        marked |= dict.fromkeys(trace.running, "current")
        for state in ids:
            cls = marked.get(state, "visited" if state in trace.visited else None)
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
