"""Compiles a saga definition into its full graph: checks it, then adds the mirror and terminals.

Every forward state `s` with a compensation gets `compensating_s`. For every forward
path `A -> ... -> B` through states with nothing to undo, the mirror has
`compensating_B -> compensating_A` (or `-> compensated` when nothing before B undoes).
Which of several mirror edges fires is decided at run time by the path the saga took.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from .records import COMPENSATED, COMPLETED, FAILED, MIRROR_PREFIX, TERMINALS
from .steps import StepSpec, qualified_name

START = ""  # the virtual state before the first one: its "compensation" is `compensated`

# Events the toolkit fires itself; a user's transition may not use them.
SUCCEED, FAIL, TIMEOUT, ABORT, RETRY, RETRY_UNKNOWN, START_EVENT = (
    "succeed", "fail", "timeout", "abort", "retry", "retry_unknown", "start")
RESERVED_EVENTS = frozenset({FAIL, TIMEOUT, ABORT, RETRY, RETRY_UNKNOWN, START_EVENT})

# Kinds of transition, which tell the runtime how the undo stack moves.
FORWARD = "forward"  # the source completed: push it if it has a compensation
FAILURE = "failure"  # the source did not happen: walk back from the last completed state
UNKNOWN = "unknown"  # the source's outcome is unknown (timeout, crash, abort): undo it too
MIRROR = "mirror"  # a compensation succeeded: pop it, walk on
STUCK = "stuck"  # a compensation gave up: the saga needs a person
RESUME = "resume"  # a person retries the stuck compensation
SELF = "self"  # another attempt in the same state
WALKS_BACK = frozenset({FAILURE, UNKNOWN, MIRROR, RESUME})

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,99}$")


def mirror(state: str) -> str:
    """The compensation state of `state` (`compensated` for the virtual start)."""
    return COMPENSATED if state == START else MIRROR_PREFIX + state


@attrs.frozen
class TransitionInfo:
    """One transition of a machine: `event` fired in `source` moves it to `dest`."""

    source: str
    dest: str
    event: str
    kind: str = FORWARD


@attrs.frozen
class Edge:
    """A transition as the user declared it, with its optional action and guard."""

    source: str
    dest: str
    event: str
    action: Callable[..., Any] | None = None
    guard: Callable[..., Any] | None = None


@attrs.frozen
class StateDef:
    """A forward state as the user declared it (a step, or an explicit state)."""

    name: str
    step: StepSpec
    on_enter: Callable[..., Any] | None = None
    on_exit: Callable[..., Any] | None = None


@attrs.frozen
class Graph:
    """The checked, mirrored graph of one definition."""

    name: str
    forward: tuple[str, ...]
    states: tuple[str, ...]
    transitions: tuple[TransitionInfo, ...]
    defs: Mapping[str, StateDef]
    edges: tuple[Edge, ...]
    version: str
    kinds: Mapping[tuple[str, str, str], str]

    @property
    def initial(self) -> str:
        return self.forward[0]

    def compensable(self, state: str) -> bool:
        d = self.defs.get(state)
        return d is not None and d.step.compensation is not None


def compile_graph(
    name: str, defs: Sequence[StateDef], edges: Sequence[Edge], problems: Iterable[str]
) -> tuple[Graph | None, list[str]]:
    """Check the definition and build its graph; returns (graph, []) or (None, every problem)."""
    errors = list(problems)
    by_name = {d.name: d for d in defs}
    forward = tuple(by_name)
    if not forward:
        errors.append("it has no states: add steps with `machine.step(...)` or states with "
                      "`machine.add_state(...)`")
        return None, errors
    edges = list(edges) + _auto_links(defs, edges)
    edge_errors = _check_edges(by_name, edges)
    errors += [msg for _, msg in edge_errors]
    bad = {id(e) for e, _ in edge_errors}
    edges = [e for e in edges if id(e) not in bad]
    succ: dict[str, list[str]] = {s: [] for s in forward}
    for e in edges:
        if e.dest in by_name:
            succ[e.source].append(e.dest)
    errors += _check_shape(forward, succ, edges)
    if errors:
        return None, errors
    preds = _nearest_compensable(forward, succ, by_name)
    transitions = _all_transitions(forward, edges, preds, by_name)
    mirrors = tuple(mirror(s) for s in forward if by_name[s].step.compensation is not None)
    states = forward + mirrors + TERMINALS
    graph = Graph(name=name, forward=forward, states=states, transitions=tuple(transitions),
                  defs=by_name, edges=tuple(edges),
                  version=_version(name, by_name, transitions),
                  kinds={(t.source, t.event, t.dest): t.kind for t in transitions})
    return graph, []


def _auto_links(defs: Sequence[StateDef], edges: Sequence[Edge]) -> list[Edge]:
    """A step with no declared `succeed` transition goes on to the next state, or completes."""
    declared = {e.source for e in edges if e.event == SUCCEED}
    links = []
    for i, d in enumerate(defs):
        if d.step.action is not None and d.name not in declared:
            dest = defs[i + 1].name if i + 1 < len(defs) else COMPLETED
            links.append(Edge(d.name, dest, SUCCEED))
    return links


def _check_edges(
    by_name: Mapping[str, StateDef], edges: Sequence[Edge]
) -> list[tuple[Edge, str]]:
    errors: list[tuple[Edge, str]] = []
    seen: dict[tuple[str, str], Edge] = {}
    for e in edges:
        where = f"transition {e.source!r} -> {e.dest!r} on {e.event!r}"
        if e.source not in by_name:
            why = ("a terminal or generated state has no transitions of its own"
                   if e.source in TERMINALS or e.source.startswith(MIRROR_PREFIX)
                   else "add that state first, or fix the name")
            errors.append((e, f"{where}: unknown source state {e.source!r} ({why})"))
        if e.dest not in by_name and e.dest not in (COMPLETED, COMPENSATED):
            why = ("it is generated: use dest 'compensated' to fail and compensate"
                   if e.dest == FAILED or e.dest.startswith(MIRROR_PREFIX)
                   else "add that state, or use 'completed' / 'compensated'")
            errors.append((e, f"{where}: unknown dest state {e.dest!r} ({why})"))
        if e.event in RESERVED_EVENTS:
            errors.append((e, f"{where}: event {e.event!r} is reserved (statesaga fires "
                              f"{', '.join(sorted(RESERVED_EVENTS))} itself); pick another name"))
        prior = seen.get((e.source, e.event))
        if prior is not None and prior.guard is None:
            errors.append((e, f"{where}: can never fire, {e.source!r} -> {prior.dest!r} on the "
                              "same event has no guard and is tried first; give it a guard"))
        seen[(e.source, e.event)] = e
    return errors


def _check_shape(
    forward: tuple[str, ...], succ: Mapping[str, list[str]], edges: Sequence[Edge]
) -> list[str]:
    errors = []
    reached = _reach(forward[0], succ)
    for s in forward:
        if s not in reached:
            errors.append(f"state {s!r} is unreachable from the initial state {forward[0]!r}: "
                          "add a transition into it, or remove it")
    pred: dict[str, list[str]] = {s: [] for s in forward}
    pred[COMPLETED] = []
    for e in edges:
        if e.dest in pred:
            pred[e.dest].append(e.source)
    finishing = _reach(COMPLETED, pred)
    for s in forward:
        if s in reached and s not in finishing:
            errors.append(f"state {s!r} has no path to 'completed': add a transition from it "
                          "(an explicit graph ends by transitioning into 'completed')")
    cycle = _find_cycle(forward, succ)
    if cycle:
        errors.append("forward states form a cycle " + " -> ".join(cycle) +
                      ": a saga's forward graph is acyclic; repeat work with Retry instead")
    return errors


def _reach(start: str, succ: Mapping[str, list[str]]) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for n in succ.get(todo.pop(), ()):
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def _find_cycle(forward: tuple[str, ...], succ: Mapping[str, list[str]]) -> list[str]:
    colour: dict[str, int] = dict.fromkeys(forward, 0)
    stack: list[str] = []

    def visit(n: str) -> list[str]:
        colour[n] = 1
        stack.append(n)
        for m in succ[n]:
            if colour[m] == 1:
                return [*stack[stack.index(m):], m]
            if colour[m] == 0 and (found := visit(m)):
                return found
        stack.pop()
        colour[n] = 2
        return []

    for s in forward:
        if colour[s] == 0 and (found := visit(s)):
            return found
    return []


def _nearest_compensable(
    forward: tuple[str, ...], succ: Mapping[str, list[str]], by_name: Mapping[str, StateDef]
) -> dict[str, list[str]]:
    """For each state, the compensable states that may have completed last before it."""
    near: dict[str, list[str]] = {s: [] for s in forward}
    near[forward[0]].append(START)
    for s in _topological(forward, succ):
        own = [s] if by_name[s].step.compensation is not None else near[s]
        for n in succ[s]:
            near[n].extend(x for x in own if x not in near[n])
    order = {s: i for i, s in enumerate(forward)}
    order[START] = -1
    return {s: sorted(v, key=order.__getitem__, reverse=True) for s, v in near.items()}


def _topological(forward: tuple[str, ...], succ: Mapping[str, list[str]]) -> list[str]:
    indeg = dict.fromkeys(forward, 0)
    for s in forward:
        for n in succ[s]:
            indeg[n] += 1
    ready = [s for s in forward if indeg[s] == 0]
    out = []
    while ready:
        s = ready.pop(0)
        out.append(s)
        for n in succ[s]:
            indeg[n] -= 1
            if indeg[n] == 0:
                ready.append(n)
    return out


def _all_transitions(
    forward: tuple[str, ...],
    edges: Sequence[Edge],
    near: Mapping[str, list[str]],
    by_name: Mapping[str, StateDef],
) -> list[TransitionInfo]:
    out: list[TransitionInfo] = []
    for e in edges:
        if e.dest == COMPENSATED:
            out += [TransitionInfo(e.source, mirror(x), e.event, FAILURE) for x in near[e.source]]
        else:
            out.append(TransitionInfo(e.source, e.dest, e.event, FORWARD))
    for s in forward:
        d = by_name[s]
        own = [s] if d.step.compensation is not None else near[s]
        out += [TransitionInfo(s, mirror(x), FAIL, FAILURE) for x in near[s]]
        out += [TransitionInfo(s, mirror(x), TIMEOUT, UNKNOWN) for x in own]
        out += [TransitionInfo(s, mirror(x), ABORT, UNKNOWN) for x in own]
        if d.step.action is not None:
            out += [TransitionInfo(s, s, RETRY, SELF), TransitionInfo(s, s, RETRY_UNKNOWN, SELF)]
    for s in forward:
        if by_name[s].step.compensation is None:
            continue
        m = mirror(s)
        out += [TransitionInfo(m, mirror(x), SUCCEED, MIRROR) for x in near[s]]
        out += [TransitionInfo(m, m, RETRY, SELF), TransitionInfo(m, m, RETRY_UNKNOWN, SELF),
                TransitionInfo(m, FAILED, FAIL, STUCK), TransitionInfo(FAILED, m, RETRY, RESUME)]
    return out


def _version(name: str, defs: Mapping[str, StateDef],
             transitions: Sequence[TransitionInfo]) -> str:
    """A stable hash of the states, transitions and the callables' qualified names."""

    def q(f: object) -> str | None:
        return None if f is None else qualified_name(f)

    doc = {
        "name": name,
        "states": [[d.name, q(d.step.action), q(d.step.compensation), q(d.on_enter),
                    q(d.on_exit)] for d in defs.values()],
        "transitions": sorted([t.source, t.dest, t.event, t.kind] for t in transitions),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def check_name(kind: str, name: object) -> str | None:
    """A problem with a state or event name, or None."""
    if not isinstance(name, str) or not _NAME.match(name):
        return (f"{kind} name {name!r} is not valid: use letters, digits, '_', '.', '-', "
                "starting with a letter or '_', at most 100 characters")
    if kind == "state" and (name in TERMINALS or name.startswith(MIRROR_PREFIX)):
        return (f"state name {name!r} clashes with a generated state (the terminals "
                f"{', '.join(TERMINALS)} and every '{MIRROR_PREFIX}*'): rename it")
    return None


def check_callable(what: str, func: object) -> str | None:
    if func is not None and not callable(func):
        return f"{what} must be callable (a function or coroutine function), not {func!r}"
    return None
