"""The Mermaid drawing: a `stateDiagram-v2` for Markdown, where graphviz does not render."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..records import COMPENSATED, COMPLETED, FAILED
from .model import drawn_states, edges, mirrors, policy
from .trace import Trace

if TYPE_CHECKING:
    from ..definition import SagaStateMachine
    from ..records import SagaRecord

CLASSES = ("    classDef visited fill:#eeeeee",
           "    classDef current fill:#ffe08a,stroke-width:3px",
           "    classDef stuck fill:#f6dcdc,stroke:#b3261e,stroke-width:3px")


def to_mermaid(machine: SagaStateMachine, record: SagaRecord | None = None) -> str:
    """The machine as a Mermaid state diagram; with `record`, that saga's states marked."""
    graph = machine.graph
    trace = Trace(machine, record) if record is not None else None
    ids = _ids(drawn_states(graph))
    lines = ["stateDiagram-v2", "    direction TB"]
    for state, ident in ids.items():
        if ident != state:
            lines.append(f'    state "{state}" as {ident}')
        notes = policy(graph, state) + (trace.notes(state) if trace is not None else [])
        if notes:
            lines.append(f"    {ident} : {_text(' · '.join(notes))}")
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
        for state in ids:
            cls = marked.get(state, "visited" if state in trace.visited else None)
            if cls is not None:
                lines.append(f"    class {ids[state]} {cls}")
    return "\n".join(lines) + "\n"


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
    """A note Mermaid will not mistake for syntax."""
    return re.sub(r"[;#{}<>\"]", " ", text)
