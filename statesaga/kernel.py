"""The rules of a saga, as pure synchronous functions: no asyncio, no store, no I/O.

Given a compiled graph, a saga's position and an event, `decide` returns the move: the
destination, its kind, the saga's position after it. `record` turns a move into the
transition its history keeps and the commit the store writes. Every path that changes
a saga (a step's outcome, an outside event, an ignored event, a timer, abort, retry,
creation) goes through these two, as h11 keeps HTTP/1.1's rules in one state machine
that never touches a socket; the runner only does I/O around them.

`Position` and `Move` are NamedTuples: one of each is built per transition, on the hot
path, where they cost a third of a frozen attrs class.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import NamedTuple

from .graph import UNDO_SOURCE, Edge, Graph, mirror
from .records import (
    COMPENSATED,
    COMPLETED,
    FAILED,
    Kind,
    Transition,
    Trigger,
    status_of,
)
from .stores.base import Commit

_WALKS_BACK = (Kind.FAILURE, Kind.UNKNOWN, Kind.MIRROR, Kind.RESUME)
_RETRIES = (Trigger.RETRY, Trigger.RETRY_UNKNOWN)
_TERMINALS = frozenset((COMPLETED, COMPENSATED, FAILED))


class Lane(NamedTuple):
    """One branch of a parallel group: how far it got, and its attempts."""

    name: str
    status: str  # one of the LANE_* values
    attempt: int = 0
    in_doubt: bool = False


LANE_RUNNING, LANE_DONE, LANE_FAILED = "running", "done", "failed"
LANE_UNDOING, LANE_UNDONE, LANE_SKIPPED = "undoing", "undone", "skipped"


class Position(NamedTuple):
    """Where a saga stands, as far as the rules care."""

    state: str
    undo: tuple[str, ...] = ()  # compensable states done (one entry per visit), oldest first
    attempt: int = 0  # attempts of the current state recorded so far
    in_doubt: bool = False  # one of them has an unknown outcome
    cause: str | None = None  # the error that made the saga walk back
    error: str | None = None  # the saga's error, as its record shows it
    lanes: tuple[Lane, ...] = ()  # in a parallel group (or its compensation): its branches


class Move(NamedTuple):
    """One decided transition: from `source` on `event` to `dest`, and where that leaves it."""

    source: str
    dest: str
    event: str
    kind: Kind
    after: Position
    edge: Edge | None = None  # the declared transition taken, whose callbacks run


def start(graph: Graph) -> Move:
    """The move that creates a saga in its initial state."""
    initial = graph.initial
    return Move("", initial, Trigger.START, Kind.START,
                Position(initial, lanes=_lanes_entering(graph, initial, (), ())))


def assumed(graph: Graph, state: str) -> Position:
    """The position of a saga in `state` whose history is not known: it came the first way
    there (a compensation state: it has undone nothing yet)."""
    forward = graph.undoes.get(state, state)
    undo = graph.straight.get(forward, ())
    return Position(state, (*undo, forward) if forward != state else undo)


def candidates(graph: Graph, state: str, event: str) -> tuple[Edge, ...]:
    """The declared transitions `event` may take from `state`, in the order they are tried
    (the first whose guards pass is taken: `decide(..., edge=it)`)."""
    return graph.routes.get((state, event), ())


def decide(graph: Graph, pos: Position, event: str, edge: Edge | None = None,
           error: str | None = None, lane: str | None = None) -> Move | None:
    """The move `event` makes from `pos` (through `edge`, a candidate whose guards passed;
    for `lane`, a branch of the parallel group it is in); None when nothing moves (the
    event is ignored there). `error`: why, for a failure."""
    state = pos.state
    if event == Trigger.GIVE_UP:  # a write refused, a failure of statesaga's: failed
        return None if state in _TERMINALS else advance(graph, pos, event, Kind.STUCK, FAILED,
                                                         error)
    if state in graph.lanes or graph.undoes.get(state) in graph.lanes:
        return _decide_group(graph, pos, event, error, lane)
    if edge is not None:
        kind = Kind.FAILURE if edge.dest == COMPENSATED else Kind.FORWARD
        return advance(graph, pos, event, kind, None if kind is Kind.FAILURE else edge.dest,
                       error, edge)
    if state in graph.undoes:  # a compensation state
        confirm, refuse = graph.replies.get(state, (None, None))
        if event == Trigger.SUCCEED or (event == confirm and pos.attempt):
            return advance(graph, pos, event, Kind.MIRROR, None, None)
        if event == Trigger.FAIL or (pos.attempt and (event == refuse or (
                confirm is not None and event == Trigger.TIMEOUT))):
            return advance(graph, pos, event, Kind.STUCK, FAILED, error)
        if event in _RETRIES or (event == Trigger.SENT and confirm is not None):
            return advance(graph, pos, event, Kind.RETRY, state, error)
        return None
    if state == FAILED:
        if event == Trigger.RETRY and pos.undo:
            return advance(graph, pos, event, Kind.RESUME, None, None)
        return None
    if state == COMPLETED and event == Trigger.REVERT:  # undo a completed saga
        return advance(graph, pos, event, Kind.FAILURE, None, error)
    if state in (COMPLETED, COMPENSATED) or state not in graph.defs:
        return None
    if event == Trigger.FAIL:
        return advance(graph, pos, event, Kind.FAILURE, None, error)
    if event in UNDO_SOURCE:
        return advance(graph, pos, event, Kind.UNKNOWN, None, error)
    if event in _RETRIES and graph.defs[state].step.action is not None:
        return advance(graph, pos, event, Kind.RETRY, state, error)
    return None


def _decide_group(graph: Graph, pos: Position, event: str, error: str | None,
                  lane: str | None) -> Move | None:
    """A parallel group: each branch moves on its own; the group moves on when all did."""
    state = pos.state
    mine = next((x for x in pos.lanes if x.name == lane), None)
    if state in graph.lanes:  # the branches run
        if mine is not None and mine.status == LANE_RUNNING:
            if event == Trigger.SUCCEED:
                if all(x.status == LANE_DONE for x in pos.lanes if x is not mine):
                    (edge,) = graph.routes[(state, Trigger.SUCCEED)]
                    return advance(graph, pos, event, Kind.FORWARD, edge.dest, None, edge)
                return advance(graph, pos, event, Kind.LANE, state, None, lane=lane)
            if event in _RETRIES:
                return advance(graph, pos, event, Kind.RETRY, state, error, lane=lane)
        if event == Trigger.FAIL and (mine is None or mine.status == LANE_RUNNING):
            return advance(graph, pos, event, Kind.FAILURE, None, error, lane=lane)
        if event in UNDO_SOURCE and (mine is None or mine.status == LANE_RUNNING):
            return advance(graph, pos, event, Kind.UNKNOWN, None, error, lane=lane)
        return None
    if mine is None or mine.status != LANE_UNDOING:  # the compensations run
        return None
    if event == Trigger.SUCCEED:
        if all(x.status != LANE_UNDOING for x in pos.lanes if x is not mine):
            return advance(graph, pos, event, Kind.MIRROR, None, None, lane=lane)
        return advance(graph, pos, event, Kind.LANE, state, None, lane=lane)
    if event == Trigger.FAIL:
        return advance(graph, pos, event, Kind.STUCK, FAILED, error, lane=lane)
    if event in _RETRIES:
        return advance(graph, pos, event, Kind.RETRY, state, error, lane=lane)
    return None


def ignore(pos: Position, event: str) -> Move:
    """An event with no transition from the saga's state: recorded, nothing moves."""
    return Move(pos.state, pos.state, event, Kind.IGNORED, pos)


def advance(graph: Graph, pos: Position, event: str, kind: Kind, dest: str | None,
            error: str | None, edge: Edge | None = None, lane: str | None = None) -> Move:
    """The move of `kind` from `pos` (to `dest`, or None: down the undo stack).

    The one place the undo stack moves: a completed or in-doubt compensable state is
    pushed, a succeeded compensation popped, and a walk back goes to the mirror of the
    newest entry left (`compensated` when none is). A parallel group is one entry: its
    compensation undoes the branches that may have happened, all at once.
    """
    state = pos.state
    grouped = pos.lanes and lane is not None
    if kind is Kind.RETRY:
        if grouped:
            return Move(state, state, event, kind, pos._replace(lanes=_lane(
                pos.lanes, lane, attempt=1, doubt=event == Trigger.RETRY_UNKNOWN)))
        return Move(state, state, event, kind, pos._replace(
            attempt=pos.attempt + 1, in_doubt=pos.in_doubt or event == Trigger.RETRY_UNKNOWN))
    if kind is Kind.IGNORED:
        return Move(state, state, event, kind, pos)
    if kind is Kind.LANE:
        status = LANE_UNDONE if state in graph.undoes else LANE_DONE
        return Move(state, state, event, kind, pos._replace(
            lanes=_lane(pos.lanes, lane, status=status)))
    undo, cause = pos.undo, pos.cause
    carried: tuple[Lane, ...] = ()
    if kind is Kind.FORWARD or kind is Kind.UNKNOWN or (kind is Kind.STUCK
                                                         and state in graph.defs):
        # a forward state given up (its write refused): what ran in it may have happened, so a
        # retry undoes it too, as an unknown outcome would
        if state in graph.lanes and kind is not Kind.FORWARD:
            carried = _to_undo(graph, pos.lanes, None)
            if carried:
                undo = (*undo, state)
        elif state in graph.undoable:
            undo = (*undo, state)
    elif kind is Kind.FAILURE and state in graph.lanes:
        carried = _to_undo(graph, pos.lanes, lane)
        if carried:
            undo = (*undo, state)
    elif kind is Kind.MIRROR:
        undo = undo[:-1]
    if kind is Kind.FAILURE or kind is Kind.UNKNOWN:
        cause = error
    if dest is None:
        dest = mirror(undo[-1]) if undo else COMPENSATED
    lanes = _lanes_entering(graph, dest, carried, pos.lanes if kind is Kind.RESUME else ())
    if kind is Kind.STUCK:
        after = Position(dest, undo, 0, False, cause, error,
                         carried if state in graph.lanes else pos.lanes)
    elif kind in _WALKS_BACK:
        after = Position(dest, undo, 0, False, cause, cause, lanes)
    else:
        after = Position(dest, undo, 0, False, cause, pos.error, lanes)
    return Move(state, dest, event, kind, after, edge)


def _lane(lanes: tuple[Lane, ...], name: str | None, *, status: str | None = None,
          attempt: int = 0, doubt: bool = False) -> tuple[Lane, ...]:
    """`lanes` with branch `name` moved on: a new status, or one more attempt."""
    return tuple(
        x if x.name != name else
        Lane(x.name, status, 0, False) if status is not None else
        Lane(x.name, x.status, x.attempt + attempt, x.in_doubt or doubt) for x in lanes)


def _to_undo(graph: Graph, lanes: tuple[Lane, ...], failed: str | None) -> tuple[Lane, ...]:
    """A group that fails: the branches done or still running may have happened (a running
    one is cancelled: its outcome is unknown) and are undone; the one that failed is not.
    Empty when none of them has anything to undo."""
    out = tuple(Lane(x.name, LANE_UNDOING if (
        x.name != failed and x.status in (LANE_DONE, LANE_RUNNING)
        and graph.defs[x.name].step.compensation is not None) else LANE_SKIPPED)
        for x in lanes)
    return out if any(x.status == LANE_UNDOING for x in out) else ()


def _lanes_entering(graph: Graph, dest: str, carried: tuple[Lane, ...],
                    stuck: tuple[Lane, ...]) -> tuple[Lane, ...]:
    """The branches a saga entering `dest` has: all running in a group; in a group's
    compensation, those the failure carried, those a stuck one left, or else all."""
    if dest in graph.lanes:
        return tuple(Lane(b, LANE_RUNNING) for b in graph.lanes[dest])
    group = graph.undoes.get(dest)
    if group is None or group not in graph.lanes:
        return ()
    if carried:
        return carried
    if stuck:
        return tuple(x._replace(attempt=0) for x in stuck)
    return tuple(Lane(b, LANE_UNDOING if graph.defs[b].step.compensation is not None
                      else LANE_SKIPPED) for b in graph.lanes[group])


def replay(graph: Graph, history: Sequence[Transition]) -> Position:
    """The position a stored history leaves a saga in (each transition's recorded kind)."""
    pos = start(graph).after
    for t in history[1:]:
        pos = advance(graph, pos, t.event, t.kind, t.dest, t.error, lane=t.step).after
    return pos


def callbacks(graph: Graph, move: Move) -> tuple[tuple[str, str, object], ...]:
    """What runs during `move`, in the order `transitions` runs it: the edge's `before`, the
    source's on_exit, the edge's action, the dest's on_enter, the edge's `after`.

    Each is (the state it belongs to, how it is called: "ctx" as `f(ctx)`, "event" as
    `f(event, ctx)`, the callable). A retry or an ignored event runs nothing; a move that
    leaves its state, or a declared transition back into it, runs on_exit and on_enter.
    """
    edge, source, dest = move.edge, move.source, move.dest
    if (move.kind is Kind.RETRY or move.kind is Kind.IGNORED or (
            (edge is None or edge.bare) and source not in graph.hooked
            and dest not in graph.hooked)):
        return ()
    out: list[tuple[str, str, object]] = []
    if edge is not None:
        out += [(source, "ctx", f) for f in edge.before]
    left = graph.defs.get(source)
    if left is not None and left.on_exit is not None:
        out.append((source, "ctx", left.on_exit))
    if edge is not None and edge.action is not None:
        out.append((source, "event", edge.action))
    entered = graph.defs.get(dest)
    if entered is not None and entered.on_enter is not None:
        out.append((dest, "ctx", entered.on_enter))
    if edge is not None:
        out += [(dest, "ctx", f) for f in edge.after]
    return tuple(out)


def waits(graph: Graph, pos: Position) -> bool:
    """Does the saga wait for an outside event: in a state that waits for one, or in a
    compensation whose command went out and waits for its reply?"""
    return pos.state in graph.waiting or (pos.attempt > 0 and pos.state in graph.replies)


def due(graph: Graph, state: str, entered_at: float, deadline_at: float | None
        ) -> float | None:
    """When a saga waiting in `state` (entered at `entered_at`) times out: the state's
    timeout or the saga's deadline, whichever comes first; None if it waits forever.
    A compensation waiting for its reply waits as long as its forward state would."""
    if state in graph.replies:
        timeout = graph.defs[graph.undoes[state]].step.timeout
        return None if timeout is None else entered_at + timeout
    if state not in graph.waiting:
        return None
    d = graph.defs[state]
    times = [] if deadline_at is None else [deadline_at]
    if d.step.timeout is not None:
        times.append(entered_at + d.step.timeout)
    return min(times, default=None)


def record(
    graph: Graph,
    move: Move,
    *,
    saga_id: str,
    revision: int,
    at: datetime,
    step: str | None = None,
    attempt: int | None = None,
    error: str | None = None,
    duration: float | None = None,
    reason: str | None = None,
    worker: str | None = None,
    result: str | None = None,
    owner: str | None = None,
    now: float | None = None,
    lease: float | None = None,
    messages: Iterable[object] = (),
    inbox: str | None = None,
    consumed: int | None = None,
    wake_at: float | None = None,
    pending: bool = False,
) -> tuple[Transition, Commit]:
    """The transition `move` adds to the history, and the commit that writes it.

    A saga that ended, or that waits for an outside event, keeps no lease: `owner` is
    dropped so that whoever brings its event may claim it. `now` is the time leases count
    from (None: the store's clock), `lease` their length; `consumed` the queued outside
    event the move took.
    """
    dest = move.dest
    transition = Transition(at, move.source or None, dest, move.event, step, attempt, error,
                            duration, reason, worker, move.kind)
    status = status_of(dest, True) if pending else graph.statuses[dest]
    done = dest in _TERMINALS
    waiting = waits(graph, move.after)
    keep = not (done or waiting)
    return transition, Commit(
        saga_id=saga_id, revision=revision, state=dest, status=status,
        error=move.after.error, transition=transition, result=result,
        owner=owner if keep else None, now=now, lease=lease if keep else None,
        messages=tuple(messages), waiting=waiting, inbox=inbox, consumed=consumed,
        wake_at=None if done else wake_at)
