"""The saga invariants `explore_failures` checks after each scenario, from the stored
history and what the injected callables saw happen (the journal), never from the kernel.

Compensations run newest first, for what really happened (ran, or may have: in doubt)
and nothing else. A parallel group is one place in that order: its branches' undos run
at once, in any order among themselves, after the steps after the group and before the
steps before it; a branch that was cancelled (still running when a sibling failed) may
have happened and is undone, the branch whose failure moved the group back is not.
"""

from __future__ import annotations

import json
from collections.abc import Set

from ..graph import FAILURE, FORWARD, UNKNOWN, Graph
from ..records import COMPLETED, FAILED, Kind, SagaRecord
from .scenarios import Journal

IN_DOUBT = ("retry_unknown", "timeout", "abort")


def history_problems(record: SagaRecord, allowed: Set[tuple[str, str, str]]) -> list[str]:
    """Every transition starts where the one before ended, and is one of the machine's."""
    out = []
    for prev, t in zip(record.history, record.history[1:], strict=False):
        if t.source != prev.dest:
            out.append(f"history jumps from {prev.dest} to {t.source}")
        if (t.source, t.event, t.dest) not in allowed and t.source != t.dest:
            out.append(f"history has {t.source} -> {t.dest} on {t.event!r}, which is not "
                       "a transition of the machine")
    return out


class _Visits:
    """What the history says may have happened: steps and branches in doubt, the order
    forward states were first entered in, and each group's failed branch."""

    def __init__(self, graph: Graph, record: SagaRecord) -> None:
        self.in_doubt = {t.step for t in record.history if t.event in IN_DOUBT and t.step}
        self.waited: set[str] = set()  # states that waited for an event and moved on
        self.failed: dict[str, str] = {}  # group -> the branch whose failure walked it back
        self.path: list[str] = []
        done: set[str] = set()  # branches of the group being run, done so far
        for t in record.history:
            if t.dest in graph.defs and t.dest not in self.path:
                self.path.append(t.dest)
            source = t.source
            if source is None:
                continue
            if t.kind == UNKNOWN:
                self.in_doubt.add(source)
            elif t.kind == FORWARD and source in graph.defs and graph.waits(source):
                self.waited.add(source)
            if source not in graph.lanes:
                continue
            if t.kind in (Kind.LANE, FORWARD) and t.step is not None:
                done.add(t.step)
            if t.kind in (FAILURE, UNKNOWN):  # the group walks back: the rest is cancelled
                failed = t.step if t.kind == FAILURE else None
                if failed is not None:
                    self.failed[source] = failed
                self.in_doubt |= set(graph.lanes[source]) - done - {failed}
            if t.dest != source:
                done = set()


def _undoable(graph: Graph, step: str) -> bool:
    return graph.defs[step].step.compensation is not None


def compensation_problems(graph: Graph, record: SagaRecord, journal: Journal) -> list[str]:
    """The compensations the journal saw, against those that should have run, in order."""
    seen = _Visits(graph, record)
    ran = set(journal.ran) | seen.waited
    happened = ran | seen.in_doubt
    blocks: list[set[str]] = []  # oldest first; a group's branches are one block
    for s in seen.path:
        if s in graph.lanes:
            block = {b for b in graph.lanes[s] if _undoable(graph, b) and b in happened
                     and b != seen.failed.get(s)}
        else:
            block = {s} if graph.compensable(s) and s in happened else set()
        if block:
            blocks.append(block)
    blocks.reverse()  # newest first
    undone = list(dict.fromkeys(journal.undone))
    out = [f"compensated {s}, which never ran and was never in doubt"
           for s in undone if s not in happened]
    out += [f"compensated branch {b} of {g}, whose failure walked the group back (a "
            "failed branch did not happen: it is not undone)"
            for g, b in seen.failed.items() if b in undone and b not in happened]
    partial: set[str] = set()  # a group left half undone when one of its undos got stuck
    if record.state == COMPLETED:
        blocks = []
    elif record.state == FAILED:
        stuck = next(t.step for t in reversed(record.history) if t.dest == FAILED)
        at = next((i for i, b in enumerate(blocks) if stuck in b), len(blocks))
        partial = blocks[at] - {stuck} if at < len(blocks) and len(blocks[at]) > 1 else set()
        blocks = blocks[:at]
    if not _in_order(undone, blocks, partial):
        expected = [sorted(b) if len(b) > 1 else next(iter(b)) for b in blocks]
        out.append(f"compensations ran as {undone}, expected {expected}"
                   + (f" then some of {sorted(partial)}" if partial else "")
                   + " (the completed compensable steps, newest first; a group's "
                     "branches at once, in any order)")
    return out


def _in_order(undone: list[str], blocks: list[set[str]], partial: set[str]) -> bool:
    """`undone` is the blocks one after the other (each in any order), then a part of
    `partial`, and nothing else."""
    i = 0
    for block in blocks:
        if set(undone[i:i + len(block)]) != block:
            return False
        i += len(block)
    return set(undone[i:]) <= partial


def diff(expected: str | None, actual: str | None) -> str:
    """What differs between two pictures of the outside world (JSON), shortly."""
    a, b = json.loads(expected or "null"), json.loads(actual or "null")
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys)[:400]
    return f"{a!r} -> {b!r}"[:400]
