"""Sub-sagas under `explore_failures`: the child's own failures, and the invariants of the
child saga's record beside its parent's.

The explorer runs a copy of the child machine whose steps are named "<step>/<child step>"
(see `Injector`), so a scenario reaches into the child as into the parent: each child step
raising (once, always) and timing out, so that the child compensates itself and the parent's
step fails; each child compensation raising (once, always) both when the child fails and
when the parent fails after the child completed (the child is reverted along its own
mirror). One level deep: a sub-saga of the child is one step of the child here.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..definition import SagaStateMachine
from ..graph import Graph, mirror
from ..orchestrator_children import sub_sagas
from ..records import COMPENSATED, COMPLETED, SagaRecord, Trigger
from .invariants import compensation_problems, history_problems
from .scenarios import Journal, Scenario, runnable


def child_plan(machine: SagaStateMachine) -> list[Scenario]:
    """The failure scenarios inside each sub-saga step of `machine` (see the module)."""
    out: list[Scenario] = []
    steps = runnable(machine)
    for step, child in sub_sagas(machine.graph).items():
        graph = child.graph
        inner = runnable(child)
        after = steps[steps.index(step) + 1:]  # the parent failing after the child completed
        fail_late = {"raise_in": after[-1]} if after else {"timeout_in": step}
        late = f"{after[-1]} failing" if after else f"{step} timing out after it"
        for s in inner:
            name = f"{step}/{s}"
            retried = graph.defs[s].step.retry.attempts > 1
            out += [
                Scenario(f"{name} raises once", "completed" if retried else "compensated",
                         raise_in=name, raise_times=1),
                Scenario(f"{name} always raises", "compensated", raise_in=name),
                Scenario(f"{name} times out (outcome unknown)", "compensated",
                         timeout_in=name),
            ]
            deadline = Scenario(f"the deadline passes in {name}", "compensated", hang_in=name)
            if child.deadline is None:
                deadline.skipped = f"the sub-saga {child.name!r} has no deadline"
            out.append(deadline)
        last = inner[-1] if inner else None
        for c in (s for s in inner if graph.defs[s].step.compensation is not None):
            name = f"{step}/{c}"
            own = ({"timeout_in": f"{step}/{c}"} if c == last else
                   {"raise_in": f"{step}/{last}"})
            for times, expect in ((1, "compensated"), (None, "failed")):
                what = "raises once" if times else "always raises"
                out += [
                    Scenario(f"compensation of {name} {what} ({step}/{last} failing)",
                             expect, undo_fails=name, undo_times=times, **own),  # type: ignore[arg-type]
                    Scenario(f"compensation of {name} {what} ({late}: {step} reverted)",
                             expect, undo_fails=name, undo_times=times, **fail_late),  # type: ignore[arg-type]
                ]
    return out


def child_failing(machine: SagaStateMachine) -> list[str]:
    """For each sub-saga step, its child's last step: the crash scenarios' failing path
    inside the child."""
    out = []
    for step, child in sub_sagas(machine.graph).items():
        inner = runnable(child)
        if inner and any(child.graph.compensable(s) for s in child.graph.forward):
            out.append(f"{step}/{inner[-1]}")
    return out


def own(journal: Journal, prefix: str = "") -> Journal:
    """The part of the journal about one saga: the parent's (no prefix), or a child's."""
    def pick(names: list[str]) -> list[str]:
        if not prefix:
            return [n for n in names if "/" not in n]
        return [n[len(prefix):] for n in names
                if n.startswith(prefix) and "/" not in n[len(prefix):]]
    return Journal(ran=pick(journal.ran), undone=pick(journal.undone))


def allowed(graph: Graph) -> set[tuple[str, str, str]]:
    """The moves a child's history may make: its machine's, and being reverted when it had
    completed (into the undo of any of its states)."""
    moves = {(t.source, t.event, t.dest) for t in graph.transitions}
    return moves | {(COMPLETED, Trigger.REVERT.value, mirror(s)) for s in graph.undoable} | {
        (COMPLETED, Trigger.REVERT.value, COMPENSATED)}


def child_problems(machine: SagaStateMachine, parent: SagaRecord,
                   children: Mapping[str, SagaRecord | None], journal: Journal) -> list[str]:
    """The invariants of each child saga, and that it ended as its parent needs: completed
    under a completed parent, compensated (or never started) under a compensated one."""
    out: list[str] = []
    for step, child in sub_sagas(machine.graph).items():
        record = children.get(step)
        if record is None:
            if f"{step}/" in " ".join(journal.ran):
                out.append(f"sub-saga {step!r}: its steps ran but it was never stored")
            continue
        where = f"sub-saga {record.saga_id!r}"
        want = {COMPLETED: {COMPLETED}, COMPENSATED: {COMPENSATED}}.get(parent.state)
        if want is not None and record.state not in want:
            out.append(f"{where} ended in {record.state} under a parent that ended "
                       f"{parent.state}" + (f" ({record.error})" if record.error else ""))
        out += [f"{where}: {p}" for p in history_problems(record, allowed(child.graph))]
        out += [f"{where}: {p}" for p in compensation_problems(
            child.graph, record, own(journal, f"{step}/"))]
    return out
