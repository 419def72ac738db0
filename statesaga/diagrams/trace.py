"""What one saga's history says on its drawing: edges taken, failed attempts, where it is,
the branches of its groups (done, failed, cancelled), and the undo that would run now.

The history is replayed through the kernel's own rules (`kernel.advance`), so a group's
branches are read as the runtime saw them, never guessed again here.
"""

from __future__ import annotations

import itertools
import textwrap
from typing import TYPE_CHECKING

from .. import kernel
from ..graph import FAILURE, MIRROR, RESUME, SELF, STUCK, UNKNOWN, mirror
from ..records import COMPENSATED, COMPLETED, FAILED, MIRROR_PREFIX, Kind, Transition
from .lanes import group_of, lane_keys, node_of, undoable_branches
from .model import START, TIMES, Key, check_record, short

if TYPE_CHECKING:
    from ..definition import SagaStateMachine
    from ..records import SagaRecord

CANCELLED = "cancelled: outcome unknown"
NOT_UNDONE = "not undone: it failed"


class Trace:
    """What one saga's history says: edges taken, failed attempts, where it is, what is next.

    Times and durations are never read, so a drawing of a saga is the same on every run.
    Attempts in a group are told on the node of the branch (or branch compensation) they
    were of: `failures`, `errors`, `causes` and `stuck` are keyed by drawn node.
    """

    def __init__(self, machine: SagaStateMachine, record: SagaRecord) -> None:
        check_record(machine, record)
        graph = machine.graph
        self.graph = graph
        self.record = record
        self.current = record.state
        self.taken: set[Key] = set()
        self.rails_taken: set[str] = set()  # compensation states whose stuck/resume edge fired
        self.failures: dict[str, int] = {}
        self.errors: dict[str, str] = {}
        self.causes: set[str] = set()  # nodes a failure moved the saga out of
        self.visited: set[str] = set()
        self.stuck: str | None = None
        self.entered: dict[str, int] = {}  # how often each forward state was entered (loops)
        self.said: dict[str, list[str]] = {}  # a branch cancelled, or not undone: why
        pos = kernel.start(graph).after
        for i, t in enumerate(record.history):
            before = pos
            if i:
                pos = kernel.advance(graph, pos, t.event, t.kind, t.dest, t.error,
                                     lane=t.step).after
            self._follow(t, before, pos)
        self.running: set[str] = set()  # the branch nodes at work now (in a group, or its undo)
        if group_of(graph, self.current) is not None:
            self.running = {node_of(graph, self.current, x.name) for x in pos.lanes
                            if x.status in (kernel.LANE_RUNNING, kernel.LANE_UNDOING)}
        self.would, self.rails_would = self._would_run(pos)

    def _follow(self, t: Transition, before: kernel.Position, after: kernel.Position) -> None:
        graph = self.graph
        self.visited.add(t.dest)
        if t.source != t.dest and t.dest in graph.defs:
            self.entered[t.dest] = self.entered.get(t.dest, 0) + 1
        if t.source is None:
            self.taken.add(("", t.dest, START))
            self._branches(t, before, after)
            return
        kind = t.kind
        node = node_of(graph, t.source, t.step)
        if kind == SELF or (t.attempt is not None and kind in (FAILURE, UNKNOWN, STUCK)):
            self.failures[node] = self.failures.get(node, 0) + 1
        if t.error is not None:
            self.errors[node] = t.error
            if kind != SELF:
                self.causes.add(node)
        if kind in (STUCK, RESUME):
            self.rails_taken.add(t.source if kind == STUCK else t.dest)
            self.stuck = node if kind == STUCK else None
        elif kind not in (SELF, Kind.LANE):
            self.taken.add((t.source, t.dest, kind))
        self._branches(t, before, after)

    def _branches(self, t: Transition, before: kernel.Position, after: kernel.Position) -> None:
        """A group's branches: started (from the fork), finished (into the join), cancelled
        when a sibling failed, and in its compensation, which ones were undone."""
        graph = self.graph
        entered = group_of(graph, t.dest) is not None and t.source != t.dest
        if entered:  # every branch it starts leaves the fork
            for x in after.lanes:
                if x.status in (kernel.LANE_RUNNING, kernel.LANE_UNDOING):
                    node = node_of(graph, t.dest, x.name)
                    self.taken |= {k for k in lane_keys(t.dest, node) if k[0] == t.dest}
                    self.visited.add(node)
                    self.said.pop(node, None)
            failed = t.step if t.kind == FAILURE and t.source in graph.lanes else None
            if failed is not None and graph.defs[failed].step.compensation is not None:
                self.said[mirror(failed)] = [NOT_UNDONE]
        source = t.source or ""
        if group_of(graph, source) is None:
            return
        if t.kind in (Kind.LANE, Kind.FORWARD, MIRROR) and t.step is not None:
            node = node_of(graph, source, t.step)
            self.taken |= lane_keys(source, node)
        if source == t.dest or t.kind not in (FAILURE, UNKNOWN):
            return
        for x in before.lanes:  # the group failed: what still ran is cancelled
            if x.status == kernel.LANE_RUNNING and x.name != t.step:
                self.said[x.name] = [CANCELLED]

    def _would_run(self, pos: kernel.Position) -> tuple[set[Key], set[str]]:
        """The edges of the compensation that would run if the saga failed now (in a group:
        the done and running branches' undo; the one that failed would not be undone)."""
        graph = self.graph
        walk = [mirror(s) for s in reversed(pos.undo)] + [COMPENSATED]
        lanes = {x.name: x.status for x in pos.lanes}
        would: set[Key] = set()
        rails: set[str] = set()
        undoing: dict[str, list[str]] = {}  # a group's compensation -> the branches it undoes
        current = self.current
        if current in graph.lanes:
            todo = [b for b in undoable_branches(graph, current)
                    if lanes.get(b) in (kernel.LANE_DONE, kernel.LANE_RUNNING)]
            if todo:
                walk.insert(0, mirror(current))
                undoing[mirror(current)] = todo
            would.add((current, walk[0], FAILURE))
        elif current in graph.defs:
            would.add((current, walk[0], FAILURE))
        elif current in (COMPLETED, COMPENSATED):
            return would, rails
        else:  # undoing now, or stuck (a person's retry resumes the stuck compensation)
            if current == FAILED:
                rails.add(walk[0])
            undoing[walk[0]] = [b for b, status in lanes.items()
                                if status == kernel.LANE_UNDOING]
        for m in walk[:-1]:
            group = group_of(graph, m)
            if group is not None:
                for b in undoing.get(m, undoable_branches(graph, group)):
                    would |= lane_keys(m, mirror(b))
        would |= {(a, b, MIRROR) for a, b in itertools.pairwise(walk)}
        return would, rails

    @property
    def is_stuck(self) -> bool:
        return self.current == FAILED

    def would_text(self) -> str:
        """What the highlighted compensation path means for this saga, for the legend."""
        if self.is_stuck:
            return "would undo on retry"
        if self.current.startswith(MIRROR_PREFIX):
            return "still to undo"
        return "would undo if it failed now"

    def notes(self, node: str) -> list[str]:
        """What happened at `node`: its failed attempts, the error that moved it on, and
        for a branch, that it was cancelled or (its compensation) not run."""
        count = self.failures.get(node)
        notes = [f"failed {count}{TIMES}"] if count else []
        if node == self.stuck and self.is_stuck:
            notes = [f"stuck here: {notes[0] if notes else 'failed'}"]
        if node in self.causes:
            notes += textwrap.wrap(short(self.errors[node], 64), 34)
        return notes + self.said.get(node, [])

    def counts(self, state: str) -> list[str]:
        """How often a state in a loop was entered, when more than once."""
        n = self.entered.get(state, 0)
        return [f"entered {n}{TIMES}"] if n > 1 else []
