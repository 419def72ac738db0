"""Parallel groups in the DOT drawing: a cluster with a fork bar, the branches side by
side, and a join bar; its compensation the same upside down in the mirror column.

The bars carry the group's name (see `lanes`), so the edges of the machine connect to
them as to any state; only the clusters and the edges inside them are drawn here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..graph import Graph
from .lanes import LANE, branch_nodes, group_of, join, lane_edges
from .model import policy
from .trace import Trace

BAR = "#333333"
Style = Callable[[Graph, str, "Trace | None"], dict[str, str]]


def cluster(name: str) -> str:
    """The cluster a group (or its compensation) is drawn in: an edge's `ltail` names it."""
    return f"cluster_{name}"


def draw_group(g: Any, graph: Graph, state: str, trace: Trace | None, node: Style,
               edge: Callable[..., None]) -> None:
    """`state` (a group, or its compensation) as a cluster: bars, branches, the edges between.

    The bar the saga enters by carries the state's name (the fork of a group, the bottom
    bar of its compensation); `node(graph, name, trace)` styles a branch as any state, and
    `edge(g, keys, events, trace, **attrs)` draws (and marks) an edge.
    """
    group = group_of(graph, state)
    assert group is not None
    forward = state == group
    nodes = branch_nodes(graph, state)
    what = "its branches run at once" if forward else "the branches are undone at once"
    idle = [b for b in graph.lanes[group] if graph.defs[b].step.compensation is None]
    if idle and not forward:
        what += f"; nothing to undo for {', '.join(idle)}"
    live = trace is not None and trace.current == state
    tip = "; ".join([f"{state}: {what}", *([] if trace is None else trace.notes(state))])
    with g.subgraph(name=cluster(state)) as c:
        c.attr(label="", style="rounded,dashed", color="#1a1a1a" if live else "#999999",
               penwidth="2" if live else "1", tooltip=tip, margin="8")
        span = 0.75 * sum(_wide(graph, n, trace) for n in nodes)  # short of the branches'
        width = f"{max(0.4 + 0.07 * len(state), span):.2f}"  # and never of its name
        c.node(state, label=state, shape="box", style="filled", color=BAR, fillcolor=BAR,
               fontcolor="white", fontsize="9", width=width, height="0.2", fixedsize="true",
               tooltip=tip)
        done = "every branch done: go on" if forward else "all undone: walk on back"
        c.node(join(state), label="", shape="box", style="filled", color=BAR, fillcolor=BAR,
               width=width, height="0.06", fixedsize="true", tooltip=f"{state}: {done}")
        # the bars one above the other, in the column (a `group` would pull the branches
        # aside): the branches hang between them
        c.edge(state, join(state), style="invis", weight="20")
        for name in nodes:
            c.node(name, **node(graph, name, trace))
        for source, dest, _ in lane_edges(graph, state):
            edge(c, [(source, dest, LANE)], [], trace, weight="4")


def _wide(graph: Graph, name: str, trace: Trace | None) -> float:
    """About how wide a branch is drawn, in inches, so that the bars span the branches."""
    lines = [name, *policy(graph, name), *([] if trace is None else trace.notes(name))]
    return 0.4 + 0.07 * max(len(line) for line in lines)
