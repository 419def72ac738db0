"""Assertions about a saga's path, with a diff a person can read."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from ..records import SagaRecord


def _line(t: object) -> str:
    return " -> ".join(str(x) for x in t) if isinstance(t, tuple) else str(t)


def assert_transitions(record: SagaRecord, expected: Sequence[str | tuple[str, ...]]) -> None:
    """Assert the saga's path: a list of states, or of (source, event, dest) tuples.

    States are compared with each transition's `dest` (the first is the initial state);
    tuples with `(source, event, dest)`, the start transition left out. On a mismatch the
    `AssertionError` shows a diff of the two paths, one transition per line.
    """
    if expected and isinstance(expected[0], tuple):
        actual: list[str | tuple[str, ...]] = [
            (t.source or "", t.event, t.dest) for t in record.history[1:]]
    else:
        actual = [t.dest for t in record.history]
    if list(expected) == actual:
        return
    diff = "\n".join(difflib.unified_diff(
        [_line(e) for e in expected], [_line(a) for a in actual],
        fromfile="expected", tofile=f"saga {record.saga_id}", lineterm=""))
    raise AssertionError(f"saga {record.saga_id!r} took another path:\n{diff}")
