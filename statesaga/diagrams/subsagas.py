"""Sub-sagas as drawn: the child machine inside its step, its mirror inside the step's undo.

A step `pay` that runs the machine `payment` as the child saga "<parent id>/pay" is a
cluster in the forward column: the step's own node `pay` on top, then the child's forward
states as `pay/<state>` (a "/" is never in a state name, so these never clash), down to
`pay/completed`, from which the parent goes on. Its compensation `compensating_pay` is a
cluster in the mirror column, the child's mirror upside down as the parent walks back up:
`compensating_pay` at the bottom (where the walk comes in), which reverts the child along
its own mirror `pay/compensating_<state>`, up to `pay/compensated`, from which the parent
walks on. Each child state is level with the one it undoes, as in the parent.

One level is drawn: in the child, a parallel group is one box and a sub-saga of its own
one state (their drawing is the child machine's). With the child's record (`children=` of
`to_dot`), the child's path, failures and current state are marked as the parent's are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..exceptions import SagaError
from ..graph import FAILURE, MIRROR, UNKNOWN, Graph, mirror
from ..orchestrator_children import sub_sagas
from ..records import COMPENSATED, COMPLETED
from .lanes import tail as lane_tail
from .model import START, Key, column, edges
from .trace import Trace

if TYPE_CHECKING:
    from ..definition import SagaStateMachine
    from ..records import SagaRecord

Style = Callable[[Graph, str, "Trace | None"], dict[str, str]]
SUB_FILL = "#f7f9fc"  # the clusters' ground: a saga of its own, inside this one


def sub_of(graph: Graph, state: str) -> str | None:
    """The sub-saga step `state` is, or is the compensation of; None for any other state."""
    step = graph.undoes.get(state, state)
    return step if step in sub_sagas(graph) else None


def inner(step: str, state: str) -> str:
    """The node of the child's `state`, drawn inside the step `step`."""
    return f"{step}/{state}"


def cluster(state: str) -> str:
    return f"cluster_{state}"


def tail(graph: Graph, state: str) -> str:
    """The node an edge leaving `state` is drawn from: a sub-saga step's child `completed`
    (its compensation's child `compensated`), a group's join bar, or the state."""
    step = sub_of(graph, state)
    if step is None:
        return lane_tail(graph, state)
    return inner(step, COMPLETED if state == step else COMPENSATED)


def child_traces(machine: SagaStateMachine, record: SagaRecord | None,
                 children: Iterable[SagaRecord]) -> dict[str, Trace]:
    """The child records given, by the step they are the child saga of ("<id>/<step>");
    `SagaError` for one that is no child of `record`."""
    subs = sub_sagas(machine.graph)
    out: dict[str, Trace] = {}
    for child in children:
        parent, _, step = child.saga_id.rpartition("/")
        if record is None:
            raise SagaError(f"saga {child.saga_id!r} is drawn as a sub-saga of no saga: give "
                            "the parent's record too", saga_id=child.saga_id)
        if parent != record.saga_id or step not in subs:
            ids = ", ".join(repr(f"{record.saga_id}/{s}") for s in subs) or "none"
            raise SagaError(f"saga {child.saga_id!r} is not a sub-saga of saga "
                            f"{record.saga_id!r}: its children are {ids}",
                            saga_id=child.saga_id)
        out[step] = Trace(subs[step], child)  # refuses a record of another machine
    return out


def drawable(machine: SagaStateMachine, record: SagaRecord,
             children: Iterable[SagaRecord]) -> list[SagaRecord]:
    """Of `children`, those a drawing puts inside their steps: "<saga id>/<step>" of a
    sub-saga step, run under the machine that step runs (a saga that only looks like a
    child by its id is left out)."""
    subs = sub_sagas(machine.graph)
    out = []
    for child in children:
        parent, _, step = child.saga_id.rpartition("/")
        runs = subs.get(step)
        if parent == record.saga_id and runs is not None and (
                child.name, child.version) == (runs.name, runs.version):
            out.append(child)
    return out


def rows(child: Graph) -> list[tuple[str, str | None]]:
    """The child's forward states top to bottom, each with its compensation (or None)."""
    return [(s, mirror(s) if child.compensable(s) else None) for s in column(child)]


def title(step: str, child: SagaStateMachine, trace: Trace | None,
          record: SagaRecord | None) -> str:
    """The cluster's label: the child saga, and where it is (its machine: without a record)."""
    if trace is not None:
        return f"{trace.record.saga_id}: {trace.record.status.value}"
    return f"{record.saga_id}/{step}" if record is not None else f"sub-saga {child.name}"


def forward_keys(child: Graph) -> list[tuple[str, str, str, list[str]]]:
    """The child's edges inside the forward cluster: its start, and its forward moves."""
    return [("", child.initial, START, ["start"])] + [
        e for e in edges(child) if e[2] == "forward"]


def crossing_keys(child: Graph) -> list[tuple[str, str, str, list[str]]]:
    """The child's failure edges (forward cluster to mirror cluster) and its mirror walk."""
    drawn = edges(child)
    fails = {(s, d) for s, d, kind, _ in drawn if kind == FAILURE}
    return [e for e in drawn if e[2] in (FAILURE, MIRROR)
            or (e[2] == UNKNOWN and (e[0], e[1]) not in fails)]


def revert_target(child: Graph) -> str:
    """Where reverting the completed child starts: the undo of its last compensable state."""
    undoable = [m for _, m in rows(child) if m is not None]
    return undoable[-1] if undoable else COMPENSATED


def would_revert(trace: Trace | None, step: str) -> bool:
    """Would the parent's compensation that runs now (or next) revert this child?"""
    return trace is not None and any(mirror(step) == k[0] for k in trace.would)


def reverted(traces: Mapping[str, Trace], step: str) -> bool:
    """Was the child reverted after it completed (its walk back began at `completed`)?"""
    trace = traces.get(step)
    return trace is not None and any(t.source == COMPLETED for t in trace.record.history)


def revert_key(child: Graph) -> Key:
    return (COMPLETED, revert_target(child), FAILURE)


class _Marks:
    """What `edge` reads of a trace: the child's own, plus the revert the parent would run."""

    def __init__(self, trace: Trace | None, would: set[Key]) -> None:
        self.taken = trace.taken if trace is not None else set()
        self.would = (trace.would if trace is not None else set()) | would


def draw_sub_saga(g: Any, graph: Graph, step: str, trace: Trace | None,
                  traces: Mapping[str, Trace], node: Style, edge: Callable[..., None]) -> None:
    """The step `step` (and its compensation) as two clusters holding the child machine
    and its mirror, and the child's edges; `node` and `edge` are the drawing's own."""
    machine = sub_sagas(graph)[step]
    child = machine.graph
    mine = traces.get(step)
    m = mirror(step)
    record = trace.record if trace is not None else None
    label = title(step, machine, mine, record)
    would: set[Key] = set()
    if would_revert(trace, step) and (mine is None or mine.current == COMPLETED):
        # the parent's undo would revert the child: all of its mirror (a child already
        # undoing, or stuck, shows what it has left on its own)
        would = {revert_key(child)} | {(s, d, k) for s, d, k, _ in crossing_keys(child)
                                       if k == MIRROR}
    marks = _Marks(mine, would)
    for state, name in ((step, cluster(step)), (m, cluster(m))):
        live = trace is not None and trace.current == state
        with g.subgraph(name=name) as c:
            c.attr(label=label if state == step else "", labeljust="l", labelloc="b",
                   fontsize="9", fontcolor="#555555",
                   style="rounded,filled", fillcolor=SUB_FILL,
                   color="#1a1a1a" if live else "#8a9bb5", penwidth="2" if live else "1",
                   tooltip=f"{state}: {label}", margin="8")
            c.node(state, **node(graph, state, trace))
            if state == step:
                states = [s for s, _ in rows(child)] + [COMPLETED]
            else:
                states = [u for _, u in rows(child) if u is not None] + [COMPENSATED]
            for s in states:
                c.node(inner(step, s), **_small(node(child, s, mine), s))
            if state == step:
                for source, dest, kind, events in forward_keys(child):
                    edge(c, [(source, dest, kind)], events, marks,
                         start=inner(step, source) if source else step,
                         head=inner(step, dest), weight="10")
    target = revert_target(child)  # drawn as a walk back, marked as the child's revert
    edge(g, [(m, target, MIRROR), revert_key(child)], [], marks, start=m,
         head=inner(step, target), **STYLE_OF_REVERT)
    for source, dest, kind, events in crossing_keys(child):
        rank = {"constraint": "false"} if kind in (FAILURE, UNKNOWN) else {"weight": "10"}
        keys = [(source, dest, kind)] + ([(source, dest, UNKNOWN)] if kind == FAILURE else [])
        edge(g, keys, events, marks, start=inner(step, source), head=inner(step, dest),
             **rank)


STYLE_OF_REVERT = {"weight": "10", "tooltip": "the parent's undo reverts the child: it walks "
                                              "its own mirror from where it completed"}


def levels(same_rank: Callable[..., None], graph: Graph, step: str, rail: str) -> None:
    """Each child state level with its undo; the step with the child's `compensated`, the
    child's `completed` with the step's undo (and its stuck rail)."""
    child = sub_sagas(graph)[step].graph
    same_rank([step, inner(step, COMPENSATED)], gap="2")
    for s, undo in rows(child):
        if undo is not None:
            same_rank([inner(step, s), inner(step, undo)], gap="2")
    same_rank([inner(step, COMPLETED), mirror(step), rail], gap="2")


def _small(attrs: dict[str, str], state: str) -> dict[str, str]:
    """A child state's node: named for its state (its id is "<step>/<state>"), a size down."""
    return {"label": state, **attrs, "fontsize": "10", "height": "0.3"}
