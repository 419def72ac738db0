"""Parallel groups as drawn: a fork bar, the branches side by side, a join bar; mirrored.

A group `book` is drawn as the bar `book` (the fork: every edge into the group ends there),
its branches under it by their own names, and the bar `~join~book` (every edge out of the
group starts there). Its compensation `compensating_book` is the same upside down, as the
saga walks back up: the bar `compensating_book` below (where the walk comes in), each
branch's compensation `compensating_<branch>`, and `~join~compensating_book` above. No
state can clash with these names: branches are not states, and "~" is never in a name.
"""

from __future__ import annotations

from ..graph import Graph, mirror
from ..records import Kind

Key = tuple[str, str, str]  # a drawn edge: (source, dest, kind)
LANE = Kind.LANE.value  # the kind of an edge inside a group: fork to branch, branch to join


def join(state: str) -> str:
    """The bar a group (or its compensation) is left from."""
    return f"~join~{state}"


def group_of(graph: Graph, state: str) -> str | None:
    """The parallel group `state` is, or is the compensation of; None for any other state."""
    group = graph.undoes.get(state, state)
    return group if group in graph.lanes else None


def undoable_branches(graph: Graph, group: str) -> list[str]:
    """The branches of `group` with a compensation, in order: its mirror runs those."""
    return [b for b in graph.lanes[group] if graph.defs[b].step.compensation is not None]


def branch_nodes(graph: Graph, state: str) -> list[str]:
    """The nodes between the bars of `state` (a group, or its compensation), left to right."""
    group = group_of(graph, state)
    if group is None:
        return []
    if state == group:
        return list(graph.lanes[group])
    return [mirror(b) for b in undoable_branches(graph, group)]


def node_of(graph: Graph, state: str, step: str | None) -> str:
    """The node an attempt in `state` of `step` is drawn on: a branch's (or its
    compensation's) own when `step` is a branch of the group `state` is in, else `state`."""
    group = group_of(graph, state)
    if group is None or step is None or step not in graph.lanes[group]:
        return state
    return step if state == group else mirror(step)


def tail(graph: Graph, state: str) -> str:
    """The node an edge leaving `state` is drawn from: a group's join bar, or the state."""
    return join(state) if group_of(graph, state) is not None else state


def lane_edges(graph: Graph, state: str) -> list[Key]:
    """The edges inside `state` (a group, or its compensation): fork to each branch, each
    branch to the join."""
    return [key for node in branch_nodes(graph, state)
            for key in ((state, node, LANE), (node, join(state), LANE))]


def lane_keys(state: str, node: str) -> set[Key]:
    """The two edges of one branch of `state`: in from the fork, out to the join."""
    return {(state, node, LANE), (node, join(state), LANE)}
