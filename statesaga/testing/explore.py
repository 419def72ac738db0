"""`explore_failures`: run every failure scenario of a saga and check the saga invariants."""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..definition import SagaStateMachine
from ..exceptions import SagaNotFound, UndeliverableEvent
from ..logs import muted
from ..orchestrator import Orchestrator
from ..orchestrator_children import sub_sagas
from ..records import SagaRecord, Transition
from ..stores.base import Commit, SagaStore, Signals
from .clock import FakeClock
from .invariants import compensation_problems, diff, history_problems
from .report import FailureReport, ScenarioResult
from .scenarios import (
    REVERSED,
    Injector,
    Journal,
    Scenario,
    SimulatedCrash,
    crash_plan,
    event_paths,
    plan,
)
from .stalls import late_problems, run_stalled, stall_plan
from .subsagas import child_failing, child_plan, child_problems, own


def _simulated(where: str) -> None:
    raise SimulatedCrash(where)


class CrashingStore:
    """Passes everything to `store`, but "dies" at its n-th write, before or after it.

    `crash(where)` is how it dies: by default a `SimulatedCrash`; a test of real processes
    passes one that SIGKILLs the process.
    """

    def __init__(self, store: SagaStore, crash_at: int | None, after: bool,
                 crash: Callable[[str], None] = _simulated,
                 committed: Callable[[Transition], None] | None = None) -> None:
        self._store, self._at, self._after, self.writes = store, crash_at, after, 0
        self._crash = crash
        self._committed = committed  # told of every transition written
        self.url = store.url

    async def _write(self, apply: Callable[[], Awaitable[Any]],
                     transition: Transition | None = None) -> Any:
        if self._at is not None and self.writes >= self._at:  # a dead process writes no more
            self._crash(f"write {self.writes + 1} after the crash at write {self._at}")
        self.writes += 1
        if self.writes == self._at and not self._after:
            self._crash(f"crash before write {self.writes}")
        result = await apply()
        if transition is not None and self._committed is not None:
            self._committed(transition)
        if self.writes == self._at:
            self._crash(f"crash after write {self.writes}")
        return result

    async def create(self, record: SagaRecord, **kw: Any) -> None:
        await self._write(lambda: self._store.create(record, **kw))

    async def commit(self, commit: Commit) -> Signals:
        result: Signals = await self._write(lambda: self._store.commit(commit),
                                            commit.transition)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class _Explorer:
    def __init__(self, machine: SagaStateMachine, data: Any,
                 store: SagaStore, setup: Callable[[], Any] | None,
                 snapshot: Callable[[], Any] | None) -> None:
        self.machine, self.store = machine, store
        self.data = dict(data) if isinstance(data, Mapping) else data  # or typed data
        self.setup, self.snapshot = setup, snapshot
        self.injector = Injector(machine)
        self.clock = FakeClock()
        self.count = 0
        self.happy: str | None = None
        self.happy_events: list[str] = []
        graph = machine.graph
        self.allowed = {(t.source, t.event, t.dest) for t in graph.transitions}

    def _picture(self, saga_id: str) -> str | None:
        if self.snapshot is None:
            return None
        text = json.dumps(self.snapshot(), sort_keys=True, default=str)
        return text.replace(saga_id, "<saga_id>")

    async def run(self, scenario: Scenario, reopen: Callable[[], SagaStore]
                  ) -> tuple[ScenarioResult, int]:
        if scenario.skipped is not None:
            return ScenarioResult(scenario.name, "skipped", scenario.expect, None,
                                  reason=scenario.skipped), 0
        if self.setup is not None:
            self.setup()
        self.count += 1
        saga_id = f"explore-{self.count}"
        before = self._picture(saga_id)
        self.injector.begin(scenario)
        turns = self.injector.turns
        store = CrashingStore(self.store, scenario.crash_at, scenario.crash_after,
                              committed=turns.committed)
        orch = Orchestrator(store=store, clock=self.clock, lease=5)
        events = list(scenario.events or self.happy_events)
        record: SagaRecord | None
        children: dict[str, SagaRecord | None] = {}
        sent = 0
        try:
            if scenario.stall_in is not None:
                record = await run_stalled(self.injector, self.injector.copy, self.data,
                                           store, self.clock, saga_id)
                events = []
            else:
                record = await orch.run(self.injector.copy, self.data, saga_id=saga_id)
            for event in events:
                await self._inject(orch, saga_id, event)
                sent += 1
            record = await orch.get(saga_id)
            children = await self._children(self.store, saga_id)
        except SimulatedCrash:
            self.clock.advance(6)  # the dead process's lease runs out
            turns.begin(scenario.reverse, scenario.answer_late)  # all at work died
            fresh = reopen()
            again = Orchestrator(store=CrashingStore(fresh, None, False,
                                                     committed=turns.committed),
                                 clock=self.clock, lease=5,
                                 sagas=[self.injector.copy, *self.injector.children])
            await again.recover()
            try:
                for event in events[sent:]:  # the bus delivers again what was not acked
                    await self._inject(again, saga_id, event)
                record = await fresh.load(saga_id)
                children = await self._children(fresh, saga_id)
            except (SagaNotFound, UndeliverableEvent):
                record = None
            if fresh is not self.store:
                await fresh.close()
        after = self._picture(saga_id)
        violations = self.check(scenario, record, self.injector.journal, before, after)
        if record is not None:
            violations += late_problems(self.injector, scenario, record,
                                        judged=self.snapshot is not None)
            violations += child_problems(self.machine, record, children,
                                         self.injector.journal)
        violations += [f"branch {b} went on without its turn: the explorer could not hold "
                       "the group's branches in order (a branch never reported back?)"
                       for b in turns.overdue]
        if scenario.name == "happy path" and not violations:
            self.happy = after
        final = None if record is None else record.state
        return ScenarioResult(scenario.name, "violated" if violations else "ok",
                              scenario.expect, final, tuple(violations), saga_id), store.writes

    async def _children(self, store: SagaStore, saga_id: str
                        ) -> dict[str, SagaRecord | None]:
        """The records of the saga's sub-sagas, by step (None: never started)."""
        found: dict[str, SagaRecord | None] = {}
        for step in sub_sagas(self.machine.graph):
            try:
                found[step] = await store.load(f"{saga_id}/{step}")
            except SagaNotFound:
                found[step] = None
        return found

    async def _inject(self, orch: Orchestrator, saga_id: str, event: str) -> None:
        """An event as it reaches the saga: sent, or its timer running out, or a person's abort."""
        if event == "timeout":
            record = await orch.get(saga_id)
            d = self.machine.graph.defs.get(record.state)
            timeout = d.step.timeout if d is not None else None
            self.clock.advance((timeout or self.machine.deadline or 0) + 1)
            await orch.recover()  # a worker finds the timer due
        elif event == "abort":
            await orch.abort(saga_id, reason="aborted by the explorer")
        else:
            await orch.send(saga_id, event)

    def check(self, scenario: Scenario, record: SagaRecord | None, journal: Journal,
              before: str | None, after: str | None) -> list[str]:
        journal = own(journal)  # the parent's steps (its children's are checked apart)
        if record is None:  # it crashed before its first write: it must have left no trace
            out = [] if not journal.ran else [f"steps ran but the saga was never stored: "
                                              f"{journal.ran}"]
            return out + ([] if before == after else ["the outside world changed, but "
                                                      "the saga was never stored"])
        out = []
        if record.state != scenario.expect:
            out.append(f"expected to end {scenario.expect}, ended in {record.state}"
                       + (f" ({record.error})" if record.error else ""))
        out += history_problems(record, self.allowed)
        out += compensation_problems(self.machine.graph, record, journal)
        if record.state == "compensated" and before != after:
            out.append("after compensation the outside world differs from before the saga: "
                       + diff(before, after))
        if record.state == "completed" and self.happy is not None and after != self.happy:
            out.append("completed, but the outside world differs from the clean happy path "
                       "(a step not idempotent under its key?): " + diff(self.happy, after))
        return out


async def explore_failures(
    machine: SagaStateMachine,
    data: Any = None,
    *,
    store: SagaStore | None = None,
    crashes: bool = True,
    setup: Callable[[], Any] | None = None,
    snapshot: Callable[[], Any] | None = None,
    bound: int = 6,
) -> FailureReport:
    """Run every failure scenario of `machine` and check the saga invariants after each.

    Each step raising (once, always), timing out, the deadline passing in it; each
    compensation raising (once, always); with `crashes`, a crash before and after every
    store write, then recovery by a fresh orchestrator. `setup()` resets the outside world
    before each scenario; `snapshot()` returns a JSON-comparable picture of it. `bound`
    limits the event paths tried on explicit graphs. No `store`: a temporary SQLite file.
    """
    if bound < 1:
        raise ValueError(f"bound must be >= 1 (the longest event path to try), not {bound!r}")
    machine.validate()
    started = time.perf_counter()
    tmp = None
    if store is None:
        from ..stores.sqlite import SQLiteStore

        tmp = tempfile.TemporaryDirectory(prefix="statesaga-explore-")
        store = SQLiteStore(Path(tmp.name) / "explore.db", durability="normal")
    reopen = store.reopen  # an InMemoryStore reopens on the same memory
    notes = []
    graph = machine.graph
    if not any(graph.compensable(s) for s in graph.forward):
        notes.append(f"nothing to compensate: no state of {machine.name!r} has a "
                     "compensation, so no failure can be undone")
    explorer = _Explorer(machine, data, store, setup, snapshot)
    results: list[ScenarioResult] = []
    explorer.happy_events, by_events = event_paths(machine, bound)
    with muted():  # its failures are injected: the report tells, not the sagas' logs
        try:
            happy, writes = await explorer.run(Scenario("happy path", "completed"), reopen)
            results.append(happy)
            reverse_writes = 0
            if graph.lanes:
                backwards, reverse_writes = await explorer.run(
                    Scenario(f"happy path{REVERSED}", "completed", reverse=True), reopen)
                results.append(backwards)
            scenarios: Sequence[Scenario] = [*plan(machine), *stall_plan(machine),
                                             *child_plan(machine), *by_events]
            if crashes:
                scenarios = [*scenarios, *await _crash_scenarios(
                    explorer, writes, reverse_writes, reopen)]
            for scenario in scenarios:
                results.append((await explorer.run(scenario, reopen))[0])
        finally:
            await store.close()
            if tmp is not None:
                tmp.cleanup()
    return FailureReport(machine.name, tuple(results), tuple(notes),
                         time.perf_counter() - started, bounds=_bounds(machine, crashes))


def _bounds(machine: SagaStateMachine, crashes: bool) -> tuple[str, ...]:
    """How the exploration was bounded where trying everything would not end."""
    out = []
    for step, child in sub_sagas(machine.graph).items():
        out.append(
            f"sub-saga step {step!r} (machine {child.name!r}): one level deep; each of its "
            "steps raising (once, always) and timing out, each of its compensations raising "
            "(once, always) when the child fails and when the parent fails after it"
            + ("; a crash at every write (the child's included) on the happy path, with "
               "the parent's last step failing (the child reverted) and with the child's "
               "last step failing" if crashes else "")
            + ". The child's parallel groups run in the order they happen to finish in, and "
            "its sub-sagas are one step of it")
    for group, branches in machine.graph.lanes.items():
        ways = math.factorial(len(branches))
        out.append(
            f"parallel group {group!r}: its branches ({', '.join(branches)}) were made to "
            f"finish in 2 of their {ways} orders, as declared and in reverse (each branch "
            "raising, timing out, and its compensation failing, in both orders"
            + ("; a crash at every write on the happy path and with the last branch to "
               "finish failing, in both orders" if crashes else "")
            + "); their actions and compensations keep that order. A branch still at work "
            "when a sibling fails has done its work and is cancelled before it reports, but "
            "for one scenario per branch where the next one answers during that failure"
            if ways > 2 else f"parallel group {group!r}: every order its branches can "
            "finish in was tried")
    return tuple(out)


async def _crash_scenarios(explorer: _Explorer, happy_writes: int, reverse_writes: int,
                           reopen: Callable[[], SagaStore]) -> list[Scenario]:
    """A crash before and after every write of the happy path, and of a failing path: the
    last step failing, and in each group the branch that finishes last, the others done
    (and their compensations in flight); with a group, both orders of its branches."""
    graph = explorer.machine.graph
    steps = [s for s in graph.forward if graph.defs[s].step.action is not None]
    out = crash_plan(happy_writes, failing=None)
    if reverse_writes:
        out += crash_plan(reverse_writes, failing=None, reverse=True)
    failing = [(s, False) for s in steps[-1:]
               if any(graph.compensable(s) for s in graph.forward)]
    for branches in graph.lanes.values():
        failing += [(branches[-1], False), (branches[0], True)]
    failing += [(step, False) for step in child_failing(explorer.machine)]
    for step, reverse in failing:
        probe = Scenario("probe", "compensated", raise_in=step, reverse=reverse)
        _, writes = await explorer.run(probe, reopen)
        out += crash_plan(writes, failing=step, reverse=reverse)
    return out
