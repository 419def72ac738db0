"""The DOT drawing: forward states in a column, their compensations beside them.

`compensated` tops the compensation column, where the walk back ends; `completed` ends
the forward column; `failed` hangs off a rail that every compensation state is tied to.
A parallel group is a fork and a join with its branches between (`forks`), mirrored.
A step that runs a sub-saga holds the child machine, its undo the child's mirror
(`subsagas`): the parent's column runs straight through the child.
An edge back up the column (a loop) runs down its left side, out of the layout's way.
Edges are labelled with the machine's own events only: statesaga's (succeed, fail,
timeout, abort, retry) are told by line style, and named once in the legend.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..graph import (
    FAILURE,
    FORWARD,
    MIRROR,
    RESERVED_EVENTS,
    RESUME,
    STUCK,
    SUCCEED,
    UNKNOWN,
    Graph,
    mirror,
)
from ..orchestrator_children import sub_sagas
from ..records import COMPENSATED, COMPLETED, FAILED
from .forks import BAR, cluster, draw_group
from .lanes import LANE, branch_nodes, group_of, join
from .model import START, Key, column, drawn_states, edges, policy, short
from .subsagas import SUB_FILL, child_traces, draw_sub_saga, levels, sub_of, tail
from .trace import Trace

if TYPE_CHECKING:
    from ..definition import SagaStateMachine
    from ..records import SagaRecord

START_NODE = "~start"  # "~" cannot occur in a state name: these never clash with one
FOOT = "~foot"  # the foot of the mirror column, on the last rank
TAKEN_WIDTH = "3"  # the pen width of an edge the saga took; nothing else is this wide
HIGHLIGHT = "#c2185b"  # the compensation that would run if the saga failed now
GREY = "#666666"
RED = "#b3261e"
# Kinds differ by line style, not only by colour, so that a drawing survives grey print.
STYLES: dict[str, dict[str, str]] = {
    START: {"style": "solid"},
    FORWARD: {"style": "solid"},
    FAILURE: {"style": "dashed", "color": RED, "fontcolor": RED},
    UNKNOWN: {"style": "dotted", "color": "#a15c00", "fontcolor": "#a15c00"},
    MIRROR: {"style": "solid", "color": "#1f5aa6:invis:#1f5aa6", "fontcolor": "#1f5aa6"},
    STUCK: {"style": "dashed", "color": GREY, "arrowhead": "tee"},
    RESUME: {"style": "dashed", "color": GREY, "dir": "back", "arrowtail": "empty"},
    LANE: {"style": "solid", "color": "#333333", "arrowsize": "0.5"},
}
BUILT_IN = RESERVED_EVENTS | {SUCCEED}  # events the legend names: never an edge label
LEGEND = (
    (FORWARD, "step done (succeed)"),
    (FAILURE, "step failed: undo the steps before (fail)"),
    (UNKNOWN, "outcome unknown: undo the step too (timeout, abort)"),
    (MIRROR, "undone: walk back (succeed)"),
    (STUCK, "compensation gave up: stuck (fail)"),
    (RESUME, "a person retries it (retry)"),
)
FILLS = {COMPLETED: "#dff0d8", COMPENSATED: "#dce7f5", FAILED: "#f6dcdc"}


def digraph(machine: SagaStateMachine, record: SagaRecord | None, legend: bool = True,
            children: Iterable[SagaRecord] = ()) -> Any:
    """The `graphviz.Digraph` of the machine, with `record`'s saga drawn on it (and the
    records of its sub-sagas, `children`, inside their steps)."""
    import graphviz

    graph = machine.graph
    trace = Trace(machine, record) if record is not None else None
    traces = child_traces(machine, record, children)
    subs = sub_sagas(graph)
    title = f"saga {machine.name} \u00b7 version {machine.version}"
    if record is not None:
        title = f"{record.saga_id}: {record.status.value} ({title})"
        if record.error is not None:
            title += "\n" + short(record.error, 90)
        title = _plain(title)  # the saga id and the error are anybody's text
    g = graphviz.Digraph(machine.name, graph_attr={
        "label": title, "labelloc": "t", "fontname": "Helvetica", "fontsize": "13",
        "newrank": "true", "nodesep": "0.3", "ranksep": "0.3", "size": "7.5,10",
        "tooltip": title,
    }, node_attr={"shape": "box", "style": "rounded", "fontname": "Helvetica",
                  "fontsize": "11", "height": "0.4"},
        edge_attr={"fontname": "Helvetica", "fontsize": "9", "arrowsize": "0.7"})
    if graph.lanes or subs:
        g.attr(compound="true")  # an edge out of a group may start at its cluster's border
    order = [START_NODE, *column(graph), COMPLETED]
    comps = [mirror(s) for s in order[1:-1] if graph.compensable(s)]  # top to bottom
    g.node(START_NODE, label="", shape="point", width="0.15", tooltip="start")
    for state in drawn_states(graph):
        if group_of(graph, state) is not None:
            draw_group(g, graph, state, trace, _node, _edge)
        elif state in subs:
            draw_sub_saga(g, graph, state, trace, traces, _node, _edge)
        elif sub_of(graph, state) is None:
            g.node(state, **_node(graph, state, trace))
    for m in comps:
        g.node(_rail(m), label="", shape="point", width="0.05", color=GREY, group="rail",
               tooltip=f"{m} gets stuck in failed when it gives up")
    # The layout: the start beside `compensated`, each compensation level with its step.
    _same_rank(g, [START_NODE, COMPENSATED])
    for state in order[1:-1]:
        _level(g, graph, state)
    if comps and (graph.lanes or subs):  # clusters loosen the ranks' order: the rail stays
        # right of the mirror column only if `failed`, where it ends, is right of its foot
        g.node(FOOT, label="", shape="point", style="invis", width="0", group="mirror")
        g.edge(comps[-1], FOOT, style="invis", weight="10")
        _same_rank(g, [COMPLETED, FOOT, FAILED])
    else:
        _same_rank(g, [COMPLETED, FAILED] if comps else [COMPLETED])
    drawn = {(a, b) for a, b, kind, _ in edges(graph) if kind == FORWARD}
    for a, b in itertools.pairwise(order[1:]):
        if (a, b) not in drawn:  # branches: the column keeps its order all the same
            g.edge(tail(graph, a), b, style="invis", weight="10")
    _edge(g, [("", graph.initial, START)], ["start"], trace, weight="10")
    drawn_edges = edges(graph)
    fails = {(s, d) for s, d, kind, _ in drawn_edges if kind == FAILURE}
    for source, dest, kind, events in drawn_edges:
        if kind == UNKNOWN and (source, dest) in fails:
            continue  # nothing of its own to undo: an unknown outcome walks back as a failure
        rank = {"constraint": "false"} if kind in (FAILURE, UNKNOWN) else {"weight": "10"}
        start = tail(graph, source)
        if kind in (FAILURE, UNKNOWN) and (source in graph.lanes or source in subs):
            rank["ltail"] = cluster(source)  # any branch of the group: from its border,
            start = tail(graph, source) if dest == mirror(source) else source  # the nearer
        if kind in (FAILURE, UNKNOWN) and _row(graph, order, dest) > order.index(source):
            rank["headport"] = "n"  # a loop: down to an earlier visit, from above its label
        if kind == FORWARD and order.index(dest) <= order.index(source):
            rank = {"weight": "1", "tailport": "w", "headport": "w"}  # a loop: on the left
        elif kind == FORWARD and order.index(dest) != order.index(source) + 1:
            rank = {"weight": "1"}  # a branch skipping states: let the column stay straight
        elif kind == MIRROR and _row(graph, order, dest) >= _row(graph, order, source):
            # a loop undone: an earlier visit of a state later in the column, on the right
            rank = {"weight": "1", "tailport": "e", "headport": "e",
                    "tooltip": f"{source}, then {dest}: each visit is undone, newest first"}
        keys = [(source, dest, kind)] + ([(source, dest, UNKNOWN)] if kind == FAILURE else [])
        _edge(g, keys, events, trace, start=start, **rank)
    # The stuck rail: a stub from each compensation, then down into `failed`.
    for i, m in enumerate(comps):
        stub = {"ltail": cluster(m)} if group_of(graph, m) is not None else {}
        _rail_edge(g, branch_nodes(graph, m)[-1] if stub else m, _rail(m), trace, {m},
                   **STYLES[RESUME], **stub)
        if i + 1 < len(comps):
            _rail_edge(g, _rail(m), _rail(comps[i + 1]), trace, set(comps[: i + 1]),
                       dir="none", weight="10")
    if comps:
        _rail_edge(g, _rail(comps[-1]), FAILED, trace, set(comps), **STYLES[STUCK],
                   weight="10")
    if legend:
        _legend(g, trace, below=len(order) <= 10, groups=bool(graph.lanes), subs=bool(subs))
    return g


def _node(graph: Graph, state: str, trace: Trace | None) -> dict[str, str]:
    forward = state in graph.defs or state == COMPLETED
    attrs = {"group": "forward" if forward else "mirror", "tooltip": state}
    if state not in graph.states:  # a branch, or its compensation: beside its siblings
        del attrs["group"]
    notes, happened = policy(graph, state), []
    if state == FAILED:
        notes = ["stuck: a person fixes", "the cause, then retries"]
        attrs["group"] = "rail"
    fill = FILLS.get(state)
    if trace is not None:
        happened = trace.notes(state)
        notes = notes + trace.counts(state)
        if state in trace.errors:
            attrs["tooltip"] = _plain(f"{state}: {trace.errors[state]}")
        if state in trace.visited:
            fill = fill or "#eeeeee"
        if state == trace.stuck and trace.is_stuck:
            attrs.update(color=RED, penwidth="2")
        if state == trace.current or state in trace.running:
            attrs.update(peripheries="2", penwidth="2")
            fill = "#ffe08a"
    if fill:
        attrs.update(style="rounded,filled", fillcolor=fill)
    if notes or happened:
        lines = "".join(f'<BR/><FONT POINT-SIZE="9" COLOR="{colour}">{html.escape(n)}</FONT>'
                        for colour, group in (("#555555", notes), (RED, happened))
                        for n in group)
        attrs["label"] = f"<{html.escape(state)}{lines}>"
    return attrs


def _edge(g: Any, keys: Sequence[Key], events: Iterable[str], trace: Any,
          start: str | None = None, head: str | None = None, **rank: str) -> None:
    """One drawn edge, standing for the transitions of `keys` (the first one's kind); drawn
    from `start` and to `head` when those are not the states' own nodes (a group's join
    bar, a child's state in its sub-saga step). `trace`: its `taken` and `would` edges."""
    source, dest, kind = keys[0]
    attrs = {**STYLES[kind], "class": kind, **rank}
    own = [e for e in events if e not in BUILT_IN]
    if own:  # a label on a forward edge is a node of the layout, so it gets room; the
        # edges crossing to the mirror column are labelled after routing (xlabel)
        text = " / ".join(own)
        if kind in (START, FORWARD):
            attrs["label"] = text
        else:  # on a white ground, so that no line crossing it strikes it through
            attrs["xlabel"] = (f'<<TABLE BORDER="0" CELLPADDING="1" BGCOLOR="white"><TR><TD>'
                               f"{html.escape(text)}</TD></TR></TABLE>>")
    if trace is not None:
        if trace.would.intersection(keys):
            _highlight(attrs)
        if trace.taken.intersection(keys):
            _taken(attrs)
    g.edge(start or source or START_NODE, head or dest, **attrs)


def _rail_edge(g: Any, tail: str, head: str, trace: Trace | None, users: set[str],
               **attrs: str) -> None:
    """A piece of the stuck rail; `users`: the compensation states whose way to `failed` it is."""
    attrs = {"style": "dashed", "color": GREY, "class": "stuck", **attrs}
    if trace is not None:
        if users & trace.rails_would:
            _highlight(attrs)
        if users & trace.rails_taken:
            _taken(attrs)
    g.edge(tail, head, **attrs)


def _taken(attrs: dict[str, str]) -> None:
    attrs["penwidth"] = TAKEN_WIDTH
    attrs["class"] += " taken"


def _highlight(attrs: dict[str, str]) -> None:
    double = ":invis:" in attrs.get("color", "")
    attrs.update(style="dashed", color=f"{HIGHLIGHT}:invis:{HIGHLIGHT}" if double else HIGHLIGHT,
                 fontcolor=HIGHLIGHT)
    attrs["class"] += " would"


def _plain(text: str) -> str:
    """Text from a saga (an error) as a DOT string: a backslash must not escape the quote."""
    return text.replace("\\", "\\\\")


def _rail(state: str) -> str:
    return f"~rail~{state}"


def _same_rank(g: Any, nodes: Sequence[str], gap: str | None = None, at: int = 0,
               **attrs: str) -> None:
    """Put `nodes` on one rank, left to right; `gap`: room after node `at` (in node gaps)."""
    with g.subgraph() as s:
        s.attr(rank="same")
        for i, (a, b) in enumerate(itertools.pairwise(nodes)):
            s.edge(a, b, style="invis", **({"minlen": gap} if gap and i == at else {}),
                   **attrs)


def _row(graph: Graph, order: Sequence[str], state: str) -> int:
    """Where a compensation state stands in the column (`compensated` at the top)."""
    return 0 if state == COMPENSATED else order.index(graph.undoes[state])


def _level(g: Any, graph: Graph, state: str) -> None:
    """A compensation level with its step, with room between for the failure labels; a
    group's mirror upside down: its join level with the fork, its branches with theirs."""
    m = mirror(state)
    if sub_of(graph, state) is not None:
        levels(lambda nodes, gap: _same_rank(g, nodes, gap=gap), graph, state, _rail(m))
        return
    if state not in graph.lanes:
        if graph.compensable(state):
            _same_rank(g, [state, m, _rail(m)], gap="2")
        return
    branches = branch_nodes(graph, state)  # in order, but free to centre under their fork
    if not graph.compensable(state):
        _same_rank(g, branches)
        return
    _same_rank(g, [state, join(m)], gap="2")
    _same_rank(g, [*branches, *branch_nodes(graph, m), _rail(m)], gap="2",
               at=len(branches) - 1)
    _same_rank(g, [join(state), m], gap="2")


def _legend(g: Any, trace: Trace | None, below: bool, groups: bool, subs: bool) -> None:
    """Line styles explained in one small table, under the drawing or (tall) beside it."""
    rows: list[tuple[dict[str, str], str]] = [(STYLES[k], text) for k, text in LEGEND]
    if groups:
        rows.append(({"bar": "yes"}, "parallel: fork, branches at once, join"))
    if subs:
        rows.append(({"sub": "yes"}, "sub-saga: its machine in the step, its mirror in the undo"))
    if trace is not None:
        rows.append(({"penwidth": TAKEN_WIDTH}, "taken by this saga"))
        if trace.would or trace.rails_would:
            rows.append(({"style": "dashed", "color": HIGHLIGHT}, trace.would_text()))
    cells = [f"<TD>{_sample(style)}</TD><TD ALIGN=\"LEFT\">{html.escape(text)}</TD>"
             for style, text in rows]
    lines = "".join(f"<TR>{''.join(cells[i:i + 2])}</TR>" for i in range(0, len(cells), 2))
    g.node("~legend", shape="plaintext", fontsize="9", tooltip="legend", label=(
        '<<TABLE BORDER="1" STYLE="rounded" COLOR="#aaaaaa" CELLBORDER="0" CELLSPACING="0" '
        f'CELLPADDING="2">{lines}</TABLE>>'))
    if below:  # beneath the steps' column
        g.edge(COMPLETED, "~legend", style="invis")


def _sample(style: dict[str, str]) -> str:
    """A short line drawn as a table cell's border: solid, dashed, dotted, double, or bold."""
    if "sub" in style:  # a sub-saga's cluster
        return (f'<TABLE BORDER="1" STYLE="rounded" COLOR="#8a9bb5" CELLSPACING="0" '
                f'CELLPADDING="0"><TR><TD WIDTH="26" HEIGHT="8" FIXEDSIZE="TRUE" '
                f'BGCOLOR="{SUB_FILL}"></TD></TR></TABLE>')
    if "bar" in style:  # a group's fork or join
        return (f'<TABLE BORDER="0" CELLSPACING="0" CELLPADDING="0"><TR><TD WIDTH="30" '
                f'HEIGHT="4" FIXEDSIZE="TRUE" BGCOLOR="{BAR}"></TD></TR></TABLE>')
    colour = style.get("color", "black").split(":")[0]
    dash = style.get("style", "solid")
    look = f'COLOR="{colour}"' + (f' STYLE="{dash}"' if dash in ("dashed", "dotted") else "")
    width = style.get("penwidth", "1")
    line = (f'<TD WIDTH="30" HEIGHT="4" FIXEDSIZE="TRUE" SIDES="TB" BORDER="1" {look}></TD>'
            if ":invis:" in style.get("color", "") else
            f'<TD WIDTH="30" HEIGHT="{2 * int(width) + 3}" FIXEDSIZE="TRUE" SIDES="B" '
            f'BORDER="{width}" {look}></TD>')
    end = (f'<TD WIDTH="2" HEIGHT="9" FIXEDSIZE="TRUE" SIDES="R" BORDER="1" {look}></TD>'
           if style.get("arrowhead") == "tee" else "")
    return (f'<TABLE BORDER="0" CELLSPACING="0" CELLPADDING="0"><TR>{line}{end}</TR>'
            "</TABLE>")
