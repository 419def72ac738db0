"""The sub-saga shape of the crash tests: step a, then `pay` (a child saga of b and c), then d.

Each step records its effect in the ledger (`tests/ledger.py`) under its own saga's id, so
the child's effects are kept under `"<id>/pay"`. `ends_ok` checks, from the store and the
ledger, what must hold once every saga of this shape is done.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from ledger import Call, _action, _compensation

from statesaga import SagaRecord, SagaStateMachine, SagaStatus

PARENT, CHILD = ("a", "d"), ("b", "c")


def build_parent(name: str = "crash") -> SagaStateMachine:
    child = SagaStateMachine(f"{name}_pay")
    for step in CHILD:
        child.step(step, _action(step), compensation=_compensation(step))
    parent = SagaStateMachine(name)
    parent.step("a", _action("a"), compensation=_compensation("a"))
    parent.step("pay", child, data=lambda ctx: dict(ctx.data))
    parent.step("d", _action("d"), compensation=_compensation("d"))
    return parent


def problems(records: Sequence[SagaRecord], effects: Sequence[tuple[Any, ...]],
             calls: Sequence[Call]) -> list[str]:
    """[] when every parent and child ended as its data says and the ledger agrees: a
    completed saga's effects all stand, a compensated one's are all undone, and no effect
    was undone twice or undone in a saga that completed."""
    out: list[str] = []
    state = {(saga_id, step): s for saga_id, step, s in effects if s != "tombstone"}
    undone = Counter((c.saga_id, c.step) for c in calls
                     if c.kind == "undo" and c.outcome == "undone")
    by_id = {r.saga_id: r for r in records}
    for r in records:
        child = "/" in r.saga_id
        steps = CHILD if child else PARENT
        fail = r.data.get("fail_at")
        expected = SagaStatus.COMPENSATED if fail else SagaStatus.COMPLETED
        if r.status is not expected:
            out.append(f"{r.saga_id}: expected {expected.value}, ended {r.status.value} "
                       f"({r.error})")
        mine = {step: state.get((r.saga_id, step)) for step in steps}
        if expected is SagaStatus.COMPLETED and set(mine.values()) != {"done"}:
            out.append(f"{r.saga_id}: completed with effects {mine}")
        if expected is SagaStatus.COMPENSATED and "done" in mine.values():
            out.append(f"{r.saga_id}: compensated, but effects remain: {mine}")
        out += [f"{r.saga_id}: {step} undone {undone[r.saga_id, step]} times"
                for step in steps if undone[r.saga_id, step] > 1]
        if not child and fail in ("d", "b", "c") and f"{r.saga_id}/pay" not in by_id:
            out.append(f"{r.saga_id}: its child saga is not in the store")
    return out
