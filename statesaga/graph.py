"""Compiles a saga definition into its full graph: checks it, then adds the mirror and terminals.

Every forward state `s` with a compensation gets `compensating_s`. Which mirror state a
failure leads to is decided at run time by the kernel, from the path the saga took (its
undo stack); `transitions` lists every mirror edge that may fire, for introspection and
drawings. `routes` holds the declared transitions the kernel chooses from.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from .records import (
    COMPENSATED,
    COMPLETED,
    FAILED,
    MIRROR_PREFIX,
    TERMINALS,
    Kind,
    SagaStatus,
    Trigger,
    status_of,
)
from .steps import StepSpec, qualified_name

START = ""  # the virtual state before the first one: its "compensation" is `compensated`

SUCCEED, FAIL, TIMEOUT, ABORT, RETRY, RETRY_UNKNOWN, START_EVENT = (
    Trigger.SUCCEED, Trigger.FAIL, Trigger.TIMEOUT, Trigger.ABORT, Trigger.RETRY,
    Trigger.RETRY_UNKNOWN, Trigger.START)
RESERVED_EVENTS = frozenset(t.value for t in Trigger if t is not Trigger.SUCCEED)
UNDO_SOURCE = (Trigger.TIMEOUT, Trigger.ABORT, Trigger.INVALID_RESULT, Trigger.NO_ROUTE,
               Trigger.HOOK_FAILED)  # the source may have happened: it is undone too

# The kinds by their old names, for the drawings.
FORWARD, FAILURE, UNKNOWN, MIRROR, STUCK, RESUME, SELF = (
    Kind.FORWARD, Kind.FAILURE, Kind.UNKNOWN, Kind.MIRROR, Kind.STUCK, Kind.RESUME, Kind.RETRY)

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
    kind: Kind = Kind.FORWARD


@attrs.frozen
class Edge:
    """A transition as the user declared it, with its guards and callbacks.

    Callbacks run as `transitions` runs them: `conditions` (all true) and `unless` (all
    false) first, then `before`, the source's on_exit, `action`, the dest's on_enter, `after`.
    """

    source: str
    dest: str
    event: str
    action: Callable[..., Any] | None = None
    guard: Callable[..., Any] | None = None
    conditions: tuple[Callable[..., Any], ...] = ()
    unless: tuple[Callable[..., Any], ...] = ()
    before: tuple[Callable[..., Any], ...] = ()
    after: tuple[Callable[..., Any], ...] = ()
    checks: tuple[tuple[Callable[..., Any], bool], ...] = attrs.field(
        init=False, eq=False, repr=False,
        default=attrs.Factory(lambda e: _checks(e), takes_self=True))
    """(guard, the answer it must give) in the order they are asked: built once."""
    bare: bool = attrs.field(init=False, eq=False, repr=False, default=attrs.Factory(
        lambda e: not (e.before or e.after or e.action), takes_self=True))
    """No callback of its own runs when it is taken."""


def _checks(e: Edge) -> tuple[tuple[Callable[..., Any], bool], ...]:
    first = () if e.guard is None else ((e.guard, True),)
    return first + tuple((c, True) for c in e.conditions) + tuple((u, False) for u in e.unless)


@attrs.frozen
class StateDef:
    """A forward state as the user declared it (a step, or an explicit state)."""

    name: str
    step: StepSpec
    on_enter: Callable[..., Any] | None = None
    on_exit: Callable[..., Any] | None = None
    parallel: bool = False  # a parallel group: its branches are the steps naming it
    group: str | None = None  # the parallel group this step is a branch of

    @property
    def runs(self) -> bool:
        """Does a saga in this state run something of its own (a step, or a group's)?"""
        return self.step.action is not None or self.parallel


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
    kinds: Mapping[tuple[str, str, str], Kind]
    routes: Mapping[tuple[str, str], tuple[Edge, ...]]  # declared edges by (source, event)
    undoable: frozenset[str]  # forward states with a compensation
    undoes: Mapping[str, str]  # mirror state -> the forward state it undoes
    straight: Mapping[str, tuple[str, ...]]  # the undo stack on the first way to each state
    hooked: frozenset[str]  # forward states with an on_enter or on_exit
    waiting: frozenset[str]  # forward states that wait for an outside event
    statuses: Mapping[str, SagaStatus]  # the coarse status of a saga in each state
    replies: Mapping[str, tuple[str, str | None]]  # a mirror whose command is confirmed:
    # (the event that confirms it, the one that refuses it)
    lanes: Mapping[str, tuple[str, ...]]  # a parallel group -> its branches, in order

    @property
    def initial(self) -> str:
        return self.forward[0]

    def compensable(self, state: str) -> bool:
        return state in self.undoable

    def waits(self, state: str) -> bool:
        """Does a saga in `state` wait for an outside event (nothing of its own to run)?"""
        return state in self.waiting


def compile_graph(
    name: str, defs: Sequence[StateDef], edges: Sequence[Edge], problems: Iterable[str]
) -> tuple[Graph | None, list[str]]:
    """Check the definition and build its graph; returns (graph, []) or (None, every problem)."""
    errors = list(problems)
    everything = {d.name: d for d in defs}
    lanes = {d.name: tuple(b.name for b in defs if b.group == d.name)
             for d in defs if d.parallel}
    defs = [d for d in defs if d.group is None]  # the chain: branches live in their group
    by_name = {d.name: d for d in defs}
    forward = tuple(by_name)
    if not forward:
        errors.append("it has no states: add steps with `machine.step(...)` or states with "
                      "`machine.add_state(...)`")
        return None, errors
    edges = list(edges) + _auto_links(defs, edges)
    errors += _check_groups(lanes, edges)
    branches = {b for bs in lanes.values() for b in bs}
    edges = [e for e in edges if e.source not in branches and e.dest not in branches]
    edge_errors = _check_edges(by_name, edges)
    errors += [msg for _, msg in edge_errors]
    bad = {id(e) for e, _ in edge_errors}
    edges = [e for e in edges if id(e) not in bad]
    succ: dict[str, list[str]] = {s: [] for s in forward}
    for e in edges:
        if e.dest in by_name:
            succ[e.source].append(e.dest)
    errors += _check_shape(forward, succ, edges, by_name)
    if errors:
        return None, errors
    undoable = frozenset(
        s for s in forward if by_name[s].step.compensation is not None
        or any(everything[b].step.compensation is not None for b in lanes.get(s, ())))
    near = _nearest_compensable(forward, succ, undoable)
    transitions = _all_transitions(forward, edges, near, by_name, undoable)
    mirrors = tuple(mirror(s) for s in forward if s in undoable)
    routes: dict[tuple[str, str], tuple[Edge, ...]] = {}
    for e in edges:
        routes[(e.source, e.event)] = (*routes.get((e.source, e.event), ()), e)
    graph = Graph(name=name, forward=forward, states=forward + mirrors + TERMINALS,
                  transitions=tuple(transitions), defs=everything, edges=tuple(edges),
                  version=_version(name, by_name, transitions),
                  kinds={(t.source, t.event, t.dest): t.kind for t in transitions},
                  routes=routes, undoable=undoable, undoes={mirror(s): s for s in undoable},
                  straight=_straight(forward, succ, undoable),
                  hooked=frozenset(d.name for d in defs if d.on_enter or d.on_exit),
                  waiting=frozenset(d.name for d in defs if not d.runs),
                  statuses={s: status_of(s) for s in forward + mirrors + TERMINALS},
                  replies={mirror(d.name): (d.step.confirm, d.step.refuse) for d in defs
                           if d.name in undoable and d.step.confirm is not None},
                  lanes=lanes)
    return graph, []


def _auto_links(defs: Sequence[StateDef], edges: Sequence[Edge]) -> list[Edge]:
    """A step with no declared `succeed` transition goes on to the next state, or completes."""
    declared = {e.source for e in edges if e.event == SUCCEED}
    defs = [d for d in defs if d.group is None]  # a group's branches end with their group
    links = []
    for i, d in enumerate(defs):
        if d.runs and d.name not in declared:
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
        if prior is not None and not prior.checks:
            errors.append((e, f"{where}: can never fire, {e.source!r} -> {prior.dest!r} on the "
                              "same event has no guard and is tried first; give it a guard"))
        seen[(e.source, e.event)] = e
    return errors


def _check_shape(
    forward: tuple[str, ...], succ: Mapping[str, list[str]], edges: Sequence[Edge],
    by_name: Mapping[str, StateDef],
) -> list[str]:
    errors = []
    reached = _reach(forward[0], succ)
    guarded = {e.source for e in edges if e.event == SUCCEED and e.checks}
    for i, s in enumerate(forward):
        if s not in reached:
            hint = "add a transition into it, or remove it"
            before = forward[i - 1] if i else None
            if before in guarded and not any(e.source == before and e.dest == s
                                             for e in edges):
                hint = (f"{before!r} has a guarded 'succeed' transition, which replaces its "
                        f"implicit one to {s!r}: add `add_transition({before!r}, {s!r}, "
                        "'succeed')` as its default (the last one, without a guard)")
            errors.append(f"state {s!r} is unreachable from the initial state {forward[0]!r}: "
                          + hint)
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
    automatic = {s: [e.dest for e in edges if e.source == s and e.dest in by_name
                     and by_name[s].runs and e.event == SUCCEED]
                 for s in forward}
    cycle = _find_cycle(forward, automatic)
    if cycle:
        errors.append("steps form a loop with no event in it: " + " -> ".join(cycle) +
                      " would run forever; a loop must pass through a state that waits for "
                      "an event (add_state), or repeat work with Retry instead")
    return errors


def _check_groups(lanes: Mapping[str, tuple[str, ...]], edges: Sequence[Edge]) -> list[str]:
    """A branch is a step of its own: nothing declared leads into or out of it, and its
    group goes on by itself (no guarded exit: every branch's result is the group's)."""
    errors = []
    branches = {b: g for g, bs in lanes.items() for b in bs}
    for e in edges:
        for end in (e.source, e.dest):
            if end in branches:
                errors.append(f"transition {e.source!r} -> {e.dest!r}: {end!r} is a branch of "
                              f"parallel group {branches[end]!r}; a branch runs with its group, "
                              "so connect the group instead")
        if e.source in lanes and e.checks:
            errors.append(f"parallel group {e.source!r} cannot have a guarded exit: it goes on "
                          "when every branch succeeded; guard the step after it instead")
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
    forward: tuple[str, ...], succ: Mapping[str, list[str]], undoable: frozenset[str]
) -> dict[str, list[str]]:
    """For each state, the compensable states that may have completed last before it.

    A fixpoint, so that loops are covered; newest (latest declared) first.
    """
    near: dict[str, set[str]] = {s: set() for s in forward}
    near[forward[0]].add(START)
    changed = True
    while changed:
        changed = False
        for s in forward:
            own = {s} if s in undoable else near[s]
            for n in succ[s]:
                if not own <= near[n]:
                    near[n] |= own
                    changed = True
    order = {s: i for i, s in enumerate(forward)}
    order[START] = -1
    return {s: sorted(v, key=order.__getitem__, reverse=True) for s, v in near.items()}


def _straight(forward: tuple[str, ...], succ: Mapping[str, list[str]],
              undoable: frozenset[str]) -> dict[str, tuple[str, ...]]:
    """The undo stack of a saga that reached each state the first way (declaration order):
    what `handle_event`, which knows no history, assumes."""
    out: dict[str, tuple[str, ...]] = {forward[0]: ()}
    todo = [forward[0]]
    while todo:
        s = todo.pop(0)
        undo = out[s] + ((s,) if s in undoable else ())
        for n in succ[s]:
            if n not in out:
                out[n] = undo
                todo.append(n)
    return out


def _all_transitions(
    forward: tuple[str, ...],
    edges: Sequence[Edge],
    near: Mapping[str, list[str]],
    by_name: Mapping[str, StateDef],
    undoable: frozenset[str],
) -> list[TransitionInfo]:
    out: list[TransitionInfo] = []
    for e in edges:
        if e.dest == COMPENSATED:
            out += [TransitionInfo(e.source, mirror(x), e.event, Kind.FAILURE)
                    for x in near[e.source]]
        else:
            out.append(TransitionInfo(e.source, e.dest, e.event, Kind.FORWARD))
    guarded = {e.source for e in edges if e.event == SUCCEED and e.checks}
    for s in forward:
        d = by_name[s]
        own = [s] if s in undoable else near[s]
        failing = near[s] + ([s] if d.parallel and s in undoable else [])  # a branch done
        out += [TransitionInfo(s, mirror(x), FAIL, Kind.FAILURE) for x in failing]
        undo_events: list[str] = [TIMEOUT, ABORT]
        if d.parallel:
            out += [TransitionInfo(s, s, SUCCEED, Kind.LANE)]
        if d.runs:
            undo_events.append(Trigger.INVALID_RESULT)
            if s in guarded:
                undo_events.append(Trigger.NO_ROUTE)
        out += [TransitionInfo(s, mirror(x), ev, Kind.UNKNOWN) for ev in undo_events
                for x in own]
        if d.runs:
            out += [TransitionInfo(s, s, RETRY, Kind.RETRY),
                    TransitionInfo(s, s, RETRY_UNKNOWN, Kind.RETRY)]
    for s in forward:
        if s not in undoable:
            continue
        m = mirror(s)
        out += [TransitionInfo(m, mirror(x), SUCCEED, Kind.MIRROR) for x in near[s]]
        if by_name[s].parallel:
            out += [TransitionInfo(m, m, SUCCEED, Kind.LANE)]
        confirm, refuse = by_name[s].step.confirm, by_name[s].step.refuse
        if confirm is not None:
            out += [TransitionInfo(m, m, Trigger.SENT, Kind.RETRY)]
            out += [TransitionInfo(m, mirror(x), confirm, Kind.MIRROR) for x in near[s]]
            out += [TransitionInfo(m, FAILED, e, Kind.STUCK) for e in (refuse, TIMEOUT) if e]
        out += [TransitionInfo(m, m, RETRY, Kind.RETRY),
                TransitionInfo(m, m, RETRY_UNKNOWN, Kind.RETRY),
                TransitionInfo(m, FAILED, FAIL, Kind.STUCK),
                TransitionInfo(FAILED, m, RETRY, Kind.RESUME)]
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
        "transitions": sorted([t.source, t.dest, t.event, t.kind.value] for t in transitions),
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
